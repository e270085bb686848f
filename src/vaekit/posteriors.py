"""The posterior q(z|x): families built from the encoder's output h, each a torch Distribution
with ``rsample``, ``log_prob`` and ``from_noise`` (the draw for given standard-normal noise, so
that estimators can share random numbers across models and examples).

- ``Diagonal``: N(mu, diag sigma^2), the encoder's output is (mu, log sigma).
- ``FullCovariance``: N(mu, L L^T) with L lower triangular from the encoder (positive diagonal).
- ``IAF``: the diagonal Gaussian followed by inverse autoregressive flow steps (Kingma et al. 2016).
- ``TwoLayer``: q(z1|x) q(z2|z1) of the IWAE paper's two stochastic layers (Burda et al. 2016),
  one distribution over the concatenation (z1, z2).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, constraints

# draws behind the moments of families without closed-form ones (IAF, two layers); fixed, so
# ``encode`` is deterministic and evaluate's numbers repeat
MOMENT_DRAWS = 256


class DiagonalGaussian(Independent):
    """N(loc, diag scale^2): batch shape loc.shape[:-1], event shape (latent_dim,)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        return self.base_dist.loc + self.base_dist.scale * eps


class FullGaussian(MultivariateNormal):
    """N(loc, L L^T) with the draw loc + L eps."""

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        super().__init__(loc, scale_tril=scale_tril, validate_args=False)

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        return self.loc + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)


def _fixed_noise(n: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Antithetic standard-normal draws (n, dim) from a fixed seed: exact first moment of the noise."""
    g = torch.Generator().manual_seed(0)
    half = torch.randn(n // 2, dim, generator=g)
    return torch.cat([half, -half]).to(device=like.device, dtype=like.dtype)


class _NoiseDistribution(Distribution):
    """A reparameterised distribution defined by its draw for standard-normal noise. Its mean and
    standard deviation (which have no closed form) are Monte Carlo moments over ``MOMENT_DRAWS``
    fixed draws."""

    has_rsample = True
    arg_constraints: dict = {}
    support = constraints.real_vector

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.sample_and_log_prob(sample_shape)[0]

    def sample_and_log_prob(self, shape=torch.Size(), noise: torch.Tensor | None = None):
        if noise is None:
            noise = torch.randn(
                self._extended_shape(torch.Size(shape)), device=self._like.device, dtype=self._like.dtype
            )
        z, log_q = self._draw(noise)
        self._cache = (z, log_q)  # log_prob of the draws just made needs no inversion
        return z, log_q

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        return self.sample_and_log_prob(noise=eps)[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        cache = getattr(self, "_cache", None)
        if cache is not None and value is cache[0]:
            return cache[1]
        return self._log_prob(value)

    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        eps = _fixed_noise(MOMENT_DRAWS, self.event_shape[0], self._like)
        z = self._draw(eps.reshape(MOMENT_DRAWS, *[1] * len(self.batch_shape), -1))[0]
        return z.mean(0), z.std(0)

    @property
    def mean(self) -> torch.Tensor:
        return self._moments()[0]

    @property
    def stddev(self) -> torch.Tensor:
        return self._moments()[1]

    @property
    def variance(self) -> torch.Tensor:
        return self.stddev.pow(2)


class IAFGaussian(_NoiseDistribution):
    """z_0 ~ N(mu, diag sigma^2), then z_t = z_{t-1} * exp(s_t) + m_t with (m_t, s_t) autoregressive in
    z_{t-1} (a MADE with the encoder's context h); log q(z_T) = log N(z_0) - sum_t sum_i s_t,i.
    ``log_prob`` of a value not drawn from this object inverts each step (latent_dim passes)."""

    def __init__(self, base: DiagonalGaussian, steps: nn.ModuleList, context: torch.Tensor) -> None:
        self.base, self.steps, self.context, self._like = base, steps, context, base.base_dist.loc
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _shift_log_scale(self, step: nn.Module, z: torch.Tensor):
        return step(z, self.context.expand(*z.shape[:-1], self.context.shape[-1]))

    def _draw(self, eps: torch.Tensor):
        z = self.base.from_noise(eps)
        log_q = self.base.log_prob(z)
        for step in self.steps:
            shift, log_scale = self._shift_log_scale(step, z)
            z = z * log_scale.exp() + shift
            log_q = log_q - log_scale.sum(-1)
        return z, log_q

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        y, log_det = value, 0.0
        for step in reversed(self.steps):
            x = torch.zeros_like(y)
            for _ in range(self.event_shape[0]):  # unit i of x is exact after i passes
                shift, log_scale = self._shift_log_scale(step, x)
                x = (y - shift) * torch.exp(-log_scale)
            log_det = log_det + log_scale.sum(-1)
            y = x
        return self.base.log_prob(y) - log_det


class Hierarchical(_NoiseDistribution):
    """Two Gaussian stages over the concatenation z = (z1, z2): a diagonal Gaussian ``first`` over one
    part, then the other part ~ N(net(first part)) with ``net`` giving (mean, log std). ``first_part``
    0 means the first stage draws z1 (the posterior q(z1|x) q(z2|z1)), 1 that it draws z2 (the prior
    p(z2) p(z1|z2))."""

    def __init__(self, first: DiagonalGaussian, net: nn.Module, dims: tuple[int, int], first_part: int) -> None:
        self.first, self.net, self.dims, self.first_part = first, net, dims, first_part
        self._like = first.base_dist.loc
        super().__init__(first.batch_shape, torch.Size([sum(dims)]), validate_args=False)

    def _split(self, z: torch.Tensor):
        z1, z2 = z.split(self.dims, -1)
        return (z1, z2) if self.first_part == 0 else (z2, z1)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b] if self.first_part == 0 else [b, a], -1)

    def _second(self, a: torch.Tensor) -> DiagonalGaussian:
        loc, log_scale = self.net(a).chunk(2, -1)
        return DiagonalGaussian(loc, log_scale.exp())

    def _draw(self, eps: torch.Tensor):
        eps_a, eps_b = self._split(eps.expand(*eps.shape[:-1], sum(self.dims)))
        a = self.first.from_noise(eps_a)
        second = self._second(a)
        b = second.from_noise(eps_b)
        return self._join(a, b), self.first.log_prob(a) + second.log_prob(b)

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self._split(value)
        return self.first.log_prob(a) + self._second(a).log_prob(b)


# -- the families as modules: encoder output h -> q(z|x) -----------------------------------
class Diagonal(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2); the encoder gives (mu, log sigma)."""

    family = "diagonal"  # the name of the family in ModelSpec.posterior and in messages
    # what optimising the encoder's output h for one example optimises (evaluate's q*)
    refined = "diagonal Gaussian (its mean and log-scale)"

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)

    def n_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, h: torch.Tensor) -> Distribution:
        loc, log_scale = h.chunk(2, dim=-1)
        return DiagonalGaussian(loc, log_scale.exp())

    def units(self, layer: str = "all") -> slice:
        return slice(None)


class FullCovariance(Diagonal):
    """q(z|x) = N(mu(x), L(x) L(x)^T): the encoder gives mu, the log of L's diagonal and L's
    strictly lower triangle (latent_dim (latent_dim + 3) / 2 outputs)."""

    family = "full"
    refined = "full-covariance Gaussian (its mean and Cholesky factor)"

    def n_params(self) -> int:
        return self.latent_dim * (self.latent_dim + 3) // 2

    def forward(self, h: torch.Tensor) -> Distribution:
        n = self.latent_dim
        loc, log_diag, lower = h.split([n, n, n * (n - 1) // 2], dim=-1)
        rows, cols = torch.tril_indices(n, n, offset=-1, device=h.device)
        tril = h.new_zeros(*h.shape[:-1], n, n)
        tril[..., rows, cols] = lower
        return FullGaussian(loc, tril + torch.diag_embed(log_diag.exp()))


class IAF(Diagonal):
    """Inverse autoregressive flow on the diagonal Gaussian (Kingma et al. 2016): the encoder gives
    (mu, log sigma, context h) with h of latent_dim units; ``steps`` are autoregressive networks
    (z, h) -> (shift, log scale) such as ``nets.MADE`` (vaekit's builder alternates their order of
    the units and starts their last layers at zero, so an untrained flow is the identity)."""

    family = "iaf"
    refined = "IAF (its base Gaussian and context; the flow's networks as trained)"

    def __init__(self, latent_dim: int, steps) -> None:
        super().__init__(latent_dim)
        self.steps = nn.ModuleList(steps)
        if not len(self.steps):
            raise ValueError("an IAF needs at least 1 step")

    def n_params(self) -> int:
        return 3 * self.latent_dim

    def forward(self, h: torch.Tensor) -> Distribution:
        loc, log_scale, context = h.chunk(3, dim=-1)
        return IAFGaussian(DiagonalGaussian(loc, log_scale.exp()), self.steps, context)


class TwoLayer(Diagonal):
    """q(z1|x) q(z2|z1) over z = (z1, z2): the encoder gives z1's (mu, log sigma), ``upper`` maps z1
    (..., bottom_dim) to z2's (..., 2 * top_dim). ``latent_dim`` is z1's size plus z2's."""

    family = "two-layer"
    refined = "two-layer q(z1|x) q(z2|z1) (q(z1|x)'s mean and log-scale; q(z2|z1) as trained)"

    def __init__(self, bottom_dim: int, top_dim: int, upper: nn.Module) -> None:
        super().__init__(int(bottom_dim) + int(top_dim))
        self.dims = (int(bottom_dim), int(top_dim))
        self.upper = upper

    def n_params(self) -> int:
        return 2 * self.dims[0]

    def forward(self, h: torch.Tensor) -> Distribution:
        loc, log_scale = h.chunk(2, dim=-1)
        return Hierarchical(DiagonalGaussian(loc, log_scale.exp()), self.upper, self.dims, first_part=0)

    def units(self, layer: str = "all") -> slice:
        """The units of ``layer``: "all" (z1, z2), "top" (z2) or "bottom" (z1)."""
        if layer not in ("top", "bottom", "all"):
            raise ValueError(f"layer must be 'top', 'bottom' or 'all', got {layer!r}")
        return {"top": slice(self.dims[0], None), "bottom": slice(0, self.dims[0]), "all": slice(None)}[layer]


def draw(qz: Distribution, shape=torch.Size(), noise: torch.Tensor | None = None, reparameterised: bool = True):
    """Draws z ~ q of ``shape`` + q's shape (or q's draws for standard-normal ``noise``) and, where it
    comes with the draw, log q(z): a flow's or a two-layer posterior's (one pass instead of an
    inversion), else None (log_prob is cheap: compute it where it is needed, chunk by chunk)."""
    if isinstance(qz, _NoiseDistribution):
        return qz.sample_and_log_prob(shape, noise)
    if noise is not None:
        if hasattr(qz, "from_noise"):
            return qz.from_noise(noise), None
        return qz.mean + qz.stddev * noise, None
    return (qz.rsample(shape) if reparameterised else qz.sample(shape)), None
