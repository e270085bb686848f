"""Model specifications: a JSON-able description from which a ``Model`` is rebuilt."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import likelihoods
from .model import Model
from .nets import MLP, ConvDecoder, ConvEncoder, FirstUnits, MissingAware
from .posteriors import IAF, Diagonal, FullCovariance, TwoLayer
from .priors import ConditionalNormal, MixtureOfGaussians, StandardNormal, TwoLayerPrior, VampPrior

PRIORS = ("normal", "mog", "vamp")
POSTERIORS = ("diagonal", "full", "iaf")


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
    prior: str = "normal"  # normal: N(0, I); mog: a learned Gaussian mixture; vamp: the VampPrior
    n_components: int | None = None  # mog / vamp: components (pseudo-inputs for vamp); default 10
    posterior: str = "diagonal"  # diagonal | full (covariance) | iaf (inverse autoregressive flow)
    iaf_steps: int | None = None  # iaf: MADE steps; default 2
    layers: int = 1  # stochastic layers: 1, or 2 (x <-> z1 <-> z2, Burda et al. 2016)
    top_dim: int | None = None  # layers=2: units of z2 (latent_dim is z1's); default latent_dim // 2
    condition_dim: int = 0  # conditional VAE: values per condition (classes for one-hot labels); 0 = none
    conditional_prior: bool = False  # conditional VAE: learn p(z|c) instead of N(0, I)

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
        self._check_variant()

    def _check_variant(self) -> None:
        """The prior, posterior, layers and condition: each valid, and no two in conflict."""
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of: {', '.join(PRIORS)}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {self.posterior!r}; choose one of: {', '.join(POSTERIORS)}")
        self.layers, self.condition_dim = int(self.layers), int(self.condition_dim)
        self.conditional_prior = bool(self.conditional_prior)
        if self.layers not in (1, 2):
            raise ValueError(f"layers must be 1 or 2, got {self.layers}")
        if self.condition_dim < 0:
            raise ValueError(f"condition_dim must be >= 0 (0: not conditional), got {self.condition_dim}")
        for name, value, needs, ok in (("n_components", self.n_components, "prior mog or vamp", self.prior != "normal"),
                                       ("iaf_steps", self.iaf_steps, "posterior iaf", self.posterior == "iaf"),
                                       ("top_dim", self.top_dim, "layers 2", self.layers == 2)):
            if value is None:
                continue
            if not ok:
                raise ValueError(f"{name} applies only to {needs}; drop it or choose {needs}")
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.prior != "normal":
            self.n_components = int(self.n_components or 10)
        if self.posterior == "iaf":
            self.iaf_steps = int(self.iaf_steps or 2)
        if self.layers == 2:
            self.top_dim = int(self.top_dim or max(1, self.latent_dim // 2))
            for what, value in (("prior", self.prior != "normal"), ("posterior", self.posterior != "diagonal"),
                                ("condition_dim", self.condition_dim > 0)):
                if value:
                    raise ValueError(f"layers 2 conflicts with {what} {getattr(self, what)!r}: the two-layer model has "
                                     "its own prior p(z2) p(z1|z2) and posterior q(z1|x) q(z2|z1); use layers 1")
        if self.prior == "vamp" and self.posterior != "diagonal":
            raise ValueError(f"prior vamp conflicts with posterior {self.posterior!r}: the VampPrior is a mixture of "
                             "diagonal Gaussian posteriors; use posterior diagonal or prior mog")
        if self.conditional_prior and not self.condition_dim:
            raise ValueError("conditional_prior needs a conditional model: set condition_dim")
        if self.condition_dim and self.prior != "normal":
            raise ValueError(f"condition_dim conflicts with prior {self.prior!r}: a conditional VAE takes the normal "
                             "prior or a learned conditional one (conditional_prior)")
        if self.condition_dim and self.network == "conv":
            raise ValueError("condition_dim conflicts with network 'conv': the condition is concatenated to flat "
                             "inputs; use network 'mlp'")

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


def encoder_outputs(spec: ModelSpec) -> int:
    """What the encoder returns: the parameters of q(z1|x) for the posterior family."""
    return make_posterior(spec).n_params()


def make_posterior(spec: ModelSpec):
    if spec.layers == 2:
        return TwoLayer(spec.latent_dim, spec.top_dim, spec.hidden[::-1], spec.activation)
    if spec.posterior == "full":
        return FullCovariance(spec.latent_dim)
    if spec.posterior == "iaf":
        return IAF(spec.latent_dim, spec.iaf_steps)
    return Diagonal(spec.latent_dim)


def make_prior(spec: ModelSpec):
    if spec.layers == 2:
        return TwoLayerPrior(spec.latent_dim, spec.top_dim, spec.hidden, spec.activation)
    if spec.conditional_prior:
        return ConditionalNormal(spec.latent_dim, spec.condition_dim, spec.hidden, spec.activation)
    if spec.prior == "mog":
        return MixtureOfGaussians(spec.latent_dim, spec.n_components)
    if spec.prior == "vamp":
        return VampPrior(spec.latent_dim, spec.data_shape, spec.n_components)
    return StandardNormal(spec.latent_dim)


@network("mlp")
def _mlp(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    n_in = math.prod(spec.data_shape) + spec.condition_dim
    encoder = MLP(spec.data_shape if not spec.condition_dim else n_in, encoder_outputs(spec), spec.hidden,
                  spec.activation)
    decoder = MLP(spec.latent_dim + spec.condition_dim, likelihood.param_shape(spec.data_shape), spec.hidden[::-1],
                  spec.activation)
    return encoder, decoder


@network("conv")
def _conv(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    image = spec.data_shape if len(spec.data_shape) in (2, 3) else spec.image_shape
    if image is None or math.prod(image) != math.prod(spec.data_shape):
        raise ValueError(f"the conv network needs image data of shape (C, H, W) or (H, W), got {spec.data_shape}; "
                         "use network 'mlp' for other data")
    image = image if len(image) == 3 else (1, *image)
    encoder = ConvEncoder(image, encoder_outputs(spec), spec.channels, spec.hidden, spec.activation)
    decoder = ConvDecoder(spec.latent_dim, image, likelihood.param_shape(spec.data_shape), spec.channels,
                          spec.hidden[::-1], spec.activation)
    return encoder, decoder


@network("table")
def _table(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    """An MLP whose encoder tolerates missing values (NaN): it sees the filled-in values and the mask."""
    if len(spec.data_shape) != 1:
        raise ValueError(f"the table network needs rows of features, got data of shape {spec.data_shape}")
    n_in = spec.data_shape[0] + spec.condition_dim
    encoder = MissingAware(MLP(2 * n_in, encoder_outputs(spec), spec.hidden, spec.activation))
    decoder = MLP(spec.latent_dim + spec.condition_dim, likelihood.param_shape(spec.data_shape), spec.hidden[::-1],
                  spec.activation)
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
    if spec.layers == 2:
        decoder = FirstUnits(decoder, spec.latent_dim)  # p(x|z1): the decoder reads z1 of z = (z1, z2)
    model = Model(encoder, decoder, likelihood, make_prior(spec), posterior=make_posterior(spec),
                  data_shape=spec.data_shape, condition_dim=spec.condition_dim)
    model.spec = spec
    return model


def n_features(spec: ModelSpec) -> int:
    return math.prod(spec.data_shape)
