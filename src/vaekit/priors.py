"""The prior p(z)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, register_kl


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``latent_dim`` dimensions."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        # buffers follow the model across devices and dtypes without being trained or saved
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(self.latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(UnitNormal(self.loc, self.scale, validate_args=False), 1)

    def config(self) -> dict:
        return {"name": "standard_normal", "latent_dim": self.latent_dim}


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
