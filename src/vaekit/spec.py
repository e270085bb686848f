"""Model specifications: a JSON-able description from which a ``Model`` is rebuilt."""

from __future__ import annotations

import math
from typing import Any

from . import likelihoods
from .config import ModelSpec  # the dataclass lives with the other settings (torch-free); imported from here too
from .model import Model
from .nets import MADE, MLP, ConvDecoder, ConvEncoder, FirstUnits, MissingAware
from .posteriors import IAF, Diagonal, FullCovariance, TwoLayer
from .priors import ConditionalNormal, MixtureOfGaussians, StandardNormal, TwoLayerPrior, VampPrior

NETWORKS: dict[str, Any] = {}


def network(name: str):
    """Register a builder ``(spec, likelihood) -> (encoder, decoder)`` under ``name``."""

    def deco(fn):
        NETWORKS[name] = fn
        return fn

    return deco


def encoder_outputs(spec: ModelSpec) -> int:
    """What the encoder returns: the parameters of q(z|x) (of q(z1|x) for two layers) for the posterior family."""
    return make_posterior(spec).n_params()


def make_posterior(spec: ModelSpec):
    """The q(z|x) family of ``spec``: a module from encoder outputs to a Distribution."""
    if spec.layers == 2:
        upper = MLP(spec.latent_dim, 2 * spec.top_dim, spec.hidden[::-1], spec.activation)  # z1 -> q(z2|z1)
        return TwoLayer(spec.latent_dim, spec.top_dim, upper)
    if spec.posterior == "full":
        return FullCovariance(spec.latent_dim)
    if spec.posterior == "iaf":
        return IAF(spec.latent_dim, iaf_steps(spec.latent_dim, spec.iaf_steps))
    return Diagonal(spec.latent_dim)


def iaf_steps(latent_dim: int, n: int, hidden: int | None = None) -> list[MADE]:
    """``n`` MADE steps for an IAF, alternating the order of the units, each the identity when fresh."""
    hidden = int(hidden or max(16, 4 * latent_dim))
    return [MADE(latent_dim, latent_dim, hidden, reverse=bool(t % 2)) for t in range(int(n))]


def make_prior(spec: ModelSpec):
    """The p(z) of ``spec`` (p(z|c) for a conditional prior, p(z2) p(z1|z2) for two layers)."""
    if spec.layers == 2:
        lower = MLP(spec.top_dim, 2 * spec.latent_dim, spec.hidden, spec.activation)  # z2 -> p(z1|z2)
        return TwoLayerPrior(spec.latent_dim, spec.top_dim, lower)
    if spec.conditional_prior:
        return ConditionalNormal(
            spec.latent_dim, MLP(spec.condition_dim, 2 * spec.latent_dim, spec.hidden, spec.activation)
        )
    if spec.prior == "mog":
        return MixtureOfGaussians(spec.latent_dim, spec.n_components)
    if spec.prior == "vamp":
        return VampPrior(spec.latent_dim, spec.data_shape, spec.n_components)
    return StandardNormal(spec.latent_dim)


@network("mlp")
def _mlp(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    # a conditional model's encoder sees (x, c) flattened, its decoder (z, c)
    n_in = spec.data_shape if not spec.condition_dim else math.prod(spec.data_shape) + spec.condition_dim
    encoder = MLP(n_in, encoder_outputs(spec), spec.hidden, spec.activation)
    decoder = MLP(
        spec.latent_dim + spec.condition_dim,
        likelihood.param_shape(spec.data_shape),
        spec.hidden[::-1],
        spec.activation,
    )
    return encoder, decoder


@network("conv")
def _conv(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    image = spec.data_shape if len(spec.data_shape) in (2, 3) else spec.image_shape
    if image is None or math.prod(image) != math.prod(spec.data_shape):
        raise ValueError(
            f"the conv network needs image data of shape (C, H, W) or (H, W), got {spec.data_shape}; "
            "use network 'mlp' for other data"
        )
    image = image if len(image) == 3 else (1, *image)
    encoder = ConvEncoder(
        image, encoder_outputs(spec), spec.channels, spec.hidden, spec.activation, event_shape=spec.data_shape
    )
    decoder = ConvDecoder(
        spec.latent_dim,
        image,
        likelihood.param_shape(spec.data_shape),
        spec.channels,
        spec.hidden[::-1],
        spec.activation,
    )
    return encoder, decoder


@network("table")
def _table(spec: ModelSpec, likelihood: likelihoods.Likelihood):
    """An MLP whose encoder tolerates missing values (NaN): it sees the filled-in values and the mask."""
    if len(spec.data_shape) != 1:
        raise ValueError(f"the table network needs rows of features, got data of shape {spec.data_shape}")
    n_in = spec.data_shape[0] + spec.condition_dim
    encoder = MissingAware(MLP(2 * n_in, encoder_outputs(spec), spec.hidden, spec.activation))
    decoder = MLP(
        spec.latent_dim + spec.condition_dim,
        likelihood.param_shape(spec.data_shape),
        spec.hidden[::-1],
        spec.activation,
    )
    return encoder, decoder


def default_network(data_shape: tuple[int, ...], likelihood: likelihoods.Likelihood) -> str:
    """``auto``: images (C, H, W) -> conv; a table's mixed likelihood -> table; else mlp."""
    if likelihood.handles_missing():
        return "table"
    if len(data_shape) == 3 or len(data_shape) == 2:
        return "conv"
    return "mlp"


def resolved(spec: ModelSpec, likelihood: likelihoods.Likelihood | None = None) -> ModelSpec:
    """The spec with ``auto`` decided: the likelihood (``likelihood``, or ``likelihoods.resolve``
    without data: a Gaussian with a learned scale) and the network (``default_network``)."""
    import dataclasses

    lik = (
        likelihood
        if likelihood is not None
        else likelihoods.resolve(spec.likelihood, scale=spec.scale if isinstance(spec.likelihood, str) else None)
    )
    network = spec.network if spec.network != "auto" else default_network(spec.data_shape, lik)
    return dataclasses.replace(spec, likelihood=lik.config(), network=network)


def build_model(spec: ModelSpec | dict[str, Any]) -> Model:
    """Build a fresh (randomly initialised) ``Model`` from a spec."""
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    if spec.data_shape is None:
        raise ValueError("setting data_shape is needed to build a model, e.g. ModelSpec(data_shape=(784,))")
    if spec.likelihood == "auto" or isinstance(spec.likelihood, str) or spec.network == "auto":
        spec = resolved(spec)
    if spec.network not in NETWORKS:
        raise ValueError(f"unknown network {spec.network!r}; choose one of: {', '.join(NETWORKS)}")
    likelihood = likelihoods.create(spec.likelihood).bind(spec.data_shape)
    encoder, decoder = NETWORKS[spec.network](spec, likelihood)
    if spec.layers == 2:
        decoder = FirstUnits(decoder, spec.latent_dim)  # p(x|z1): the decoder reads z1 of z = (z1, z2)
    model = Model(
        encoder,
        decoder,
        likelihood,
        make_prior(spec),
        posterior=make_posterior(spec),
        data_shape=spec.data_shape,
        condition_dim=spec.condition_dim,
    )
    model.spec = spec
    return model


def n_features(spec: ModelSpec) -> int:
    return math.prod(spec.data_shape)
