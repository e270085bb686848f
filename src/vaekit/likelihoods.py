"""Observation models p(x | z).

A likelihood turns the decoder's raw output (``params``) into a torch ``Distribution``
whose event dims are the data dims (``Independent``), so ``log_prob(x)`` is one number
per example: a true log-density or log-mass in nats with every normalising constant kept.

Layout of ``params``: the decoder emits ``n_params`` blocks stacked along the first
data dim, so for flat data of D features it has shape (..., n_params * D), and for
images of shape (C, H, W) it has shape (..., n_params * C, H, W).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import (
    Bernoulli as _Bernoulli,
    Categorical as _Categorical,
    ContinuousBernoulli as _ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)
from torch.nn import functional as F

__all__ = [
    "Likelihood",
    "Bernoulli",
    "Gaussian",
    "Categorical",
    "ContinuousBernoulli",
    "REGISTRY",
    "create",
    "auto",
]


def _sum_event(values: torch.Tensor, n_event_dims: int) -> torch.Tensor:
    """Sum the rightmost ``n_event_dims`` dims, exactly as ``Independent.log_prob`` does."""
    if n_event_dims == 0:
        return values
    return values.reshape(*values.shape[: values.dim() - n_event_dims], -1).sum(-1)


def _blocks(params: torch.Tensor, n: int, event_shape: tuple[int, ...]) -> torch.Tensor:
    """(..., n * E0, E1, ...) -> (n, ..., E0, E1, ...): one block per distribution parameter."""
    batch = params.shape[: params.dim() - len(event_shape)]
    stacked = params.reshape(*batch, n, *event_shape)
    return stacked.movedim(len(batch), 0)


class Likelihood(nn.Module):
    """Base class: decoder output -> ``Distribution`` over one example's data.

    Subclasses set ``name`` (registry key), ``n_params`` (decoder outputs per data
    element) and implement ``_base`` (a distribution with batch shape == data shape).
    Likelihoods are modules so learned parameters (a per-dimension scale) are saved
    with the model.
    """

    name: str = ""
    n_params: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.event_shape: tuple[int, ...] | None = None

    # -- set-up -------------------------------------------------------------------
    def bind(self, event_shape: tuple[int, ...]) -> "Likelihood":
        """Fix the data shape; learned parameters that depend on it are created here."""
        self.event_shape = tuple(int(s) for s in event_shape)
        return self

    def param_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the decoder output needed for one example of shape ``event_shape``."""
        event_shape = tuple(event_shape)
        return (self.n_params * event_shape[0], *event_shape[1:])

    def config(self) -> dict[str, Any]:
        """JSON-able description; ``create(config)`` rebuilds the likelihood."""
        return {"name": self.name}

    # -- the distribution ---------------------------------------------------------
    def _base(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Distribution:
        if self.event_shape is None:
            raise RuntimeError("likelihood is not bound to a data shape; call bind(event_shape)")
        return Independent(self._base(params), len(self.event_shape))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) per example (data dims summed out); ``params`` may carry extra
        leading sample dims that broadcast against ``x``.

        Always equal to ``self.distribution(params).log_prob(x)``. Subclasses override it with
        the same formula their torch distribution uses, written out, so the training step does
        not build two distribution objects per batch (tests check the two paths agree).
        """
        return self.distribution(params).log_prob(x)

    def _n_event_dims(self) -> int:
        if self.event_shape is None:
            raise RuntimeError("likelihood is not bound to a data shape; call bind(event_shape)")
        return len(self.event_shape)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The decoded mean E[x | z], used for generation and reconstruction."""
        return self._base(params).mean

    def validate(self, x: torch.Tensor | np.ndarray) -> None:
        """Raise ``ValueError`` when ``x`` is outside this model's support."""
        if not bool(np.isfinite(_as_numpy(x)).all()):
            raise ValueError("data contain NaN or infinite values; remove or impute them first")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class Bernoulli(Likelihood):
    """Bernoulli on logits, one per element. Exact likelihood for binary data; for
    values in (0, 1) ``log_prob`` is the (unnormalised) binary cross-entropy, which is
    why ``auto`` never picks it for grey levels (use ``ContinuousBernoulli``)."""

    name = "bernoulli"

    def _base(self, params: torch.Tensor) -> Distribution:
        return _Bernoulli(logits=params, validate_args=False)

    def log_prob(self, params, x):
        # torch's Bernoulli.log_prob: -BCE-with-logits, elementwise, after broadcasting
        logits, x = torch.broadcast_tensors(params, x)
        return _sum_event(-F.binary_cross_entropy_with_logits(logits, x, reduction="none"), self._n_event_dims())

    def validate(self, x) -> None:
        super().validate(x)
        a = _as_numpy(x)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(
                f"Bernoulli likelihood needs data in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]; "
                "rescale the data or choose --likelihood gaussian"
            )


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    name = "continuous_bernoulli"

    def _base(self, params: torch.Tensor) -> Distribution:
        # torch's default lims keep the normaliser's Taylor branch numerically safe near 0.5.
        return _ContinuousBernoulli(logits=params, validate_args=False)

    def validate(self, x) -> None:
        super().validate(x)
        a = _as_numpy(x)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(
                f"ContinuousBernoulli likelihood needs data in [0, 1], got [{a.min():.4g}, {a.max():.4g}]; "
                "rescale the data or choose --likelihood gaussian"
            )


class Gaussian(Likelihood):
    """Diagonal Gaussian N(x | mu(z), sigma^2).

    ``scale`` is a positive float (fixed; seed 000 uses 1, seed 004 a variance of 0.03,
    i.e. scale sqrt(0.03)), ``"learned"`` (one free scale per data dimension) or
    ``"predicted"`` (the decoder outputs a scale for every element). Learned scales are
    ``min_scale + softplus(raw)`` so a constant column cannot drive the density to
    infinity.
    """

    name = "gaussian"

    def __init__(self, scale: float | str = "learned", min_scale: float = 1e-3) -> None:
        super().__init__()
        if isinstance(scale, str):
            if scale not in ("learned", "predicted"):
                raise ValueError(f"Gaussian scale must be a positive number, 'learned' or 'predicted', got {scale!r}")
        else:
            scale = float(scale)
            if not scale > 0 or not math.isfinite(scale):
                raise ValueError(f"Gaussian scale must be a positive finite number, got {scale}")
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be >= 0, got {min_scale}")
        self.scale = scale
        self.min_scale = float(min_scale)
        self.n_params = 2 if scale == "predicted" else 1
        self.raw_scale: nn.Parameter | None = None

    def bind(self, event_shape):
        super().bind(event_shape)
        if self.scale == "learned" and self.raw_scale is None:
            # softplus(raw) + min_scale == 1 at initialisation
            init = math.log(math.expm1(max(1.0 - self.min_scale, 1e-6)))
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, init))
        return self

    def config(self):
        return {"name": self.name, "scale": self.scale, "min_scale": self.min_scale}

    def _loc_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale == "predicted":
            loc, raw = _blocks(params, 2, self.event_shape)
            return loc, self.min_scale + F.softplus(raw)
        if self.scale == "learned":
            return params, (self.min_scale + F.softplus(self.raw_scale)).expand_as(params)
        return params, torch.full_like(params, self.scale)

    def _base(self, params):
        loc, scale = self._loc_scale(params)
        return Normal(loc, scale, validate_args=False)

    def log_prob(self, params, x):
        # torch's Normal.log_prob: -(x - mu)^2 / (2 sigma^2) - log sigma - log sqrt(2 pi)
        n = self._n_event_dims()
        loc, scale = self._loc_scale(params)
        values = -((x - loc) ** 2) / (2 * scale**2) - scale.log() - math.log(math.sqrt(2 * math.pi))
        return _sum_event(values, n)

    def mean(self, params):
        if self.scale == "predicted":
            return _blocks(params, 2, self.event_shape)[0]
        return params


class Categorical(Likelihood):
    """Categorical over ``num_classes`` values per element; data hold class indices
    0..K-1 (e.g. the 17 grey levels 0..16 of scikit-learn's digits). ``mean`` is the
    expected class index, so it lives on the data's own scale."""

    name = "categorical"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ValueError(f"Categorical likelihood needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.n_params = num_classes

    def config(self):
        return {"name": self.name, "num_classes": self.num_classes}

    def _logits(self, params):
        return _blocks(params, self.num_classes, self.event_shape).movedim(0, -1)  # (..., *event, K)

    def _base(self, params):
        return _IndexCategorical(logits=self._logits(params), validate_args=False)

    def log_prob(self, params, x):
        # torch's Categorical: normalised logits, then the entry of the observed class
        n = self._n_event_dims()
        logits = self._logits(params)
        log_pmf = logits - logits.logsumexp(-1, keepdim=True)
        index, log_pmf = torch.broadcast_tensors(x.long().unsqueeze(-1), log_pmf)
        return _sum_event(log_pmf.gather(-1, index[..., :1]).squeeze(-1), n)

    def mean(self, params):
        probs = self._logits(params).softmax(-1)
        levels = torch.arange(self.num_classes, dtype=probs.dtype, device=probs.device)
        return probs @ levels

    def validate(self, x) -> None:
        super().validate(x)
        a = _as_numpy(x)
        if a.size and (a.min() < 0 or a.max() > self.num_classes - 1 or not np.all(a == np.round(a))):
            raise ValueError(
                f"Categorical likelihood with {self.num_classes} classes needs integer data in "
                f"0..{self.num_classes - 1}, got values in [{a.min():.4g}, {a.max():.4g}]"
            )


class _IndexCategorical(_Categorical):
    """Categorical whose ``log_prob`` accepts float data holding class indices and whose
    ``mean`` is the expected index (torch's is undefined)."""

    def log_prob(self, value):
        return super().log_prob(value.long())

    @property
    def mean(self):
        levels = torch.arange(self.probs.shape[-1], dtype=self.probs.dtype, device=self.probs.device)
        return self.probs @ levels

    def sample(self, sample_shape=torch.Size()):
        return super().sample(sample_shape).to(self.probs.dtype)


REGISTRY: dict[str, type[Likelihood]] = {
    cls.name: cls for cls in (Bernoulli, Gaussian, Categorical, ContinuousBernoulli)
}
_ALIASES = {"cb": "continuous_bernoulli", "continuous-bernoulli": "continuous_bernoulli", "normal": "gaussian"}


def register(cls: type[Likelihood]) -> type[Likelihood]:
    """Class decorator: make a likelihood available to ``create`` and the CLI by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def create(spec: str | dict[str, Any] | Likelihood, **kwargs: Any) -> Likelihood:
    """Build a likelihood from a name (``"bernoulli"``), a config dict or pass one through."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, dict):
        kwargs = {**{k: v for k, v in spec.items() if k != "name"}, **kwargs}
        spec = spec["name"]
    key = _ALIASES.get(str(spec).lower(), str(spec).lower())
    if key not in REGISTRY:
        raise ValueError(f"unknown likelihood {spec!r}; choose one of: {', '.join(sorted(REGISTRY))}, auto")
    try:
        return REGISTRY[key](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for likelihood {key!r}: {err}") from None


def auto(x: np.ndarray, max_levels: int = 32) -> Likelihood:
    """Choose an observation model from the data's values.

    binary {0, 1} -> Bernoulli; a few non-negative integer levels (<= ``max_levels``) ->
    Categorical; other values in [0, 1] -> ContinuousBernoulli; anything else ->
    Gaussian with a learned per-dimension scale. Never a Bernoulli on grey levels.
    """
    a = np.asarray(x)
    if a.size == 0:
        raise ValueError("cannot choose a likelihood for empty data")
    if not np.isfinite(a).all():
        raise ValueError("data contain NaN or infinite values; remove or impute them first")
    lo, hi = float(a.min()), float(a.max())
    integer = bool(np.all(a == np.round(a)))
    if integer and lo >= 0 and hi <= 1:
        return Bernoulli()
    if integer and lo >= 0 and hi < max_levels:
        return Categorical(int(hi) + 1)
    if lo >= 0 and hi <= 1:
        return ContinuousBernoulli()
    return Gaussian("learned")
