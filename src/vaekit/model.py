"""The VAE as a torch module: prior p(z), encoder q(z|x), decoder p(x|z)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .likelihoods import Likelihood
from .likelihoods import create as create_likelihood
from .posteriors import Diagonal
from .priors import Prior, StandardNormal


class Model(nn.Module):
    """A variational autoencoder: p(z) p(x|z) with an amortised q(z|x).

    ``encoder`` maps x (B, *data_shape) to the posterior's parameters (B, posterior.n_params()): for
    the default diagonal Gaussian, the mean and log standard deviation (2 * latent_dim). ``decoder``
    maps z (B, latent_dim) to the likelihood's parameters (B, *likelihood.param_shape(data_shape)).
    ``prior`` (default N(0, I)) and ``posterior`` (default ``posteriors.Diagonal``) are modules from
    ``vaekit.priors`` and ``vaekit.posteriors``.

    A conditional VAE (Sohn et al. 2015) has ``condition_dim`` > 0: the encoder sees (x, c) and the
    decoder (z, c), each concatenated along the last (flattened) axis, and a conditional prior sees c.
    c is (B, condition_dim) floats (one-hot classes or covariates) or (B,) integer class labels.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood | str,
        prior: nn.Module | None = None,
        *,
        posterior: nn.Module | None = None,
        latent_dim: int | None = None,
        data_shape: tuple[int, ...] | None = None,
        condition_dim: int = 0,
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
        self.posterior = posterior if posterior is not None else Diagonal(self.latent_dim)
        if self.posterior.latent_dim != self.latent_dim:
            raise ValueError(f"the posterior has {self.posterior.latent_dim} latent units, the prior {self.latent_dim}")
        if int(condition_dim) < 0:
            raise ValueError(f"condition_dim must be >= 0, got {condition_dim}")
        self.condition_dim = int(condition_dim)
        if data_shape is not None:
            self.likelihood.bind(tuple(data_shape))
        self.spec = None  # set by vaekit.build_model so the model can be saved and rebuilt

    @property
    def data_shape(self) -> tuple[int, ...] | None:
        return self.likelihood.event_shape

    # -- the three distributions ----------------------------------------------------
    def q_z(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z|x) (or q(z|x, c)), batch shape (B,), event shape (latent_dim,)."""
        return self.posterior(self.posterior_params(x, c))

    def posterior_params(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output h (B, posterior.n_params()), from which ``q_z(x) = posterior(h)``."""
        if self.likelihood.event_shape is None:
            self.likelihood.bind(tuple(x.shape[1:]))
        c = self.condition(c, x.shape[0]) if (c is not None or self.condition_dim) else None
        h = self.encoder(x if c is None else torch.cat([x.reshape(x.shape[0], -1), c.to(x.dtype)], -1))
        if h.shape[-1] != self.posterior.n_params():
            raise ValueError(
                f"encoder returned {h.shape[-1]} outputs; a {type(self.posterior).__name__} posterior "
                f"with latent_dim={self.latent_dim} needs {self.posterior.n_params()}"
            )
        return _full_precision(h)

    def p_x(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z) (or p(x|z, c)) for z of shape (..., latent_dim); batch shape is z's leading shape."""
        return self.likelihood.distribution(self._params(z, c))

    def p_z(self, c: torch.Tensor | None = None) -> Distribution:
        """The prior: batch shape () (or (B,) for a conditional prior given c (B, condition_dim))."""
        if not isinstance(self.prior, Prior):  # a prior of the user's own: forward() alone
            return self.prior()
        return self.prior(c=self.condition(c), q_z=self.q_z)

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z) per example, shape z.shape[:-1]: the value of ``p_x(z).log_prob(x)``,
        computed by the likelihood directly (no distribution object per training step)."""
        return self.likelihood.log_prob(self._params(z, c), x)

    def decode_params(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        lead = z.shape[:-1]
        if c is not None or self.condition_dim:
            c = self.condition(c, z.shape[-2] if z.dim() > 1 else None)
            z = torch.cat([z, c.to(z.dtype).expand(*lead, c.shape[-1])], -1)
        params = self.decoder(z.reshape(-1, z.shape[-1]))  # (prod(lead), *param_shape)
        return _full_precision(params.reshape(*lead, *params.shape[1:]))

    def _params(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        # an unconditional model calls decode_params(z) alone, as code that wraps it expects
        return self.decode_params(z) if c is None else self.decode_params(z, c)

    def condition(self, c: torch.Tensor | None, n: int | None = None) -> torch.Tensor | None:
        """The condition as floats (..., condition_dim): integer labels become one-hot. Checks that a
        conditional model gets one (for ``n`` examples) and an unconditional one none."""
        if self.condition_dim == 0:
            if c is not None:
                raise ValueError("this model is not conditional (condition_dim=0); call it without a condition")
            return None
        if c is None:
            raise ValueError(
                f"this model is conditional: give the condition c, shape (B, {self.condition_dim}) or (B,) class labels"
            )
        c = torch.as_tensor(c, device=self._device())
        if not c.is_floating_point():
            if c.dim() > 1 or (c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.condition_dim)):
                raise ValueError(f"class labels must be integers in [0, {self.condition_dim}), one per example")
            c = nn.functional.one_hot(c.long(), self.condition_dim).float()
        if c.shape[-1] != self.condition_dim:
            raise ValueError(
                f"the condition has {c.shape[-1]} values per example, the model takes {self.condition_dim}"
            )
        if n is not None and c.dim() > 1 and c.shape[-2] != n:
            raise ValueError(f"got {c.shape[-2]} conditions for {n} examples")
        return c

    def _device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    # -- uses -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, return_scale: bool = False, c: torch.Tensor | None = None, layer: str = "all"):
        """Posterior means (and standard deviations): the learned representation. A two-layer model
        gives its ``layer``: "all" (z1, z2; what ``decode`` takes), "top" (z2) or "bottom" (z1)."""
        qz = self.q_z(x, c)
        units = self.posterior.units(layer)
        return (qz.mean[..., units], qz.stddev[..., units]) if return_scale else qz.mean[..., units]

    @torch.no_grad()
    def decode(self, z: torch.Tensor, draw: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded mean E[x|z], or a draw x ~ p(x|z) with ``draw=True``."""
        params = self._params(z, c)
        if draw:
            return self.likelihood.distribution(params).sample()
        return self.likelihood.mean(params)

    @torch.no_grad()
    def sample(self, n: int, draw: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        """Generate ``n`` examples: z ~ p(z) (or p(z|c)), then the decoded mean (or a draw from p(x|z)).
        A conditional model takes one condition for all (an int label or a (condition_dim,) vector)
        or one per example ((n,) labels or (n, condition_dim))."""
        n = int(n)
        c = self.condition(c)
        if c is not None:
            c = c.expand(n, self.condition_dim) if c.dim() == 1 else c
            if c.shape[0] != n:
                raise ValueError(f"got {c.shape[0]} conditions for {n} samples")
        pz = self.p_z(c)
        z = pz.sample() if pz.batch_shape == (n,) else pz.sample((n,))
        return self.decode(z, draw=draw, c=c)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, sample_z: bool = True, draw: bool = False, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode, take z ~ q(z|x) (or its mean), decode the mean (or a draw)."""
        qz = self.q_z(x, c)
        z = qz.sample() if sample_z else qz.mean
        return self.decode(z, draw=draw, c=c)


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision network outputs (bf16/fp16 autocast) become float32, so the posterior,
    the likelihood and the KL are always computed in at least single precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
