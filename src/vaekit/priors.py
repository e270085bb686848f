"""The prior p(z)."""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


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
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)

    def config(self) -> dict:
        return {"name": "standard_normal", "latent_dim": self.latent_dim}
