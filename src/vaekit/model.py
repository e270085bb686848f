"""The VAE as a torch module: prior p(z), encoder q(z|x), decoder p(x|z)."""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from .likelihoods import Likelihood, create as create_likelihood
from .priors import StandardNormal


class Model(nn.Module):
    """A variational autoencoder: p(z) p(x|z) with an amortised q(z|x).

    ``encoder`` maps x (B, *data_shape) to (B, 2 * latent_dim): the posterior mean and
    log standard deviation. ``decoder`` maps z (B, latent_dim) to the likelihood's
    parameters (B, *likelihood.param_shape(data_shape)).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood | str,
        prior: nn.Module | None = None,
        *,
        latent_dim: int | None = None,
        data_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if prior is None:
            if latent_dim is None:
                raise ValueError("give latent_dim or a prior")
            prior = StandardNormal(latent_dim)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = create_likelihood(likelihood)
        self.prior = prior
        self.latent_dim = int(getattr(prior, "latent_dim", latent_dim))
        if data_shape is not None:
            self.likelihood.bind(tuple(data_shape))
        self.spec = None  # set by vaekit.build_model so the model can be saved and rebuilt

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        return self.likelihood.event_shape

    # -- the three distributions ----------------------------------------------------
    def q_z(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = N(mu(x), diag sigma(x)^2), batch shape (B,), event shape (latent_dim,)."""
        if self.likelihood.event_shape is None:
            self.likelihood.bind(tuple(x.shape[1:]))
        h = self.encoder(x)  # (B, 2H)
        if h.shape[-1] != 2 * self.latent_dim:
            raise ValueError(
                f"encoder returned {h.shape[-1]} outputs; a model with latent_dim={self.latent_dim} needs {2 * self.latent_dim}"
            )
        loc, log_scale = _full_precision(h).chunk(2, dim=-1)
        return Independent(Normal(loc, log_scale.exp(), validate_args=False), 1)

    def p_x(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z of shape (..., latent_dim); batch shape is z's leading shape."""
        return self.likelihood.distribution(self.decode_params(z))

    def p_z(self) -> Distribution:
        return self.prior()

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, shape z.shape[:-1]: the value of ``p_x(z).log_prob(x)``,
        computed by the likelihood directly (no distribution object per training step)."""
        return self.likelihood.log_prob(self.decode_params(z), x)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))  # (prod(lead), *param_shape)
        return _full_precision(params.reshape(*lead, *params.shape[1:]))

    # -- uses -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, return_scale: bool = False):
        """Posterior means (and standard deviations): the learned representation."""
        qz = self.q_z(x)
        return (qz.mean, qz.stddev) if return_scale else qz.mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor, draw: bool = False) -> torch.Tensor:
        """Decoded mean E[x|z], or a draw x ~ p(x|z) with ``draw=True``."""
        params = self.decode_params(z)
        if draw:
            return self.likelihood.distribution(params).sample()
        return self.likelihood.mean(params)

    @torch.no_grad()
    def sample(self, n: int, draw: bool = False) -> torch.Tensor:
        """Generate ``n`` examples: z ~ p(z), then the decoded mean (or a draw from p(x|z))."""
        z = self.p_z().sample((int(n),))
        return self.decode(z, draw=draw)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, sample_z: bool = True, draw: bool = False) -> torch.Tensor:
        """Encode, take z ~ q(z|x) (or its mean), decode the mean (or a draw)."""
        qz = self.q_z(x)
        z = qz.sample() if sample_z else qz.mean
        return self.decode(z, draw=draw)


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision network outputs (bf16/fp16 autocast) become float32, so the posterior,
    the likelihood and the KL are always computed in at least single precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
