"""The figures of a model and of a run folder: which ones apply, drawing them, writing ``figures/*.png``.

The functions here that take a ``Model`` (``overview_2d``, ``samples``, ``manifold``, ``traversal``,
``interpolation``) compute what to draw with it (codes, decoded grids, prior samples) and hand the
arrays to ``vaekit.plots``, which only draws. Latent units are numbered from 1 in titles; the
``units`` and ``dims`` arguments are array indices (unit 1 is index 0).

Used by ``vaekit plot``, ``vaekit report`` and at the end of ``vaekit train``. Maps, grids and
samples are drawn from the run's training split (at most ``MAX_POINTS`` examples, a fixed
subset); reconstructions and interpolations from its held-out test split (the validation or
training split when there is no test split). Randomness (prior samples, posterior draws,
subsets, t-SNE) is seeded, so the same run always gives the same pictures.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import generate, plots, runs
from .data import Dataset
from .model import Model

MAX_POINTS = 2000
SEED = 0
MANIFOLD_STEPS = 15
CLASS_PANELS = 4  # a conditional run's manifold and traversal: one panel for each of the most frequent few classes
TSNE_POINTS = 1000  # examples in the t-SNE map (plots.tsne: its exact gradient, no extra needed)


@dataclass
class RunView:
    """A run with the arrays its figures need, prepared once."""

    run: runs.Run
    fit: Dataset  # training examples (subset) for maps and scatter plots
    held_out: Dataset  # examples the model was not trained on, for reconstructions
    image_shape: tuple[int, ...] | None
    value_range: tuple[float, float]
    colour: np.ndarray | None
    colour_name: str | None
    kl: np.ndarray | None = None  # KL per latent unit on the held-out examples, once computed
    ranking: tuple[np.ndarray, str] | None = None  # _unit_ranking's scores and their name, once computed

    @property
    def model(self):
        return self.run.model

    @property
    def is_2d(self) -> bool:
        return self.image_shape is None and tuple(self.model.data_shape or ()) == (2,)

    @property
    def labels(self):
        return self.fit.labels


def _subset(data: Dataset, n: int, seed: int = SEED) -> Dataset:
    """At most ``n`` examples, in memory (a streamed array on disk is read for those rows only)."""
    if len(data) > n:
        data = data.subset(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))
    if not isinstance(data.x, np.ndarray):
        data.x = np.asarray(data.x)
    return data


def image_shape_of(run: runs.Run, data: Dataset | None = None) -> tuple[int, ...] | None:
    """How to show one example as a picture: the recorded image shape, or the model's data shape
    when that already has two or three dimensions; None for flat vectors."""
    shape = (data.image_shape if data is not None else None) or run.config.get("data", {}).get("image_shape")
    data_shape = tuple(run.model.data_shape or ())
    if shape:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) == math.prod(data_shape):
            return shape
    if len(data_shape) in (2, 3):
        return data_shape
    return None


def view(run: runs.Run) -> RunView:
    fit = runs.read_input(run, None, which="train")
    held_out = fit
    for which in ("test", "val"):
        part = runs.read_input(run, None, which=which)
        if len(part):
            held_out = part
            break
    fit, held_out = _subset(fit, MAX_POINTS), _subset(held_out, MAX_POINTS)
    colour, colour_name = None, None
    for key, values in fit.extra.items():  # a known continuous value per example, e.g. the sine's phase
        if np.ndim(values) == 1 and len(values) == len(fit):
            colour, colour_name = np.asarray(values), ("true phase" if key == "phase" else key)
            break
    x = fit.x
    return RunView(
        run=run,
        fit=fit,
        held_out=held_out,
        image_shape=image_shape_of(run, fit),
        value_range=(float(np.min(x)), float(np.max(x))),
        colour=colour,
        colour_name=colour_name,
    )


# -- figures of a model: compute with it, then draw -----------------------------------------
def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


def overview_2d(
    model: Model,
    x,
    history: Sequence[dict[str, Any]] | None = None,
    *,
    labels=None,
    colour=None,
    colour_name: str = "true phase",
    n_samples: int = 500,
    seed: int = 0,
    c=None,
    groups: Sequence[tuple[str, Any]] | None = None,
):
    """``plots.overview_2d`` for a model of 2-D data: its encoder means of ``x`` and the decoder
    means of ``n_samples`` prior draws z ~ p(z) (seeded). A conditional model: ``c``, the
    conditions of ``x`` (encoded under them), and ``groups``, (name, condition) pairs: the prior
    samples are split evenly over them, z ~ p(z|c) decoded under c, coloured by group."""
    x = plots._check_2d(x)
    mean, _ = generate.encode(model, torch.as_tensor(x, dtype=torch.float32), c=c)
    if groups:
        per = -(-int(n_samples) // len(groups))
        decoded, names = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, cond in groups:
                z = generate.prior_draws(model, per, c=cond)
                decoded.append(generate.decode(model, z, c=cond).numpy().reshape(per, -1))
                names += [name] * per
        prior = "$z\\sim p(z|c)$" if getattr(model, "conditional_prior", False) else "$z\\sim\\mathcal{N}(0,I)$"
        return plots.overview_2d(
            x,
            mean.numpy(),
            np.concatenate(decoded),
            None,
            history,
            labels=labels,
            colour=colour,
            colour_name=colour_name,
            sample_labels=np.asarray(names),
            prior=prior,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = model.p_z().sample((int(n_samples),)).to(_device(model))
    decoded = generate.decode(model, z).numpy().reshape(len(z), -1)
    return plots.overview_2d(
        x, mean.numpy(), decoded, z[:, 0].cpu().numpy(), history, labels=labels, colour=colour, colour_name=colour_name
    )


def samples(
    model: Model,
    n: int = 64,
    *,
    image_shape: Sequence[int] | None = None,
    data=None,
    how: str = "mean",
    value_range: tuple[float, float] | None = None,
    seed: int = 0,
):
    """Decoded prior samples (seeded): an image grid (``image_shape``), or for 2-D data the samples over the data."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = model.p_z().sample((int(n),))
        x_new = generate.decode(model, z, how=how).numpy()
        z = z.cpu()
    what = {"mean": "decoded means", "draw": "draws from p(x|z)", "mode": "most probable values"}[how]
    if image_shape is not None:
        return plots.image_grid(x_new, image_shape, value_range=value_range, title=f"{n} samples: z ~ p(z), {what}")
    return plots.points_over_data(
        x_new.reshape(len(x_new), -1),
        data,
        colour=z[:, 0].numpy(),
        colour_name="$z_1$",
        title=f"{n} samples: z ~ p(z), {what}",
    )


def class_samples(
    model: Model,
    per_class: int = 8,
    *,
    image_shape: Sequence[int],
    how: str = "mean",
    value_range: tuple[float, float] | None = None,
    seed: int = 0,
):
    """A conditional model's samples as an image grid with one row per class k: z ~ p(z|c=k), decoded under c=k (seeded)."""
    k = int(model.condition_dim)
    labels = torch.arange(k).repeat_interleave(int(per_class))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = generate.prior_draws(model, len(labels), c=labels)
        x_new = generate.decode(model, z, how=how, c=labels).numpy()
    what = {"mean": "decoded means", "draw": "draws from p(x|z, c)", "mode": "most probable values"}[how]
    prior = "p(z|c)" if getattr(model, "conditional_prior", False) else "p(z)"
    return plots.image_grid(
        x_new,
        image_shape,
        ncols=int(per_class),
        value_range=value_range,
        title=f"row k: {per_class} samples of class k (top row k=0), z ~ {prior}, {what}",
    )


def most_informative(kl, n: int) -> list[int]:
    """Indices of the ``n`` latent units with the largest KL per unit, largest first (ties: lower index)."""
    kl = np.asarray(kl, dtype=np.float64).ravel()
    return [int(u) for u in np.argsort(-kl, kind="stable")[:n]]


def manifold(
    model: Model,
    *,
    steps: int = 15,
    dims: tuple[int, int] | None = None,
    kl=None,
    ranked_by: str = "the most KL",
    image_shape: Sequence[int] | None = None,
    data=None,
    low: float = 0.05,
    high: float = 0.95,
    value_range: tuple[float, float] | None = None,
    c=None,
):
    """Decoder means on a ``steps`` x ``steps`` grid through the prior's quantiles in two latent units
    (``dims``, array indices), the other units at 0, the prior's mean. Without ``dims``: units 1 and 2
    of a 2-D latent; above two dimensions the two units with the largest KL per unit ``kl`` (H,),
    which is then required. A 1-D latent gives one row (a curve for 2-D data). ``c``: a conditional
    model's condition to decode under (a class label or a condition vector)."""
    h = model.latent_dim
    chosen_by = ""
    if dims is None and h > 2:
        if kl is None:
            raise ValueError(
                f"this latent has {h} units: give dims=(i, j), the two to move, or kl, "
                "the KL per unit, to move the two most informative"
            )
        if len(np.ravel(kl)) != h:
            raise ValueError(f"kl has {len(np.ravel(kl))} values but the latent has {h} units")
        dims = tuple(sorted(most_informative(kl, 2)))
        chosen_by = f", the two units with {ranked_by},"
    dims = (0, 1) if dims is None else (int(dims[0]), int(dims[1]))
    grid = generate.quantile_grid(h, steps, dims, low, high)  # (R, C, H)
    decoded = generate.decode(model, grid.to(_device(model)), c=c).numpy()  # (R, C, *data_shape)
    values = generate.prior_quantiles(steps, low, high).numpy()
    return plots.manifold_figure(
        decoded,
        values,
        dims=dims if h > 1 else None,
        latent_dim=h,
        image_shape=image_shape,
        data=data,
        quantiles=(low, high),
        value_range=value_range,
        chosen_by=chosen_by,
    )


def traversal(
    model: Model,
    *,
    base=None,
    units: Sequence[int] | None = None,
    steps: int = 9,
    low: float = 0.05,
    high: float = 0.95,
    image_shape: Sequence[int] | None = None,
    data=None,
    value_range: tuple[float, float] | None = None,
    how: str = "mean",
    c=None,
):
    """Latent traversals: each unit in ``units`` (array indices; default all, at most 10) moved through
    the prior's quantiles with the others fixed at ``base`` (default 0), decoded. Images: one row per
    unit; 2-D data: one curve per unit over the data. ``c``: a conditional model's condition to decode under."""
    units = list(range(min(model.latent_dim, 10))) if units is None else [int(u) for u in units]
    base = torch.zeros(model.latent_dim) if base is None else torch.as_tensor(np.asarray(base), dtype=torch.float32)
    values = generate.prior_quantiles(steps, low, high)
    z = generate.traverse(base, units, values)  # (U, S, H)
    decoded = generate.decode(model, z.to(_device(model)), how=how, c=c).numpy()
    return plots.traversal_figure(
        decoded,
        units,
        values.numpy(),
        image_shape=image_shape,
        data=data,
        value_range=value_range,
        at_zero=not bool(base.abs().sum()),
        quantiles=(low, high),
    )


def interpolation(
    model: Model,
    x_from,
    x_to,
    *,
    steps: int = 8,
    image_shape: Sequence[int] | None = None,
    data=None,
    value_range: tuple[float, float] | None = None,
    how: str = "mean",
    c=None,
    pair_labels: Sequence[str] | None = None,
):
    """Decoded points along straight lines between the encoder means of ``x_from[i]`` and ``x_to[i]``.
    Images: one row per pair, the originals at both ends; 2-D data: paths over the data. ``c``: a
    conditional model's condition of each pair ((P,) labels or (P, condition_dim)): both ends are
    encoded and the line decoded under it. ``pair_labels`` name the rows (default "pair i")."""
    a = torch.as_tensor(np.asarray(x_from), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(x_to), dtype=torch.float32)
    if a.shape != b.shape:
        raise ValueError(f"interpolation ends differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    za, _ = generate.encode(model, a, c=c)
    zb, _ = generate.encode(model, b, c=c)
    z = generate.interpolate(za, zb, steps).transpose(0, 1)  # (P, S, H)
    cond = None
    if c is not None:  # the pair's condition for each of its steps
        c = torch.as_tensor(np.asarray(c))
        cond = c[:, None].expand(-1, steps, *c.shape[1:]) if c.dim() == 2 else c[:, None].expand(-1, steps)
    decoded = generate.decode(model, z.to(_device(model)), how=how, c=cond).numpy()
    return plots.interpolation_figure(
        a.numpy(),
        b.numpy(),
        decoded,
        image_shape=image_shape,
        data=data,
        value_range=value_range,
        pair_labels=pair_labels,
    )


# -- the kinds of figure -----------------------------------------------------------------------
@dataclass
class Kind:
    description: str
    make: Callable[[RunView], Any]
    needs: Callable[[RunView], str | None]  # None when it can be drawn, else why not
    default: Callable[[RunView], bool] = lambda v: True  # drawn by plain 'vaekit plot' / train


def _needs_history(v: RunView):
    return None if len(v.run.history) else "the run has no training history yet"


def _needs_2d(v: RunView):
    return None if v.is_2d else f"it needs 2-D data (this run's examples have shape {tuple(v.model.data_shape or ())})"


def _needs_images(v: RunView):
    return None if v.image_shape is not None else "it needs image data (this run's examples are flat vectors)"


def _needs_images_or_2d(v: RunView):
    return (
        None
        if v.image_shape is not None or v.is_2d
        else (f"it needs image or 2-D data (this run's examples have shape {tuple(v.model.data_shape or ())})")
    )


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _make_overview(v: RunView):
    conditional = _conditional(v)
    return overview_2d(
        v.model,
        v.fit.x,
        v.run.history,
        labels=_point_labels(v),
        colour=v.colour,
        colour_name=v.colour_name or "value",
        seed=SEED,
        c=runs.conditions(v.run, v.fit, "the training rows") if conditional else None,
        groups=_groups(v, 10) if conditional else None,
    )


def _groups(v: RunView, limit: int) -> list[tuple[str, Any]]:
    """A conditional run's most frequent classes in the training rows (at most ``limit``), each as
    (name, condition): a class label, or for a run on table covariates a combination of its
    categorical and binary covariates (numeric ones at their training mean), as a condition vector."""
    if v.run.condition_kind == "label":
        counts = np.bincount(runs.class_labels(v.fit), minlength=int(v.model.condition_dim))
        order = np.argsort(-counts, kind="stable")[: int(limit)]
        return [(f"class {k}", int(k)) for k in sorted(int(k) for k in order if counts[k] > 0)]
    cov = v.run.covariates
    kinds = {c["name"]: c for c in cov.schema.columns}
    levels = [n for n in cov.names if kinds[n]["kind"] != "numeric"]
    frame = v.fit.covariates
    combos = frame.groupby(levels, sort=True).size().sort_values(ascending=False, kind="stable") if levels else None
    rows = []
    for key in [] if combos is None else list(combos.index[: int(limit)]):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(levels, key)))
    if not rows:
        rows = [{}]
    out = []
    for row in rows:
        full = {n: row.get(n, kinds[n].get("mean")) for n in cov.names}
        import pandas as pd

        c = cov.encode(pd.DataFrame([full]), "the covariates")[0]
        name = ", ".join(f"{n}={row[n]}" for n in levels) or "covariates"
        means = [n for n in cov.names if n not in levels]
        out.append((name + (f" ({', '.join(means)} at the mean)" if means and rows != [{}] else ""), c))
    return out


def _point_labels(v: RunView) -> np.ndarray | None:
    """What the training rows' points are coloured by: their class labels, or for a run on table
    covariates each row's combination of categorical covariates."""
    if _conditional(v) and v.run.condition_kind == "columns":
        return _group_codes(v, v.fit)
    return v.labels


def _group_codes(v: RunView, data: Dataset) -> np.ndarray | None:
    """For a run on table covariates: each row's combination of categorical covariates, as text (for colours)."""
    cov = v.run.covariates
    levels = [c["name"] for c in cov.schema.columns if c["kind"] != "numeric"]
    if not levels or data.covariates is None:
        return None
    return np.asarray([", ".join(f"{n}={r[n]}" for n in levels) for _, r in data.covariates.iterrows()])


def _drawn_as(v: RunView) -> dict[str, Any]:
    """How a run's decoded examples are drawn: as images of its shape, else over its data, in its value range."""
    return {"image_shape": v.image_shape, "data": None if v.image_shape else v.fit.x, "value_range": v.value_range}


def _conditional(v: RunView) -> bool:
    return bool(getattr(v.model, "condition_dim", 0))


def _held_out_c(v: RunView, n: int | None = None):
    """The conditions of the held-out examples shown (a conditional run's labels or covariates), or None."""
    if not _conditional(v):
        return None
    return runs.conditions(v.run, v.held_out, "the held-out rows")[:n]


def _make_samples(v: RunView):
    if _conditional(v) and v.image_shape is not None:
        return class_samples(v.model, 8, image_shape=v.image_shape, value_range=v.value_range, seed=SEED)
    return samples(
        v.model,
        64,
        **_drawn_as(v),
        seed=SEED,
    )


def _make_reconstructions(v: RunView):
    x = _tensor(v.held_out.x[:32])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        rec = generate.reconstruct(v.model, x, c=_held_out_c(v, 32))
    return plots.reconstruction_grid(x.numpy(), rec.numpy(), v.image_shape, ncols=8, value_range=v.value_range)


def _make_manifold(v: RunView):
    # above two units: the two that carry the most
    scores, ranked_by = _unit_ranking(v) if v.model.latent_dim > 2 else (None, "")

    def one(c=None, steps=MANIFOLD_STEPS):
        return manifold(
            v.model,
            steps=steps,
            kl=scores,
            ranked_by=ranked_by,
            **_drawn_as(v),
            c=c,
        )

    if not _conditional(v):
        return one()
    return _per_group(v, lambda c: one(c, steps=min(MANIFOLD_STEPS, 9)), "Decoded latent grid")


def _per_group(v: RunView, draw, what: str):
    """One panel per class (the most frequent ``CLASS_PANELS``): ``draw(c)`` decoded under each."""
    groups = _groups(v, CLASS_PANELS)
    prior = "z on the prior p(z|c)'s" if getattr(v.model, "conditional_prior", False) else "z"
    shown = f"the {len(groups)} most frequent classes" if v.run.condition_kind == "label" else "covariate groups"
    return plots.class_panels(
        [draw(c) for _, c in groups],
        [f"decoded under {name}" for name, _ in groups],
        title=f"{what} per class ({shown}; {prior} the same in every panel)",
        ncols=2 if len(groups) == 4 else None,
    )


def _make_latent(v: RunView):
    c = runs.conditions(v.run, v.fit, "the training rows") if _conditional(v) else None
    z, _ = generate.encode(v.model, _tensor(v.fit.x), c=c)
    return plots.latent_map(
        z.numpy(),
        labels=_point_labels(v),
        colour=v.colour,
        colour_name=v.colour_name or "value",
        method="tsne",
        max_points=TSNE_POINTS,
        seed=SEED,
    )


def _kl(v: RunView) -> np.ndarray:
    if v.kl is None:  # shared by kl_units, manifold and traversal: computed once per view
        v.kl = generate.kl_per_unit(v.model, _tensor(v.held_out.x), c=_held_out_c(v)).numpy()
    return v.kl


def _unit_ranking(v: RunView) -> tuple[np.ndarray, str]:
    """Scores that rank the latent units by how much they carry, and what they are: the KL per unit
    where it is defined, else (an IAF, two layers) the activity Var_x E_q[z_j|x] over the held-out
    examples (Burda et al. 2016), which is defined for every family."""
    if v.ranking is None:  # shared by manifold and traversal
        kl = _kl(v)
        if np.isfinite(kl).all():
            v.ranking = kl, "the most KL"
        else:
            mean, _ = generate.encode(v.model, _tensor(v.held_out.x), c=_held_out_c(v))
            v.ranking = mean.double().var(0).numpy(), "the largest Var_x E_q[z_j|x]"
    return v.ranking


def _kl_undefined(v: RunView) -> str | None:
    """Why the KL per unit is not defined for this run's families (an IAF, two layers), else None."""
    return generate.kl_per_unit_defined(v.model, v.held_out.x, c=_held_out_c(v, 1))


def _make_kl_units(v: RunView):
    adds_up = generate.kl_per_unit_adds_up(v.model, v.held_out.x, c=_held_out_c(v, 1))
    return plots.kl_units(_kl(v), adds_up=adds_up)


def _make_traversal(v: RunView):
    units = most_informative(_unit_ranking(v)[0], 10)  # the most informative units first

    def one(c=None, units=units):
        return traversal(
            v.model,
            units=units,
            **_drawn_as(v),
            c=c,
        )

    if not _conditional(v):
        return one()
    return _per_group(v, lambda c: one(c, units[:5]), "Latent traversals")


def _make_interpolation(v: RunView):
    x = v.held_out.x
    pairs = min(4, len(x) // 2) if len(x) >= 2 else 0
    if pairs == 0:
        raise ValueError("an interpolation needs at least two held-out examples")
    if _conditional(v):
        return _class_interpolation(v)
    if v.labels is not None and v.held_out.labels is not None:  # prefer pairs of different classes
        lab = v.held_out.labels
        chosen, used = [], set()
        for i in range(len(x)):
            if i in used:
                continue
            j = next((j for j in range(i + 1, len(x)) if j not in used and lab[j] != lab[i]), None)
            if j is not None:
                chosen.append((i, j))
                used |= {i, j}
            if len(chosen) == pairs:
                break
        a, b = [p[0] for p in chosen], [p[1] for p in chosen]
    else:
        a, b = list(range(pairs)), list(range(pairs, 2 * pairs))
    return interpolation(
        v.model,
        x[a],
        x[b],
        steps=8,
        **_drawn_as(v),
    )


def _class_interpolation(v: RunView):
    """A conditional run: one row (image data) or path (2-D data) per class, between two held-out
    examples of that class, both encoded and the line decoded under its condition."""
    x = v.held_out.x
    c = runs.conditions(v.run, v.held_out, "the held-out rows")
    if v.run.condition_kind == "label":
        keys = np.asarray(c)
        names = {k: f"class {k}" for k in np.unique(keys)}
    else:
        keys = _group_codes(v, v.held_out)
        keys = np.zeros(len(x), dtype=np.int64) if keys is None else keys
        names = {k: str(k) for k in np.unique(keys)}
    a, b, labels = [], [], []
    for k in sorted(names, key=lambda k: -int(np.sum(keys == k)))[:10]:  # the most frequent, at most 10
        rows = np.flatnonzero(keys == k)
        if len(rows) >= 2:
            a.append(rows[0])
            b.append(rows[1])
            labels.append(names[k])
    if not a:
        raise ValueError("an interpolation per class needs two held-out examples of one class")
    order = np.argsort(labels, kind="stable")
    a, b, labels = [a[i] for i in order], [b[i] for i in order], [labels[i] for i in order]
    return interpolation(
        v.model,
        x[a],
        x[b],
        steps=8,
        **_drawn_as(v),
        c=c[a],
        pair_labels=labels,
    )


KINDS: dict[str, Kind] = {
    "curves": Kind(
        "ELBO, reconstruction and KL per epoch, train and validation",
        lambda v: plots.training_curves(v.run.history),
        _needs_history,
    ),
    "overview": Kind(
        "the seeds' four panels for 2-D data: data, code, decoded prior samples (a conditional run: per class), curves",
        _make_overview,
        _needs_2d,
    ),
    "samples": Kind(
        "decoded prior samples (image grid, or over the 2-D data; a conditional run: one row per class)",
        _make_samples,
        lambda v: _needs_images(v) if _conditional(v) else _needs_images_or_2d(v),
        default=lambda v: v.image_shape is not None,
    ),  # 2-D runs: part of 'overview'
    "reconstructions": Kind("held-out images beside their reconstructions", _make_reconstructions, _needs_images),
    "manifold": Kind(
        "decoded grid of latent points through the prior's quantiles (above two latent units: "
        "the two with the most KL, the others at 0; a conditional run: one panel per class, at most 4)",
        _make_manifold,
        _needs_images_or_2d,
        default=lambda v: v.model.latent_dim <= 2,
    ),  # above two: on request, 'traversal' by default
    "latent": Kind(
        "map of encoder means (t-SNE above two dimensions), coloured by label or known value",
        _make_latent,
        lambda v: None,
        default=lambda v: not v.is_2d,
    ),  # 2-D runs: part of 'overview'
    "kl_units": Kind("KL per latent unit (nats)", _make_kl_units, lambda v: _kl_undefined(v)),
    "traversal": Kind(
        "one latent unit at a time through the prior's quantiles, others at 0 (a conditional run: one "
        "panel per class, at most 4)",
        _make_traversal,
        _needs_images_or_2d,
        default=lambda v: v.model.latent_dim > 1,
    ),  # 1-D: same as 'manifold'
    "interpolation": Kind(
        "decoded straight lines between the codes of held-out examples (a conditional run: one per class, "
        "between two examples of it)",
        _make_interpolation,
        _needs_images_or_2d,
    ),
}


def choose(v: RunView, which: list[str] | None = None) -> list[str]:
    """The figure names to draw: ``which`` as given (refusing unknown or inapplicable ones, with the
    reason), or every default figure that applies to this run."""
    if not which:
        return [name for name, kind in KINDS.items() if kind.needs(v) is None and kind.default(v)]
    unknown = [w for w in which if w not in KINDS]
    if unknown:
        raise ValueError(f"unknown figure {unknown[0]!r}; choose from: {', '.join(KINDS)}")
    for name in which:
        why = KINDS[name].needs(v)
        if why:
            raise ValueError(f"cannot draw '{name}' for this run: {why}")
    return list(dict.fromkeys(which))


def render(
    run: runs.Run | str | Path,
    which: list[str] | None = None,
    dpi: int = 100,
    seconds: dict[str, float] | None = None,
    processes: int = 1,
) -> dict[str, bytes]:
    """Draw the chosen figures of a run: name -> PNG bytes. ``seconds``, when given, receives the
    wall time each figure took (computing and drawing it), by name. ``processes=2`` (Linux) draws
    them in this process and a forked copy of it at once (``SharedDrawing``): the same PNGs in
    about half the time where two cores are free."""
    if processes > 1 and can_fork():
        return SharedDrawing(run, which, dpi).finish(seconds)
    v, names = _prepare(run, which)
    seconds = {} if seconds is None else seconds
    return {name: _draw(v, name, dpi, seconds) for name in names}


def _prepare(run: runs.Run | str | Path, which: list[str] | None) -> tuple[RunView, list[str]]:
    if not isinstance(run, runs.Run):
        run = runs.open_run(run)
    v = view(run)
    names = choose(v, which)
    run.model.eval()
    return v, names


def _draw(v: RunView, name: str, dpi: int, seconds: dict[str, float]) -> bytes:
    start = time.perf_counter()
    png = plots.to_png(KINDS[name].make(v), dpi=dpi)
    seconds[name] = time.perf_counter() - start
    return png


def processes_free() -> int:
    """How many processes should draw: 2 where fork works and two cores are free of other work right
    now (``train.free_cores``), else 1."""
    from .train import free_cores

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # a torchrun job's process: no fork beside its threads
        return 1
    return 2 if can_fork() and free_cores() >= 2 else 1


def can_fork() -> bool:
    """Whether a forked copy of this process can draw: Linux (fork is unsafe beside macOS's system
    libraries and absent on Windows)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


SLOW_FIRST = ("latent", "overview", "curves", "manifold", "traversal")  # claimed first: the load evens out
CHILD_WAIT_S = 120.0  # how long the copy may take beyond this process's share before it is given up


class SharedDrawing:
    """A run's figures drawn by two processes at once: this one and a forked copy of it, which has
    the model, the view and any drawing library already imported. The copy starts drawing when this
    object is made; ``finish`` draws here too, until none is left, and returns every PNG. Each process
    claims the next figure from a shared counter, the slow ones first, and draws it on one thread;
    the copy writes its PNGs into a temporary folder and reports each by name. Every figure is
    seeded, so which process draws it does not change it. A figure the copy did not deliver (it
    failed, died or hung) is drawn here, where a real failure raises. ``vaekit train`` makes one
    as soon as the model is saved, so that the copy draws while the final metrics are computed."""

    def __init__(self, run: runs.Run | str | Path, which: list[str] | None = None, dpi: int = 100) -> None:
        import multiprocessing
        import tempfile

        self.v, self.names = _prepare(run, which)
        self.dpi = dpi
        self.order = sorted(self.names, key=lambda n: SLOW_FIRST.index(n) if n in SLOW_FIRST else len(SLOW_FIRST))
        self.child = None  # no copy where none can be started (e.g. no /dev/shm for the counter's lock)
        self.folder = tempfile.TemporaryDirectory(prefix="vaekit-figures-")
        if len(self.order) < 2:  # one figure: nothing to share
            self.counter = _Counter()
            return
        try:
            ctx = multiprocessing.get_context("fork")
            self.counter = ctx.Value("i", 0)
            self.receive, send = ctx.Pipe(duplex=False)
            sys.stdout.flush()  # the copy must not print this process's buffered output again
            sys.stderr.flush()
            with warnings.catch_warnings():  # Python >= 3.12 warns of any thread; torch's idle pool holds no lock
                warnings.simplefilter("ignore", DeprecationWarning)
                child = ctx.Process(
                    target=_draw_claimed,
                    args=(self.v, self.order, self.counter, send, self.folder.name, dpi),
                    name="vaekit-figures",
                    daemon=True,
                )
                child.start()
            send.close()
            self.child = child
        except OSError:
            self.counter = _Counter()

    def finish(self, seconds: dict[str, float] | None = None) -> dict[str, bytes]:
        """Draw what the copy has not claimed, then gather its figures: name -> PNG bytes, in the
        chosen order; ``seconds`` as in ``render``."""
        seconds = {} if seconds is None else seconds
        pngs: dict[str, bytes] = {}
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            started = time.perf_counter()
            while (i := _claim(self.counter)) < len(self.order):
                pngs[self.order[i]] = _draw(self.v, self.order[i], self.dpi, seconds)
            delivered = _collect(self.receive, time.perf_counter() - started + CHILD_WAIT_S) if self.child else {}
            for name, spent in delivered.items():
                pngs[name] = (Path(self.folder.name) / f"{name}.png").read_bytes()
                seconds[name] = spent
        finally:
            torch.set_num_threads(threads)
            self.cancel()
        for name in self.order:
            if name not in pngs:  # the copy failed at it, or did not get to it
                pngs[name] = _draw(self.v, name, self.dpi, seconds)
        return {name: pngs[name] for name in self.names}

    def cancel(self) -> None:
        """Stop the copy (if it still runs) and remove its folder."""
        if self.child is not None:
            if self.child.is_alive():
                self.child.kill()
            self.child.join()
            self.receive.close()
        self.folder.cleanup()


class ServedDrawing:
    """A run's figures drawn by a ``drawing.DrawingServer``, the process ``vaekit train`` forks before
    it imports torch, which has matplotlib imported and warm by the time training ends. Each figure is
    recorded here as soon as this object is made (``plots.recording``: its arrays, computed with the
    model on 1 thread, the server drawing on the other core) and sent at once; the figures that
    compute most (the t-SNE map) are recorded last, so that the server draws from the start.
    ``finish`` gathers the PNGs and draws here any the server did not deliver (it failed, died or
    hung), where a real failure raises. The same PNGs as ``render``: every figure is seeded, and the
    same code draws it from the same arrays."""

    def __init__(self, run: runs.Run | str | Path, server, which: list[str] | None = None, dpi: int = 100) -> None:
        self.v, self.names = _prepare(run, which)
        self.dpi, self.server = dpi, server
        self.recorded: dict[str, float] = {}  # name -> seconds spent here computing its arrays
        self.sent: list[str] = []
        order = sorted(self.names, key=lambda n: n in RECORDED_LAST)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            for name in order:
                started = time.perf_counter()
                try:
                    with plots.recording():
                        drawing = KINDS[name].make(self.v)
                except Exception:  # noqa: BLE001 - finish draws it here, where the failure is raised
                    continue
                self.recorded[name] = time.perf_counter() - started
                if isinstance(drawing, plots.Drawing) and server.submit(name, drawing, dpi):
                    self.sent.append(name)
        finally:
            torch.set_num_threads(threads)

    @property
    def child(self):
        """The drawing process while it can still deliver (``report.write_all`` counts two processes)."""
        return self.server if self.sent else None

    def finish(self, seconds: dict[str, float] | None = None) -> dict[str, bytes]:
        """Gather the server's PNGs and draw the rest here: name -> PNG bytes, in the chosen order;
        ``seconds`` as in ``render`` (a served figure: its arrays here plus its drawing there)."""
        seconds = {} if seconds is None else seconds
        try:
            delivered = self.server.collect(self.sent, CHILD_WAIT_S)
        finally:
            self.cancel()
        pngs: dict[str, bytes] = {}
        for name in self.names:
            if name in delivered:
                pngs[name], drawn = delivered[name]
                seconds[name] = self.recorded[name] + drawn
            else:
                pngs[name] = _draw(self.v, name, self.dpi, seconds)
        return pngs

    def cancel(self) -> None:
        """Stop the server and remove its folder."""
        self.server.close()


RECORDED_LAST = ("latent", "overview")  # their arrays take longest to compute (t-SNE; encoder and decoder)


class _Counter:
    """The shared counter's stand-in when no copy runs."""

    def __init__(self) -> None:
        self.value = 0

    def get_lock(self):
        return contextlib.nullcontext()


def _claim(counter) -> int:
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    return i


def _draw_claimed(v: RunView, order: list[str], counter, send, folder: str, dpi: int) -> None:
    """The forked copy's part of ``_render_shared``: (name, seconds) for each figure it wrote."""
    torch.set_num_threads(1)
    try:
        while (i := _claim(counter)) < len(order):
            name, spent = order[i], {}
            try:
                png = _draw(v, name, dpi, spent)
            except Exception:  # noqa: BLE001 - the parent draws it again and reports the failure itself
                continue
            (Path(folder) / f"{name}.png").write_bytes(png)
            send.send((name, spent[name]))
    finally:
        send.close()


def _collect(receive, timeout: float) -> dict[str, float]:
    """The copy's reports until it closes its end (or ``timeout`` seconds pass): name -> seconds."""
    delivered: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while receive.poll(max(0.0, deadline - time.perf_counter())):
        try:
            name, spent = receive.recv()
        except EOFError:
            break
        delivered[name] = spent
    return delivered


def write(run_dir: str | Path, pngs: dict[str, bytes]) -> list[Path]:
    """Write ``figures/NAME.png`` for each rendered figure, atomically (through the run's ``RunFolder``)."""
    return runs.RunFolder(run_dir).write_figures(pngs)
