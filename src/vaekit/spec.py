"""Model specifications: a JSON-able description from which a ``Model`` is rebuilt."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import likelihoods
from .model import Model
from .nets import MLP, ConvDecoder, ConvEncoder, MissingAware


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights live elsewhere)."""

    data_shape: tuple[int, ...]
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    likelihood: dict[str, Any] = field(default_factory=lambda: {"name": "gaussian", "scale": "learned"})
    network: str = "mlp"
    channels: tuple[int, ...] = (32, 64)  # conv network: channels of the stride-2 convolutions
    image_shape: tuple[int, ...] | None = None  # conv network on flat data: the (C, H, W) of one example

    def __post_init__(self) -> None:
        self.data_shape = tuple(int(s) for s in self.data_shape)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.channels = tuple(int(c) for c in self.channels)
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be positive integers, got {self.channels}")
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)
        self.latent_dim = int(self.latent_dim)
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden}")
        if isinstance(self.likelihood, likelihoods.Likelihood):
            self.likelihood = self.likelihood.config()
        elif isinstance(self.likelihood, str):
            self.likelihood = likelihoods.create(self.likelihood).config()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_shape"] = list(self.data_shape)
        d["hidden"] = list(self.hidden)
        d["channels"] = list(self.channels)
        d["image_shape"] = None if self.image_shape is None else list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


NETWORKS: dict[str, Any] = {}


def network(name: str):
    """Register a builder ``(spec, likelihood) -> (encoder, decoder)`` under ``name``."""

    def deco(fn):
        NETWORKS[name] = fn
        return fn

    return deco


@network("mlp")
def _mlp(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    encoder = MLP(spec.data_shape, 2 * spec.latent_dim, spec.hidden, spec.activation)
    decoder = MLP(spec.latent_dim, likelihood.param_shape(spec.data_shape), spec.hidden[::-1], spec.activation)
    return encoder, decoder


@network("conv")
def _conv(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    image = spec.data_shape if len(spec.data_shape) in (2, 3) else spec.image_shape
    if image is None or math.prod(image) != math.prod(spec.data_shape):
        raise ValueError(f"the conv network needs image data of shape (C, H, W) or (H, W), got {spec.data_shape}; "
                         "use network 'mlp' for other data")
    image = image if len(image) == 3 else (1, *image)
    encoder = ConvEncoder(image, 2 * spec.latent_dim, spec.channels, spec.hidden, spec.activation)
    decoder = ConvDecoder(spec.latent_dim, image, likelihood.param_shape(spec.data_shape), spec.channels,
                          spec.hidden[::-1], spec.activation)
    return encoder, decoder


@network("table")
def _table(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    """An MLP whose encoder tolerates missing values (NaN): it sees the filled-in values and the mask."""
    if len(spec.data_shape) != 1:
        raise ValueError(f"the table network needs rows of features, got data of shape {spec.data_shape}")
    encoder = MissingAware(MLP(2 * spec.data_shape[0], 2 * spec.latent_dim, spec.hidden, spec.activation))
    decoder = MLP(spec.latent_dim, likelihood.param_shape(spec.data_shape), spec.hidden[::-1], spec.activation)
    return encoder, decoder


def default_network(data_shape: tuple[int, ...], likelihood: likelihoods.Likelihood) -> str:
    """``auto``: images (C, H, W) -> conv; a table's mixed likelihood -> table; else mlp."""
    if getattr(likelihood, "handles_missing", False):
        return "table"
    if len(data_shape) == 3 or len(data_shape) == 2:
        return "conv"
    return "mlp"


def build_model(spec: ModelSpec | dict[str, Any]) -> Model:
    """Build a fresh (randomly initialised) ``Model`` from a spec."""
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    if spec.network not in NETWORKS:
        raise ValueError(f"unknown network {spec.network!r}; choose one of: {', '.join(NETWORKS)}")
    likelihood = likelihoods.create(spec.likelihood).bind(spec.data_shape)
    encoder, decoder = NETWORKS[spec.network](spec, likelihood)
    model = Model(encoder, decoder, likelihood, latent_dim=spec.latent_dim, data_shape=spec.data_shape)
    model.spec = spec
    return model


def n_features(spec: ModelSpec) -> int:
    return math.prod(spec.data_shape)
