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
)
from torch.distributions import (
    Categorical as _Categorical,
)
from torch.distributions import (
    ContinuousBernoulli as _ContinuousBernoulli,
)
from torch.distributions import (
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
    "Categorical256",
    "Mixed",
    "REGISTRY",
    "resolve",
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
    def bind(self, event_shape: tuple[int, ...]) -> Likelihood:
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

    # -- capabilities (methods, not attribute probes) ------------------------------
    def handles_missing(self) -> bool:
        """True when NaN in the data means "missing" (left out of log p(x|z)) rather than an error."""
        return False

    def column_names(self) -> list[str] | None:
        """The names of the table columns this likelihood models, or None for arrays and images."""
        return None

    # -- the distribution ---------------------------------------------------------
    def _base(self, params: torch.Tensor) -> Distribution:
        # abstract: every registered likelihood returns its torch distribution here
        raise NotImplementedError(f"{type(self).__name__} must implement _base(params) -> Distribution")

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

    def log_prob_without_grad(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log_prob`` for decoder outputs that no gradient flows through (log p(x) estimates): the same
        values to float rounding, computed however is fastest without autograd. By default ``log_prob``."""
        return self.log_prob(params, x)

    def _n_event_dims(self) -> int:
        if self.event_shape is None:
            raise RuntimeError("likelihood is not bound to a data shape; call bind(event_shape)")
        return len(self.event_shape)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The decoded mean E[x | z], used for generation and reconstruction."""
        return self._base(params).mean

    def validate(self, x: torch.Tensor | np.ndarray) -> None:
        """Raise ``ValueError`` when ``x`` is outside this model's support. Arrays too large
        for memory (on disk) are checked block by block."""
        for a in row_chunks(x):
            self._check(a)

    def _check(self, a: np.ndarray) -> None:
        """Check one block of rows (override in subclasses, calling this first)."""
        if not bool(np.isfinite(a).all()):
            raise ValueError("data contain NaN or infinite values; remove or impute them first")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")

    def describe(self) -> str:
        """A short human-readable name with the settings, e.g. ``gaussian(scale=learned, min_scale=0.001)``."""
        extra = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{self.name}({extra})" if extra else self.name


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def row_chunks(x, max_elements: int = 2**22):
    """``x`` as numpy blocks of rows: in-memory data in one block, data on disk (anything
    with ``chunks()``, or an ``np.memmap``) a few MB at a time so checking never loads the file."""
    if isinstance(x, torch.Tensor) or (isinstance(x, np.ndarray) and not isinstance(x, np.memmap)):
        yield _as_numpy(x)
        return
    if hasattr(x, "chunks"):
        yield from x.chunks()
        return
    per_row = max(1, math.prod(x.shape[1:]))
    step = max(1, max_elements // per_row)
    for start in range(0, len(x), step):
        yield np.asarray(x[start : start + step])


def _row_blocks(a: np.ndarray, max_elements: int = 2**22):
    """Row slices of an in-memory array, so temporary copies stay a few MB."""
    step = max(1, max_elements // max(1, math.prod(a.shape[1:])))
    for start in range(0, len(a), step):
        yield a[start : start + step]


def value_summary(x) -> dict[str, Any]:
    """What ``auto`` needs to know about the values, gathered block by block: counts of
    non-finite values, the range of the finite ones, whether they are all integers."""
    n_nan = n_inf = size = 0
    lo, hi, integer = math.inf, -math.inf, True
    for a in (block for chunk in row_chunks(x) for block in _row_blocks(chunk)):
        a = np.asarray(a, dtype=np.float64)
        size += a.size
        finite = np.isfinite(a)
        n_nan += int(np.isnan(a).sum())
        n_inf += int((~finite).sum()) - int(np.isnan(a).sum())
        v = a[finite] if not finite.all() else a
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
            integer = integer and bool(np.all(v == np.round(v)))
    return {"size": size, "n_nan": n_nan, "n_inf": n_inf, "min": lo, "max": hi, "integer": integer}


def check_unit_interval(x, what: str = "this likelihood") -> None:
    """Raise ``ValueError`` unless every value of ``x`` is finite and in [0, 1]."""
    s = value_summary(x)
    if s["n_nan"] or s["n_inf"]:
        raise ValueError("data contain NaN or infinite values; remove or impute them first")
    if s["size"] and (s["min"] < 0 or s["max"] > 1):
        raise ValueError(f"{what} needs data in [0, 1], got values in [{s['min']:.4g}, {s['max']:.4g}]")


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

    def _check(self, a) -> None:
        super()._check(a)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(
                f"Bernoulli likelihood needs data in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]; "
                "rescale the data or choose --likelihood gaussian"
            )
        grey = int(((a != 0) & (a != 1)).sum())
        if grey:
            raise ValueError(
                f"Bernoulli likelihood needs binary data (0 or 1), but {grey} values lie strictly between 0 and 1 "
                "(its log_prob would not be a log-likelihood); use --likelihood continuous_bernoulli for grey "
                "levels, or --binarize static|dynamic"
            )


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    name = "continuous_bernoulli"

    def _base(self, params: torch.Tensor) -> Distribution:
        # torch's default lims keep the normaliser's Taylor branch numerically safe near 0.5.
        return _ContinuousBernoulli(logits=params, validate_args=False)

    def _check(self, a) -> None:
        super()._check(a)
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
    expected value, so it lives on the data's own scale.

    The classes are the values ``level(k)`` of a levels map, k = 0..K-1 (here the identity;
    ``Categorical256`` maps class k to the pixel value k / 255)."""

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

    # -- the levels map: class index k <-> data value ---------------------------------
    @property
    def step(self) -> float:
        """Data value of class 1 (class k is the value k * step)."""
        return 1.0

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """The class index of each data value."""
        return torch.round(x / self.step).long().clamp(0, self.num_classes - 1)

    # -- the distribution -------------------------------------------------------------
    def _logits(self, params):
        return _blocks(params, self.num_classes, self.event_shape).movedim(0, -1)  # (..., *event, K)

    def _base(self, params):
        return _LevelCategorical(logits=self._logits(params), step=self.step, validate_args=False)

    def log_prob(self, params, x):
        """log p(x | params) per example: the observed class's logit less the log-sum-exp of its pixel's
        logits, summed over the data. Where the data and the parameters have the same batch shape (a
        training step), ``_CategoricalLogLik`` computes it and its gradient in a few passes over the
        logits as the decoder lays them out; else torch's gather and logsumexp with broadcasting."""
        n = self._n_event_dims()
        batch = params.shape[: params.dim() - n]
        if x.shape[: x.dim() - n] == batch:
            flat = math.prod(batch)
            stacked = params.reshape(flat, self.num_classes, -1)  # (N, K, E): class-major, as decoded
            index = self.index(x).reshape(flat, 1, -1)
            if index.shape[-1] == stacked.shape[-1]:
                return _CategoricalLogLik.apply(stacked, index).reshape(batch)
        # torch's Categorical takes the observed class's entry of the normalised logits, logits - logsumexp;
        # the same subtraction made after the gather gives the same numbers without the normalised tensor
        # of all K classes. Broadcast by expand, not with torch.broadcast_shapes, whose first call imports
        # 484 modules (0.27 s).
        logits, index = self._logits(params), self.index(x).unsqueeze(-1)
        if index.dim() > logits.dim():  # data with more leading dims than the parameters: both broadcast
            index, logits = torch.broadcast_tensors(index, logits)
            index = index[..., :1]
        picked = logits.gather(-1, index.expand(*logits.shape[:-1], 1)).squeeze(-1)
        return _sum_event(picked - logits.logsumexp(-1), n)

    def log_prob_without_grad(self, params, x):
        """The observed class's logit less log sum_k exp(l_k), the sum of exponentials taken as it is,
        without subtracting the largest logit first: two passes over the logits, where torch's
        logsumexp makes four. Each exponential is exact to float rounding, and so is the sum while it is
        a normal float; where a sum overflows (a logit above about 88 in float32) or is no longer a
        normal float (all of a pixel's logits below about -70), torch's logsumexp takes those pixels."""
        n = self._n_event_dims()
        stacked = params.reshape(*params.shape[: params.dim() - n], self.num_classes, -1)  # (..., K, E)
        index = self.index(x).reshape(*x.shape[: x.dim() - n], 1, -1)  # (..., 1, E)
        picked = stacked.gather(-2, index.expand(*stacked.shape[:-2], 1, stacked.shape[-1])).squeeze(-2)
        lse = torch.exp(stacked).sum(-2).log_()  # (..., E)
        normal = math.log(torch.finfo(lse.dtype).tiny * 2**24)  # a sum below e^normal has lost digits
        bad = ~((lse > normal) & (lse < math.inf))
        if bool(bad.any()):
            lse = torch.where(bad, stacked.logsumexp(-2), lse)
        return (picked - lse).sum(-1)

    def mean(self, params):
        return self._base(params).mean

    def _check(self, a) -> None:
        super()._check(a)
        if a.size and (a.min() < 0 or a.max() > self.num_classes - 1 or not np.all(a == np.round(a))):
            raise ValueError(
                f"Categorical likelihood with {self.num_classes} classes needs integer data in "
                f"0..{self.num_classes - 1}, got values in [{a.min():.4g}, {a.max():.4g}]"
            )


_LOG2E = 1 / math.log(2)


class _CategoricalLogLik(torch.autograd.Function):
    """sum_e l[x_e, e] - log sum_k exp(l[k, e]) per row of logits l (N, K, E) with the observed classes
    ``index`` (N, 1, E), and its gradient: (N,) values in the logits' dtype (float32 math and values for
    half types).

    - Forward: the largest logit m of each pixel, exp(l - m) made as exp2((l - m) log2(e)) (2x faster
      than ``exp`` on these CPUs; off by a few float roundings for logits tens of nats apart), its
      sum s over the classes, log s + m less the observed logit. The shift keeps every sum in [1, K]:
      no overflow and no check that would wait on the device.
    - Backward: the softmax exp(l - m) / s from the saved exponentials, less 1 at the observed class,
      times the incoming gradient: one pass and a scatter, where autograd through gather and
      logsumexp takes a max, two subtractions, two exponentials, a zero fill and a scatter-add (a
      training step of the default run's model 1.1-1.2x faster: ``bench/bench_step.py --cases digits``).
    First derivatives only (``once_differentiable``)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        top = work.amax(1, keepdim=True)  # (N, 1, E)
        exps = torch.sub(work, top).mul_(_LOG2E).exp2_()  # (N, K, E)
        sums = exps.sum(1, keepdim=True)
        value = work.gather(1, index).sub_(sums.log().add_(top)).sum((1, 2))
        ctx.save_for_backward(exps, sums, index)
        ctx.dtype = logits.dtype
        return value  # float32 for half logits: a sum over the data in bfloat16 keeps 2-3 digits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        exps, sums, index = ctx.saved_tensors
        g = grad.to(exps.dtype).view(-1, 1, 1)
        out = exps * (g / sums).neg_()  # d/dl of -(log s + m) is -softmax
        out.scatter_add_(1, index, g.expand(index.shape))  # + 1 at the observed class
        return out.to(ctx.dtype), None


class _LevelCategorical(_Categorical):
    """Categorical whose values are levels k * ``step`` (class indices for step 1): ``log_prob``
    takes float data holding such values, ``mean`` is the expected value and ``sample`` returns
    values, all on the data's scale."""

    def __init__(self, logits: torch.Tensor, step: float = 1.0, validate_args=None) -> None:
        self.step = float(step)
        super().__init__(logits=logits, validate_args=validate_args)

    def _index(self, value: torch.Tensor) -> torch.Tensor:
        return torch.round(value / self.step).long().clamp(0, self.probs.shape[-1] - 1)

    def _values(self) -> torch.Tensor:
        return torch.arange(self.probs.shape[-1], dtype=self.probs.dtype, device=self.probs.device) * self.step

    def log_prob(self, value):
        return super().log_prob(self._index(value))

    @property
    def mean(self):
        return self.probs @ self._values()

    @property
    def mode(self):
        return super().mode.to(self.probs.dtype) * self.step

    def sample(self, sample_shape=torch.Size()):
        return super().sample(sample_shape).to(self.probs.dtype) * self.step

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_LevelCategorical, _instance)
        new.step = self.step
        return super().expand(batch_shape, _instance=new)


class Categorical256(Categorical):
    """A ``Categorical`` over the ``levels`` (256) grey levels of 8-bit pixels, with the levels map
    class k <-> value k / (levels - 1): data stored in [0, 1] the way image readers return them.
    ``log_prob`` is the exact log-mass of the level; ``mean`` the expected level on the [0, 1] scale."""

    name = "categorical256"

    def __init__(self, levels: int = 256) -> None:
        levels = int(levels)
        if levels < 2:
            raise ValueError(f"categorical256 needs levels >= 2, got {levels}")
        super().__init__(levels)
        self.levels = levels

    def config(self):
        return {"name": self.name, "levels": self.levels}

    @property
    def step(self) -> float:
        return 1.0 / (self.levels - 1)

    def _check(self, a) -> None:
        Likelihood._check(self, a)
        k = self.levels - 1
        if a.size and (a.min() < 0 or a.max() > 1 or np.abs(a * k - np.round(a * k)).max() > 1e-3):
            raise ValueError(
                f"categorical256 needs pixel values in [0, 1] on the {self.levels} levels i/{k} (8-bit images "
                f"divided by {k}), got values in [{a.min():.4g}, {a.max():.4g}] off those levels; "
                "use --likelihood continuous_bernoulli or gaussian"
            )


class Mixed(Likelihood):
    """A likelihood over the columns of a table, built from one child likelihood per group of columns:

    - ``numeric``: a ``Gaussian`` with a learned scale on the standardised value (x - m) / s; the
      log-density adds -log s, so it is the density of the value in its own units;
    - ``binary``: a ``Bernoulli`` on a logit, the value coded 0 / 1;
    - ``categorical``: a ``Categorical`` over ``size`` categories, the value one-hot coded over
      ``size`` consecutive data columns.

    ``columns`` lists them in order as dicts: ``{"name", "kind", "unit_scale" (numeric: s),
    "size" (categorical)}``. A NaN in the data means missing: that column drops out of the
    log-likelihood for that example (an all-NaN one-hot block for a categorical). The decoder
    emits one number per data column (mean, logit, logits). log p(x|z) is the sum of the
    children's per-column log-probabilities over the observed columns.
    """

    name = "mixed"
    KINDS = ("numeric", "binary", "categorical")

    def __init__(self, columns: list[dict[str, Any]], min_scale: float = 1e-3) -> None:
        super().__init__()
        if not columns:
            raise ValueError("a mixed likelihood needs at least one column")
        self.columns: list[dict[str, Any]] = []
        pos, num, unit, binary, groups = 0, [], [], [], []
        kinds = []
        for i, col in enumerate(columns):
            kind = col.get("kind")
            if kind not in self.KINDS:
                raise ValueError(
                    f"column {col.get('name', i)!r} has kind {kind!r}; choose one of {', '.join(self.KINDS)}"
                )
            entry = {"name": str(col.get("name", f"x{i}")), "kind": kind}
            if kind == "numeric":
                s = float(col.get("unit_scale", 1.0))
                if not (s > 0 and math.isfinite(s)):
                    raise ValueError(f"column {entry['name']!r}: unit_scale must be positive, got {s}")
                entry["unit_scale"] = s
                num.append(pos), unit.append(math.log(s))
                width = 1
            elif kind == "binary":
                binary.append(pos)
                width = 1
            else:
                size = int(col.get("size", 0))
                if size < 2:
                    raise ValueError(f"categorical column {entry['name']!r} needs size >= 2, got {size}")
                entry["size"] = size
                groups.append((pos, size))
                width = size
            kinds.append(kind)
            self.columns.append(entry)
            pos += width
        self.width = pos
        self.min_scale = float(min_scale)
        self.groups = groups
        # the children: one Gaussian over the numeric columns, one Bernoulli over the binary ones,
        # one Categorical per categorical column
        self.numeric = Gaussian("learned", min_scale=self.min_scale).bind((len(num),))
        self.binary = Bernoulli().bind((len(binary),))
        self.categorical = nn.ModuleList(Categorical(size).bind((1,)) for _, size in groups)
        # columns of the per-column output, in the order numeric, binary, categorical groups
        order = [i for k in self.KINDS for i, kd in enumerate(kinds) if kd == k]
        self.register_buffer("num_pos", torch.tensor(num, dtype=torch.long), persistent=False)
        self.register_buffer("bin_pos", torch.tensor(binary, dtype=torch.long), persistent=False)
        self.register_buffer("log_unit", torch.tensor(unit, dtype=torch.float32), persistent=False)
        self.register_buffer("unorder", torch.tensor(np.argsort(order), dtype=torch.long), persistent=False)
        self._register_load_state_dict_pre_hook(_mixed_state_before_children)

    # -- capabilities ----------------------------------------------------------------------
    def handles_missing(self) -> bool:
        """NaN in the data means "missing", not an error."""
        return True

    def column_names(self) -> list[str]:
        """The table columns modelled, in order (a categorical one once, not per category)."""
        return [c["name"] for c in self.columns]

    @property
    def raw_scale(self) -> nn.Parameter:
        """The numeric child's unconstrained scales (one per numeric column)."""
        return self.numeric.raw_scale

    def bind(self, event_shape):
        event_shape = tuple(int(s) for s in event_shape)
        if event_shape != (self.width,):
            raise ValueError(f"this mixed likelihood models {self.width} data columns, not data of shape {event_shape}")
        return super().bind(event_shape)

    def config(self):
        return {"name": self.name, "columns": [dict(c) for c in self.columns], "min_scale": self.min_scale}

    def extra_repr(self) -> str:
        counts = {k: sum(c["kind"] == k for c in self.columns) for k in self.KINDS}
        return ", ".join(f"{k}={v}" for k, v in counts.items())

    def describe(self) -> str:
        return f"{self.name}({self.extra_repr()})"

    def scales(self) -> torch.Tensor:
        """The learned standard deviations of the numeric columns, in standardised units."""
        return self.min_scale + F.softplus(self.raw_scale)

    def distribution(self, params: torch.Tensor) -> Distribution:
        if self.event_shape is None:
            raise RuntimeError("likelihood is not bound to a data shape; call bind(event_shape)")
        return MixedDistribution(self, params)

    def parts(self, params: torch.Tensor):
        """The children's distributions, elementwise (batch shape = their columns): the numeric
        Normal, the binary Bernoulli, then one categorical per categorical column, each with the
        data positions it models (a categorical: its one-hot block)."""
        yield "numeric", self.num_pos, self.numeric._base(params[..., self.num_pos])
        yield "binary", self.bin_pos, self.binary._base(params[..., self.bin_pos])
        for child, (start, size) in zip(self.categorical, self.groups):
            yield "categorical", slice(start, start + size), child._base(params[..., start : start + size])

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Numeric: the mean; binary: P(1); categorical: the category probabilities."""
        out = params.clone()
        for kind, where, dist in self.parts(params):
            out[..., where] = dist.probs[..., 0, :] if kind == "categorical" else dist.mean
        return out

    def _check(self, a) -> None:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.width:
            raise ValueError(f"a mixed likelihood over {self.width} data columns got data of shape {a.shape[1:]}")
        if np.isinf(a).any():
            raise ValueError("data contain infinite values; remove them or mark them missing (NaN)")
        for col, pos in zip(self._kind_columns("binary"), self.bin_pos.tolist()):
            v = a[:, pos]
            bad = ~np.isnan(v) & (v != 0) & (v != 1)
            if bad.any():
                raise ValueError(
                    f"binary column {col!r} holds {v[bad][0]:.4g}; it must be coded 0 / 1 (or NaN if missing)"
                )
        for col, (start, size) in zip(self._kind_columns("categorical"), self.groups):
            block = a[:, start : start + size]
            missing = np.isnan(block)
            partial = missing.any(1) & ~missing.all(1)
            obs = block[~missing.any(1)]
            if partial.any() or (obs.size and (not np.isin(obs, (0, 1)).all() or not (obs.sum(1) == 1).all())):
                raise ValueError(
                    f"categorical column {col!r} must be one-hot coded over {size} data columns (all NaN if missing)"
                )

    def _kind_columns(self, kind: str) -> list[str]:
        return [c["name"] for c in self.columns if c["kind"] == kind]


def _mixed_state_before_children(state_dict, prefix, *args) -> None:
    """Checkpoints written before ``Mixed`` was built from children hold the numeric scales as
    ``raw_scale``; they now live in the Gaussian child."""
    old = prefix + "raw_scale"
    if old in state_dict and prefix + "numeric.raw_scale" not in state_dict:
        state_dict[prefix + "numeric.raw_scale"] = state_dict.pop(old)


class MixedDistribution(Distribution):
    """p(x | z) of a ``Mixed`` likelihood: batch shape params.shape[:-1], event shape (width,).
    ``log_prob_columns`` gives each table column's log-likelihood (0 where missing), from the
    children's distributions; ``log_prob`` their sum."""

    arg_constraints: dict = {}

    def __init__(self, likelihood: Mixed, params: torch.Tensor) -> None:
        self.likelihood, self.params = likelihood, params
        super().__init__(batch_shape=params.shape[:-1], event_shape=params.shape[-1:], validate_args=False)

    def log_prob_columns(self, x: torch.Tensor) -> torch.Tensor:
        lik, params = self.likelihood, self.params
        x = x.to(params.dtype).expand_as(params) if x.shape != params.shape else x.to(params.dtype)
        observed = ~torch.isnan(x)
        x0 = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))  # finite everywhere
        parts = []
        for kind, where, dist in lik.parts(params):
            if kind == "categorical":
                value = x0[..., where].argmax(-1, keepdim=True).to(x0.dtype)  # one-hot -> class index, (..., 1)
                seen = observed[..., where][..., :1]
            else:
                value, seen = x0[..., where], observed[..., where]
            lp = dist.log_prob(value)
            if kind == "numeric":
                lp = lp - lik.log_unit.to(lp.dtype)  # the density of the value in its own units
            parts.append(torch.where(seen, lp, torch.zeros_like(lp)))
        return torch.cat(parts, -1)[..., lik.unorder]  # (..., n_columns) in the table's order

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob_columns(x).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.likelihood.mean(self.params)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            params = self.params.expand(*sample_shape, *self.params.shape)
            out = torch.empty_like(params)
            for kind, where, dist in self.likelihood.parts(params):
                draw = dist.sample()
                if kind == "categorical":
                    size = where.stop - where.start
                    draw = F.one_hot(draw[..., 0].long(), size).to(out.dtype)
                out[..., where] = draw.to(out.dtype)
        return out


REGISTRY: dict[str, type[Likelihood]] = {
    cls.name: cls for cls in (Bernoulli, Gaussian, Categorical, ContinuousBernoulli, Categorical256, Mixed)
}
_ALIASES = {
    "cb": "continuous_bernoulli",
    "continuous-bernoulli": "continuous_bernoulli",
    "normal": "gaussian",
    "categorical-256": "categorical256",
    "categorical_256": "categorical256",
}


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
    s = value_summary(x)
    if s["size"] == 0:
        raise ValueError("cannot choose a likelihood for empty data")
    if s["n_nan"] or s["n_inf"]:
        raise ValueError("data contain NaN or infinite values; remove or impute them first")
    lo, hi, integer = s["min"], s["max"], s["integer"]
    if integer and lo >= 0 and hi <= 1:
        return Bernoulli()
    if integer and lo >= 0 and hi < max_levels:
        return Categorical(int(hi) + 1)
    if lo >= 0 and hi <= 1:
        return ContinuousBernoulli()
    return Gaussian("learned")


def resolve(
    name: str | dict[str, Any] | Likelihood = "auto", x=None, *, scale: float | None = None, schema: Any = None
) -> Likelihood:
    """The likelihood a run asks for, decided with the data where needed.

    ``name``: ``auto``, a registered name, a config dict or a ``Likelihood``. ``auto`` looks at the
    data ``x`` (see ``auto``); without data it is a Gaussian with a learned scale, auto's choice for
    real values. ``scale`` fixes a Gaussian's standard deviation. A table (``schema``, a fitted
    ``vaekit.data.Schema``) gets the mixed likelihood its columns call for. The result is checked
    against ``x`` when given."""
    if isinstance(name, (dict, Likelihood)):
        if scale is not None:
            raise ValueError("setting scale applies when the likelihood is given by name, not as a config")
        lik = create(name)
    else:
        key = _ALIASES.get(str(name).lower(), str(name).lower())
        if scale is not None and key not in ("auto", Gaussian.name):
            raise ValueError(f"setting scale applies to the Gaussian likelihood, not {name!r}")
        if schema is not None:
            if key not in ("auto", Mixed.name):
                raise ValueError(
                    f"a table is modelled column by column (likelihood '{Mixed.name}': Gaussian, "
                    f"Bernoulli, categorical); likelihood {name!r} applies to arrays and images"
                )
            lik = schema.likelihood()
        elif key == Mixed.name:
            raise ValueError("the mixed likelihood models tables (.csv, .tsv, .parquet files)")
        elif key == "auto":
            lik = Gaussian(scale) if scale is not None else (auto(x) if x is not None else Gaussian("learned"))
        elif key == Gaussian.name:
            lik = Gaussian(scale if scale is not None else "learned")
        elif key not in REGISTRY:
            raise ValueError(f"unknown likelihood {name!r}; choose one of: {', '.join(sorted(REGISTRY))}, auto")
        elif key == Categorical.name:
            if x is None:
                raise ValueError(
                    "a categorical likelihood by name needs the data to count its levels; "
                    "give a config such as {'name': 'categorical', 'num_classes': 10}"
                )
            s = value_summary(x)
            levels = int(s["max"]) + 1 if s["integer"] and s["min"] >= 0 and s["size"] else 0
            if levels < 2:
                raise ValueError("a categorical likelihood needs non-negative integer data with at least 2 levels")
            lik = Categorical(levels)
        else:
            lik = create(key)
    if x is not None:
        lik.validate(x)
    return lik
