"""The prior p(z), as modules returning a Distribution: ``prior(c=None, q_z=None)``.

``c`` is the condition of a conditional VAE (used by ``ConditionalNormal``), ``q_z`` the model's
encoder distribution x -> q(z|x) (used by ``VampPrior``); a prior ignores what it does not use.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, register_kl

from .posteriors import DiagonalGaussian, Hierarchical


class Prior(nn.Module):
    """vaekit's priors: ``forward(c=None, q_z=None)``. A prior of your own may be any module whose
    ``forward()`` takes no arguments and returns a Distribution over (latent_dim,)."""

    latent_dim: int

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I) over ``latent_dim`` dimensions."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        # buffers follow the model across devices and dtypes without being trained or saved
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(self.latent_dim), persistent=False)

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        return Independent(UnitNormal(self.loc, self.scale, validate_args=False), 1)

    def config(self) -> dict:
        return {"name": "standard_normal", "latent_dim": self.latent_dim}


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(mu_k, diag sigma_k^2) with learned weights, means and scales. The means
    start spread out (a fixed draw from N(0, I)), the scales at 1; one component at mean 0 and scale 1
    is the standard normal."""

    def __init__(self, latent_dim: int, n_components: int = 10) -> None:
        super().__init__()
        if int(latent_dim) < 1 or int(n_components) < 1:
            raise ValueError(f"latent_dim and n_components must be >= 1, got {latent_dim} and {n_components}")
        self.latent_dim, self.n_components = int(latent_dim), int(n_components)
        g = torch.Generator().manual_seed(0)
        start = (
            torch.randn(self.n_components, self.latent_dim, generator=g)
            if self.n_components > 1
            else torch.zeros(1, self.latent_dim)
        )
        self.logits = nn.Parameter(torch.zeros(self.n_components))
        self.loc = nn.Parameter(start)
        self.log_scale = nn.Parameter(torch.zeros(self.n_components, self.latent_dim))

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        components = Independent(Normal(self.loc, self.log_scale.exp(), validate_args=False), 1)
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), components, validate_args=False)

    def config(self) -> dict:
        return {"name": "mog", "latent_dim": self.latent_dim, "n_components": self.n_components}


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z|u_k), the encoder's posterior at
    K learned pseudo-inputs u_k of the data's shape. The pseudo-inputs start at small random values
    around ``init`` (e.g. the data mean)."""

    def __init__(
        self, latent_dim: int, data_shape: tuple[int, ...], n_components: int = 10, init: torch.Tensor | float = 0.5
    ) -> None:
        super().__init__()
        if int(latent_dim) < 1 or int(n_components) < 1:
            raise ValueError(f"latent_dim and n_components must be >= 1, got {latent_dim} and {n_components}")
        self.latent_dim, self.n_components = int(latent_dim), int(n_components)
        g = torch.Generator().manual_seed(0)
        self.pseudo_inputs = nn.Parameter(
            torch.as_tensor(init, dtype=torch.float32) + 0.01 * torch.randn(self.n_components, *data_shape, generator=g)
        )

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        if q_z is None:
            raise ValueError("the VampPrior needs the model's encoder: call model.p_z(), not model.prior()")
        components = q_z(self.pseudo_inputs)  # batch (K,)
        if not isinstance(components, Independent):
            raise ValueError("the VampPrior needs a diagonal Gaussian posterior")
        weights = Categorical(
            logits=torch.zeros(self.n_components, device=self.pseudo_inputs.device), validate_args=False
        )
        return MixtureSameFamily(weights, components, validate_args=False)

    def config(self) -> dict:
        return {"name": "vamp", "latent_dim": self.latent_dim, "n_components": self.n_components}


class ConditionalNormal(Prior):
    """A learned conditional prior p(z|c) = N(mu(c), diag sigma(c)^2) (Sohn et al. 2015); ``net`` maps
    the condition (..., condition_dim) to (mu, log sigma), (..., 2 * latent_dim)."""

    def __init__(self, latent_dim: int, net: nn.Module) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.net = net

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        if c is None:
            raise ValueError("this prior is conditional: give the condition c")
        loc, log_scale = self.net(c).chunk(2, -1)
        return DiagonalGaussian(loc, log_scale.exp())

    def config(self) -> dict:
        return {"name": "conditional_normal", "latent_dim": self.latent_dim}


class TwoLayerPrior(Prior):
    """p(z2) p(z1|z2) over z = (z1, z2) (Burda et al. 2016): z2 ~ N(0, I), z1 ~ N(mu(z2), diag sigma(z2)^2)
    with ``lower`` mapping z2 (..., top_dim) to (mu, log sigma), (..., 2 * bottom_dim)."""

    def __init__(self, bottom_dim: int, top_dim: int, lower: nn.Module) -> None:
        super().__init__()
        self.dims = (int(bottom_dim), int(top_dim))
        self.latent_dim = sum(self.dims)
        self.lower = lower
        self.register_buffer("zeros", torch.zeros(self.dims[1]), persistent=False)

    def forward(self, c: torch.Tensor | None = None, q_z=None) -> Distribution:
        top = DiagonalGaussian(self.zeros, torch.ones_like(self.zeros))
        return Hierarchical(top, self.lower, self.dims, first_part=1)

    def config(self) -> dict:
        return {"name": "two_layer", "latent_dim": self.latent_dim}


_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


class UnitNormal(Normal):
    """torch's Normal for loc 0 and scale 1 (given as the tensors ``loc``, ``scale``), with its
    log density and its KL from a Normal written without the no-op ``- 0`` and ``/ 1``: the
    same values bit for bit, in fewer operations per training step."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return -(value**2) / 2 - _LOG_SQRT_2PI


@register_kl(Normal, UnitNormal)
def _kl_normal_unit_normal(q: Normal, p: UnitNormal) -> torch.Tensor:
    # KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1 - log s^2) / 2, torch's Normal-Normal formula at (0, 1)
    var = q.scale.pow(2)
    return 0.5 * (var + q.loc.pow(2) - 1 - var.log())
