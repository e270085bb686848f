"""How good a trained VAE is, and why: ``vaekit.evaluate(model, data)``.

How good: the ELBO, IWAE_k bounds and the importance-sampled log p(x) (nats per example,
every constant kept), and bits per dimension for images. Why: the KL per latent unit, the
active units (Burda et al. 2016: unit j is active when Var_x(E_q[z_j | x]) > 0.01), a
posterior-collapse flag, and the inference-gap decomposition of Cremer et al. (2018):

    log p(x) - L[q_enc] = (log p(x) - L[q*])   +   (L[q*] - L[q_enc])
                          approximation gap        amortisation gap

where q_enc is the encoder's q(z|x) and q* the best q of the model's own posterior family for
each example, found by optimising the encoder's output h (q = posterior(h)) from its value. The
approximation gap is what that family costs; the amortisation gap is what sharing one encoder
across all x costs.

Every quantity is a ``Metric``: per-example values, the estimator, the number of draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch.distributions import (
    Independent,
    kl_divergence,
)

from .batches import inference, iterate
from .generate import placement
from .model import Model
from .objectives import (
    DEFAULT_MAX_ELEMENTS,
    _mixture_size,
    elements_per_draw,
    log_marginal,
    unit_kl,
)
from .posteriors import Diagonal, draw

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016
COLLAPSE_KL = 0.1  # nats per example: z then carries at most 0.1 nats (0.14 bits) about x


@dataclass
class Metric:
    """One quantity per example (``values``, shape (N,)), how it was estimated, and with how
    many Monte Carlo draws per example (``samples``; None for closed forms and derived values)."""

    values: np.ndarray
    estimator: str
    samples: int | None = None
    mc_stderr: np.ndarray | None = None  # per-example Monte Carlo standard error, where known

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Spread over the examples (not an error bar of the mean)."""
        return float(np.std(self.values, ddof=1)) if self.values.size > 1 else 0.0

    @property
    def mean_mc_stderr(self) -> float | None:
        """Monte Carlo standard error of ``mean`` (independent draws per example)."""
        if self.mc_stderr is None:
            return None
        return float(np.sqrt(np.sum(self.mc_stderr**2)) / self.mc_stderr.size)

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": self.mean, "std": self.std, "estimator": self.estimator, "samples": self.samples}
        if self.mc_stderr is not None:
            out["mc_stderr"] = self.mean_mc_stderr
        if per_example:
            out["values"] = self.values.tolist()
            if self.mc_stderr is not None:
                out["mc_stderr_values"] = self.mc_stderr.tolist()
        return out


@dataclass
class GapConfig:
    """How q* is found for each example: Adam on the posterior's parameters h, from the encoder's
    output, ``samples`` fresh draws per step. Every ``check_every`` steps the ELBO is measured
    with ``check_samples`` draws held fixed for the whole run; the best parameters so far are
    kept. When an example gains less than ``tol`` nats over a check, it restarts from its best
    with half the step size; when that happens at the smallest step size, lr / 2**halvings, it
    counts as converged and stops. Examples still improving after ``steps`` steps are reported
    as not converged. L[q*] and L[q_enc] are then estimated with ``final_samples`` fresh draws
    shared by the two (common random numbers)."""

    steps: int = 1000
    lr: float = 0.02
    samples: int = 8
    check_every: int = 50
    check_samples: int = 64
    tol: float = 0.01
    halvings: int = 3
    final_samples: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "samples", "check_every", "check_samples", "final_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"gap setting {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.tol >= 0 or self.halvings < 0:
            raise ValueError(
                f"gap settings need lr > 0, tol >= 0, halvings >= 0; got {self.lr}, {self.tol}, {self.halvings}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Gaps:
    """The inference-gap decomposition (Cremer et al. 2018), per example.

    ``log_px - elbo_encoder == approximation + amortisation`` holds exactly by construction;
    ``log_px`` is importance-sampled with a mixture of q*, the model's own q and a diagonal Gaussian
    at q*'s moments with twice its scale."""

    log_px: Metric
    elbo_encoder: Metric
    elbo_refined: Metric
    approximation: Metric
    amortisation: Metric
    converged: np.ndarray  # (N,) bool
    steps_taken: np.ndarray  # (N,) int
    config: GapConfig
    family: str = "diagonal"  # the posterior family q* was refined in (ModelSpec.posterior's names)

    @property
    def converged_fraction(self) -> float:
        return float(np.mean(self.converged))

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        out = {
            name: getattr(self, name).to_dict(per_example)
            for name in ("log_px", "elbo_encoder", "elbo_refined", "approximation", "amortisation")
        }
        out["refinement"] = {
            **self.config.to_dict(),
            "family": self.family,
            "converged_fraction": self.converged_fraction,
            "mean_steps": float(np.mean(self.steps_taken)),
            "criterion": (
                f"an example is converged when its ELBO ({self.config.check_samples} fixed draws) gains "
                f"less than {self.config.tol} nats over {self.config.check_every} Adam steps at step size "
                f"lr / 2**{self.config.halvings} (each such stall before that halves the step size)"
            ),
        }
        if per_example:
            out["refinement"]["converged_values"] = self.converged.tolist()
            out["refinement"]["steps_values"] = self.steps_taken.tolist()
        return out


@dataclass
class Evaluation:
    """What ``vaekit.evaluate`` measured. Means are properties of each ``Metric``; the
    per-example arrays are ``metric.values``."""

    n_examples: int
    data_dims: int
    latent_dim: int
    seed: int
    elbo: Metric
    log_px_z: Metric
    kl: Metric
    iwae: dict[int, Metric]
    log_px: Metric | None
    bits_per_dim: Metric | None
    kl_per_unit: np.ndarray | None  # (N, H), see ``unit_kl``; None where it is not defined
    posterior_mean_variance: np.ndarray  # (H,) Var over the data of E_q[z_j | x]
    active_threshold: float
    collapse_kl: float
    gaps: Gaps | None = None
    warnings: list[str] = field(default_factory=list)
    kl_per_unit_estimator: str = ""  # how kl_per_unit was computed, or why it is not defined

    @property
    def active_units(self) -> np.ndarray:
        """(H,) bool: Var_x(E_q[z_j | x]) > threshold (Burda et al. 2016)."""
        return self.posterior_mean_variance > self.active_threshold

    @property
    def n_active(self) -> int:
        return int(self.active_units.sum())

    @property
    def collapse(self) -> str:
        """'full' when the KL is near zero or no unit is active, 'partial' when most units are
        inactive, else 'none' (with one example, from the KL alone)."""
        counted = self.n_examples > 1  # active units need a variance over examples
        if self.kl.mean < self.collapse_kl or (counted and self.n_active == 0):
            return "full"
        if counted and self.n_active < self.latent_dim / 2:
            return "partial"
        return "none"

    @property
    def collapsed(self) -> bool:
        return self.collapse != "none"

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "units": "nats per example (bits_per_dim: bits per dimension)",
            "n_examples": self.n_examples,
            "data_dims": self.data_dims,
            "latent_dim": self.latent_dim,
            "seed": self.seed,
            "elbo": self.elbo.to_dict(per_example),
            "log_px_z": self.log_px_z.to_dict(per_example),
            "kl": self.kl.to_dict(per_example),
            "iwae": {str(k): m.to_dict(per_example) for k, m in self.iwae.items()},
        }
        if self.log_px is not None:
            out["log_px"] = self.log_px.to_dict(per_example)
        if self.bits_per_dim is not None:
            out["bits_per_dim"] = self.bits_per_dim.to_dict(per_example)
        out["kl_per_unit"] = {
            "defined": self.kl_per_unit is not None,
            "mean": None if self.kl_per_unit is None else self.kl_per_unit.mean(0).tolist(),
            "estimator": self.kl_per_unit_estimator,
        }
        counted = self.n_examples > 1  # a variance over the examples needs two of them
        out["active_units"] = {
            "count": self.n_active if counted else None,
            "of": self.latent_dim,
            "active": self.active_units.tolist() if counted else None,
            "posterior_mean_variance": self.posterior_mean_variance.tolist() if counted else None,
            "threshold": self.active_threshold,
            "criterion": f"unit j is active when Var_x(E_q[z_j|x]) > {self.active_threshold} (Burda et al. 2016)",
        }
        out["posterior_collapse"] = {
            "collapsed": self.collapsed,
            "kind": self.collapse,
            "criterion": (
                f"full: mean KL < {self.collapse_kl} nats or no active unit; partial: fewer than half the units active"
            ),
        }
        if self.gaps is not None:
            out["gaps"] = self.gaps.to_dict(per_example)
        out["warnings"] = list(self.warnings)
        return out


# -- the entry point ---------------------------------------------------------------------
def evaluate(
    model: Model,
    data,
    *,
    iw_samples: int = 1000,
    iwae_k: Iterable[int] = (5, 50),
    elbo_samples: int = 10,
    gaps: bool | GapConfig = False,
    bits_per_dim: bool | None = None,
    active_threshold: float = ACTIVE_THRESHOLD,
    collapse_kl: float = COLLAPSE_KL,
    seed: int = 0,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    c=None,
) -> Evaluation:
    """Evaluate ``model`` on ``data`` (a tensor, an array or a ``vaekit.datasets`` Dataset of
    shape (N, *data_shape)) on the model's device.

    ``iw_samples``: k of the importance-sampled log p(x) (0 skips it). ``iwae_k``: further IWAE_k
    bounds to report. ``elbo_samples``: draws of the ELBO's reconstruction term (its KL is in
    closed form). ``gaps``: True (or a ``GapConfig``) adds the inference-gap decomposition, which
    optimises q for every example and costs far more than the rest. ``bits_per_dim``: report
    -log p(x) / (D ln 2); None means "when the model's data are images (2 or more dims)".

    ``c``: a conditional model's conditions, (N,) class labels or (N, condition_dim); every number is
    then conditional on them (log p(x|c), KL(q(z|x, c) || p(z|c)), the gaps of log p(x|c)).

    The global torch random state is seeded with ``seed`` for the call and restored after it:
    the same model, data and seed give the same numbers on the same device.
    """
    if iw_samples < 0 or elbo_samples < 1:
        raise ValueError(f"iw_samples must be >= 0 and elbo_samples >= 1, got {iw_samples} and {elbo_samples}")
    ks = sorted({int(k) for k in iwae_k} - {int(iw_samples)})
    if any(k < 1 for k in ks):
        raise ValueError(f"IWAE k must be >= 1, got {list(iwae_k)}")
    gap_config = gaps if isinstance(gaps, GapConfig) else (GapConfig() if gaps else None)
    device, dtype = placement(model)
    x = _as_input(model, data, device, dtype)
    n = x.shape[0]
    if getattr(model, "condition_dim", 0) or c is not None:
        c = model.condition(None if c is None else torch.as_tensor(c, device=device), n)
        c = c.to(dtype)
    if bits_per_dim is None:
        bits_per_dim = len(model.data_shape or x.shape[1:]) >= 2

    devices = [device] if device.type == "cuda" else []
    with inference(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _measure(
            model,
            x,
            c,
            _Settings(
                iw_samples,
                ks,
                elbo_samples,
                gap_config,
                bits_per_dim,
                active_threshold,
                collapse_kl,
                seed,
                max_elements,
            ),
        )


@dataclass(frozen=True)
class _Settings:
    """What ``evaluate`` measures, checked, for ``_measure``."""

    iw_samples: int
    ks: tuple
    elbo_samples: int
    gap_config: Any
    bits_per_dim: bool
    active_threshold: float
    collapse_kl: float
    seed: int
    max_elements: int


def _cut(c, start: int, xb: torch.Tensor):
    return None if c is None else c[start : start + xb.shape[0]]


def _measure(model, x, c, settings: _Settings) -> Evaluation:
    n, h, d = x.shape[0], model.latent_dim, math.prod(x.shape[1:])
    pairs = max(1, settings.max_elements // elements_per_draw(model, x))
    with torch.no_grad():
        # the encoder alone: posterior means (active units) and the KL per unit
        locs, kl_units = [], []
        units_estimator = ""
        start = 0
        pz = model.p_z() if c is None else None
        batch = max(1, min(4096, pairs, settings.max_elements // (h * _mixture_size(pz))))
        for xb in iterate(x, batch):
            cb = _cut(c, start, xb)
            start += xb.shape[0]
            qz, pz = (model.q_z(xb), pz) if cb is None else (model.q_z(xb, cb), model.p_z(cb))
            closed_kl = kl_in_closed_form(qz, pz)
            locs.append(qz.mean)
            values, units_estimator = unit_kl(qz, pz, model, max_elements=settings.max_elements)
            kl_units.append(values)
        loc = torch.cat(locs)
        kl_units_np = None if kl_units[0] is None else _np(torch.cat(kl_units)).reshape(n, h)
        mean_var = _np(loc.double().var(0, unbiased=True)) if n > 1 else np.full(h, np.nan)

        closed = "closed-form KL" if closed_kl else "Monte Carlo KL (same draws)"
        draws = []
        start = 0
        for xb in iterate(x, max(1, pairs // settings.elbo_samples)):
            cb = _cut(c, start, xb)
            start += xb.shape[0]
            qz = model.q_z(xb) if cb is None else model.q_z(xb, cb)
            draws.append(_elbo_draws(model, xb, qz, qz.sample((settings.elbo_samples,)), cb))
        rec_draws = torch.cat([d[0] for d in draws], 1)  # (L, N)
        elbo_draws = torch.cat([d[1] for d in draws], 1)
        elbo = Metric(
            *_mean_se(
                elbo_draws,
                f"ELBO: {settings.elbo_samples}-sample Monte Carlo log p(x|z), {closed}",
                settings.elbo_samples,
            )
        )
        log_px_z = Metric(
            *_mean_se(rec_draws, f"E_q[log p(x|z)]: {settings.elbo_samples}-sample Monte Carlo", settings.elbo_samples)
        )
        if closed_kl:
            kl = Metric(_np((rec_draws - elbo_draws)[0]), "KL(q(z|x) || p(z)): closed form")
        else:
            kl = Metric(
                *_mean_se(
                    rec_draws - elbo_draws,
                    f"KL(q(z|x) || p(z)): {settings.elbo_samples}-sample Monte Carlo",
                    settings.elbo_samples,
                )
            )

        iwae = {}
        for k in settings.ks:
            lm = log_marginal(model, x, k=k, max_elements=settings.max_elements, c=c)
            iwae[k] = Metric(
                _np(lm.log_px), f"IWAE_{k} bound (Burda et al. 2016), one estimate of {k} draws", k, _np(lm.stderr)
            )
        log_px = None
        if settings.iw_samples:
            lm = log_marginal(model, x, k=settings.iw_samples, max_elements=settings.max_elements, c=c)
            log_px = Metric(
                _np(lm.log_px),
                (
                    "log p(x|c): importance sampling with q(z|x, c)"
                    if c is not None
                    else "log p(x): importance sampling with q(z|x)"
                )
                + f" as proposal, k={settings.iw_samples} "
                "(IWAE_k, a lower bound in expectation; delta-method standard error)",
                settings.iw_samples,
                _np(lm.stderr),
            )

    bpd = None
    if settings.bits_per_dim:
        if log_px is not None:
            source, name = log_px, "log p(x)"
        elif settings.ks:
            source, name = iwae[max(settings.ks)], f"IWAE_{max(settings.ks)}"
        else:
            source, name = elbo, "ELBO"
        bpd = Metric(
            -source.values / (d * math.log(2)),
            f"bits per dimension: -{name} / (D ln 2), D={d}" + ("" if source is log_px else " (an upper bound)"),
            source.samples,
            None if source.mc_stderr is None else source.mc_stderr / (d * math.log(2)),
        )

    gaps = None
    if settings.gap_config is not None:
        gaps = inference_gaps(model, x, settings.gap_config, settings.iw_samples or 1000, settings.max_elements, c=c)

    result = Evaluation(
        n_examples=n,
        data_dims=d,
        latent_dim=h,
        seed=settings.seed,
        elbo=elbo,
        log_px_z=log_px_z,
        kl=kl,
        iwae=iwae,
        log_px=log_px,
        bits_per_dim=bpd,
        kl_per_unit=kl_units_np,
        kl_per_unit_estimator=units_estimator,
        posterior_mean_variance=mean_var,
        active_threshold=float(settings.active_threshold),
        collapse_kl=float(settings.collapse_kl),
        gaps=gaps,
    )
    result.warnings.extend(_warnings(result))
    return result


def _warnings(r: Evaluation) -> list[str]:
    out = []
    if r.collapse == "full":
        out.append(
            f"posterior collapse: mean KL {r.kl.mean:.3g} nats, {r.n_active} of {r.latent_dim} units active; "
            "the decoder ignores z (try KL warm-up, free bits, a smaller beta or a weaker decoder)"
        )
    elif r.collapse == "partial":
        out.append(
            f"partial posterior collapse: only {r.n_active} of {r.latent_dim} latent units are active "
            f"(Var_x E_q[z_j] > {r.active_threshold})"
        )
    if r.n_examples < 2:
        out.append("active units need at least 2 examples; none can be counted from 1")
    if r.log_px is not None and r.log_px.mean_mc_stderr is not None and np.max(r.log_px.mc_stderr) > 1.0:
        worst = int(np.sum(r.log_px.mc_stderr > 1.0))
        out.append(
            f"log p(x) has a standard error above 1 nat for {worst} example(s); raise the number of importance samples"
        )
    if r.gaps is not None and r.gaps.converged_fraction < 1:
        out.append(
            f"q* refinement converged for {100 * r.gaps.converged_fraction:.0f}% of the examples; the "
            "others are counted at their best so far (raise the steps): the amortisation gap is then a "
            "lower bound"
        )
    return out


# -- the inference gaps ------------------------------------------------------------------
def inference_gaps(
    model: Model,
    x: torch.Tensor,
    config: GapConfig | None = None,
    iw_samples: int = 1000,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    c: torch.Tensor | None = None,
) -> Gaps:
    """Cremer et al. (2018): refine q for every example within the model's own posterior family
    (batched over examples; see ``GapConfig``), then approximation gap = log p(x) - L[q*] and
    amortisation gap = L[q*] - L[q_enc].

    q* is the family's distribution at the encoder output h optimised per example
    (``posterior(h*)``): a diagonal Gaussian's mean and log-scale, a full-covariance Gaussian's mean
    and Cholesky factor, an IAF's base Gaussian and context (its step networks as trained), a
    two-layer q(z1|x) (q(z2|z1) as trained). A model whose ``q_z`` is its own is refined as the
    diagonal Gaussian of its q's moments. log p(x) is importance-sampled with an equal mixture of
    q*, the model's own q(z|x) and a diagonal Gaussian at q*'s moments with twice its scale (each with
    an exact density, so the mixture's density is exact). ``c``: a conditional model's conditions
    (N, condition_dim) or (N,) labels; every quantity is then given c (log p(x|c)).
    Uses the global random state; ``evaluate`` seeds it."""
    config = config or GapConfig()
    n = x.shape[0]
    if c is not None or getattr(model, "condition_dim", 0):
        c = model.condition(None if c is None else torch.as_tensor(c, device=x.device), n).to(x.dtype)
    family, h0 = _family(model, x, c)
    per_draw = elements_per_draw(model, x)
    # a gradient step keeps about as much again as its forward pass for the backward one
    batch = max(1, min(n, max_elements // (per_draw * max(2 * config.samples, config.check_samples))))
    fit = [
        _refine(model, family, x[s : s + batch], h0[s : s + batch], config, _cut(c, s, x[s : s + batch]))
        for s in range(0, n, batch)
    ]
    h_star = torch.cat([f[0] for f in fit])
    converged = np.concatenate([f[1] for f in fit])
    steps = np.concatenate([f[2] for f in fit])

    with torch.no_grad():
        enc_draws, ref_draws, wide = [], [], []
        final_batch = max(1, max_elements // (per_draw * config.final_samples))
        for s in range(0, n, final_batch):
            xb = x[s : s + final_batch]
            cb = _cut(c, s, xb)
            # common random numbers: the same draws for both q's make their difference precise
            eps = torch.randn(config.final_samples, xb.shape[0], model.latent_dim, device=x.device, dtype=h0.dtype)
            # L[q_enc] is the ELBO of the model's own q (full covariance, a flow, two layers)
            q_enc = _q(model, xb, cb)
            enc_draws.append(_elbo_draws(model, xb, q_enc, draw(q_enc, noise=eps)[0], cb)[1])
            q_star = family(h_star[s : s + final_batch])
            ref_draws.append(_elbo_draws(model, xb, q_star, draw(q_star, noise=eps)[0], cb)[1])
            wide.append((q_star.mean, 2 * q_star.stddev))
        enc_draws, ref_draws = torch.cat(enc_draws, 1), torch.cat(ref_draws, 1)  # (S, N)
        wide_loc, wide_scale = torch.cat([w[0] for w in wide]), torch.cat([w[1] for w in wide])
        # q* alone can be a poor proposal: the best diagonal Gaussian is narrower than a correlated
        # posterior, and its importance weights are then heavy-tailed. A defensive mixture
        # (Hesterberg 1995) with the model's own q and a doubly wide Gaussian keeps them bounded.
        mixture = [
            lambda a, b: family(h_star[a:b]),
            lambda a, b: _q(model, x[a:b], _cut(c, a, x[a:b])),
            (wide_loc, wide_scale),
        ]
        lm = log_marginal(model, x, k=max(iw_samples, 3), max_elements=max_elements, proposal=mixture, c=c)
    fs = config.final_samples
    given = "|c" if c is not None else ""
    log_px = Metric(
        _np(lm.log_px),
        f"log p(x{given}): importance sampling, k={lm.k} split evenly over the proposals q* ({family.family}), "
        f"the model's own q(z|x{', c' if c is not None else ''}) ({_own_family(model)}) and a diagonal Gaussian at "
        "q*'s moments with doubled scale (weights by the mixture density)",
        lm.k,
        _np(lm.stderr),
    )
    elbo_enc = Metric(*_mean_se(enc_draws, f"L[q_enc]: ELBO of the encoder's q, {fs}-sample Monte Carlo", fs))
    elbo_ref = Metric(
        *_mean_se(
            ref_draws,
            f"L[q*]: ELBO of the per-example optimised {family.refined}, "
            f"{fs}-sample Monte Carlo (the draws of L[q_enc])",
            fs,
        )
    )
    return Gaps(
        log_px=log_px,
        elbo_encoder=elbo_enc,
        elbo_refined=elbo_ref,
        approximation=Metric(
            log_px.values - elbo_ref.values,
            f"approximation gap: log p(x{given}) - L[q*], q* the best {family.family} q per example",
            None,
            None if elbo_ref.mc_stderr is None else np.sqrt(log_px.mc_stderr**2 + elbo_ref.mc_stderr**2),
        ),
        # paired draws: the standard error of the difference, not of each term
        amortisation=Metric(*_mean_se(ref_draws - enc_draws, "amortisation gap: L[q*] - L[q_enc]", fs)),
        converged=converged,
        steps_taken=steps,
        config=config,
        family=family.family,
    )


def _q(model: Model, x: torch.Tensor, c=None):
    return model.q_z(x) if c is None else model.q_z(x, c)


def _own_family(model: Model) -> str:
    own = type(model).q_z is Model.q_z
    return getattr(getattr(model, "posterior", None), "family", None) if own else type(model).__name__ + ".q_z"


def _family(model: Model, x: torch.Tensor, c=None):
    """The posterior family to refine in and the encoder's output h (N, n_params) that starts it: the
    model's own (q_z(x) = posterior(h)), or for a model with a ``q_z`` of its own, the diagonal
    Gaussian of its q's moments."""
    with torch.no_grad():
        if type(model).q_z is Model.q_z and isinstance(getattr(model, "posterior", None), Diagonal):
            return model.posterior, model.posterior_params(x, c)
        qz = _q(model, x, c)
        return Diagonal(model.latent_dim), torch.cat([qz.mean, qz.stddev.log()], -1)


def _elbo_draws(model: Model, x: torch.Tensor, qz, z: torch.Tensor, c=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per draw z_s ~ q (S, B, H): log p(x|z_s) and the single-draw ELBO log p(x|z_s) - KL, each (S, B).
    The KL is in closed form when torch has it, else log q(z_s|x) - log p(z_s). ``c``: a conditional
    model's conditions (B, condition_dim): log p(x|z_s, c) and p(z|c)."""
    prior = model.p_z() if c is None else model.p_z(c)
    log_px_z = (model.p_x(z) if c is None else model.p_x(z, c)).log_prob(x)  # (S, B)
    try:
        kl = kl_divergence(qz, prior)  # (B,)
    except NotImplementedError:
        kl = qz.log_prob(z) - prior.log_prob(z)  # (S, B)
    return log_px_z, log_px_z - kl


def _elbo_with(model: Model, family, x: torch.Tensor, h: torch.Tensor, eps: torch.Tensor, c=None) -> torch.Tensor:
    """ELBO of q = family(h) per example with the standard-normal draws ``eps`` (S, B, H) behind z."""
    q = family(h)
    return _elbo_draws(model, x, q, draw(q, noise=eps)[0], c)[1].mean(0)


def _mean_se(draws: torch.Tensor, estimator: str, samples: int) -> tuple:
    """Metric fields from per-draw values (S, N): the mean over draws and its standard error."""
    s = draws.shape[0]
    if s < 2:  # one draw has no spread to estimate an error from
        return _np(draws.double().mean(0)), estimator, samples, None
    se = draws.double().std(0, unbiased=True) / math.sqrt(s)
    return _np(draws.double().mean(0)), estimator, samples, _np(se)


def _refine(model, family, x, h0, cfg: GapConfig, c=None):
    """Per-example Adam on the posterior's parameters h with per-example step sizes: returns the
    best h found, whether each example converged, and the steps it took."""
    b, h = h0.shape[0], model.latent_dim
    params = h0.detach().clone().requires_grad_(True)
    check_eps = torch.randn(cfg.check_samples, b, h, device=x.device, dtype=h0.dtype)

    def check() -> torch.Tensor:
        with torch.no_grad():
            return _elbo_with(model, family, x, params, check_eps, c)

    best = check()
    best_params = params.detach().clone()
    lr = torch.full((b, 1), cfg.lr, device=x.device, dtype=h0.dtype)
    halvings = torch.zeros(b, dtype=torch.long, device=x.device)
    running = torch.ones(b, dtype=torch.bool, device=x.device)
    steps = torch.zeros(b, dtype=torch.long, device=x.device)
    last_check = best.clone()
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    for step in range(1, cfg.steps + 1):
        if not bool(running.any()):
            break
        eps = torch.randn(cfg.samples, b, h, device=x.device, dtype=h0.dtype)
        with torch.enable_grad():
            value = _elbo_with(model, family, x, params, eps, c)
            (grad,) = torch.autograd.grad(-value.sum(), [params])
        with torch.no_grad():
            mask = running.unsqueeze(1).to(params.dtype)
            m.mul_(beta1).add_((1 - beta1) * grad)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            update = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + adam_eps)
            params.sub_(mask * lr * update)
            steps += running.long()
            if step % cfg.check_every == 0:
                now = check()
                better = now > best
                best = torch.where(better, now, best)
                best_params[better] = params[better]
                stalled = running & (best - last_check < cfg.tol)
                last_check = best.clone()
                # a stalled example restarts from its best with half the step size
                lr[stalled] /= 2
                halvings += stalled.long()
                params[stalled] = best_params[stalled]
                running &= ~(stalled & (halvings > cfg.halvings))
    with torch.no_grad():
        now = check()
        better = now > best
        best_params[better] = params[better]
    converged = ~running
    return best_params, converged.cpu().numpy(), steps.cpu().numpy()


# -- helpers -----------------------------------------------------------------------------
def _as_input(model: Model, data, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The data as one tensor on the model's device, in the model's dtype (float64 for the
    scikit-learn estimator's model)."""
    x = getattr(data, "x", data)  # a vaekit Dataset or an array / tensor
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device=device, dtype=dtype)
    else:
        try:
            x = torch.as_tensor(np.asarray(x, dtype=torch.empty((), dtype=dtype).numpy().dtype), device=device)
        except (TypeError, ValueError):
            raise TypeError(
                f"evaluate needs an array, a tensor or a vaekit Dataset, got {type(data).__name__}"
            ) from None
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"evaluate needs a non-empty batch of shape (N, *data_shape), got shape {tuple(x.shape)}")
    shape = model.data_shape
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"the data have shape {tuple(x.shape[1:])} per example, but the model takes {tuple(shape)}")
    model.likelihood.validate(x)
    return x


def kl_in_closed_form(qz, prior) -> bool:
    """Whether torch has KL(q || p) in closed form (else the bounds take it by Monte Carlo)."""
    q = qz.base_dist if isinstance(qz, Independent) else qz
    p = prior.base_dist if isinstance(prior, Independent) else prior
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()
