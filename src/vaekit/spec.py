"""Model specifications: a JSON-able description from which a ``Model`` is rebuilt."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import likelihoods
from .model import Model
from .nets import MLP


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights live elsewhere)."""

    data_shape: tuple[int, ...]
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    likelihood: dict[str, Any] = field(default_factory=lambda: {"name": "gaussian", "scale": "learned"})
    network: str = "mlp"

    def __post_init__(self) -> None:
        self.data_shape = tuple(int(s) for s in self.data_shape)
        self.hidden = tuple(int(h) for h in self.hidden)
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
