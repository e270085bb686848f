"""Figures: arrays in, a matplotlib ``Figure`` out. Nothing here runs a model: what needs one
(encoding, decoding a grid, prior samples) lives in ``vaekit.figures``, which computes the arrays and
calls the drawing functions below.

Every function builds its own ``matplotlib.figure.Figure`` (no pyplot, so no global figure
state and no display is needed: PNGs are rendered by the Agg canvas). Save one with
``to_png(fig)`` or ``save(fig, path)``.

What the seed documents draw, and where it is here:

- training curves (ELBO, reconstruction, KL per epoch): ``training_curves``
- 2-D data coloured by label / true phase / encoder mean, decoded prior samples over the data,
  curves (seed 000's and seed 004's four panels): ``overview_2d``
- image samples and reconstructions: ``image_grid``, ``reconstruction_grid``, ``points_over_data``
- the latent manifold through the prior's quantiles (seed 001): ``manifold_figure``
- encoder means, by PCA or t-SNE above two dimensions, coloured by class (seeds 002, 003): ``latent_map``
- KL per latent unit: ``kl_units``; latent traversals and interpolations: ``traversal_figure``,
  ``interpolation_figure``

Latent units are numbered from 1 in every title and label (z_1 is array index 0).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Drawing",
    "class_panels",
    "embed_2d",
    "image_grid",
    "image_rows",
    "interpolation_figure",
    "kl_units",
    "latent_map",
    "manifold_figure",
    "overview_2d",
    "points_over_data",
    "reconstruction_grid",
    "recording",
    "save",
    "tile",
    "to_png",
    "training_curves",
    "traversal_figure",
    "tsne",
]

PANEL = 4.2  # inches per panel
DATA_COLOUR = "#c9ced6"
VALUE_CMAP = "coolwarm"  # data coloured by a value, as seed 000 draws it
OVER_DATA_CMAP = "viridis"  # points over grey data: no pale middle that vanishes into the grey
ORDERED_CMAP = "viridis"


# -- figures drawn later, elsewhere ---------------------------------------------------------------
_RECORDING = contextvars.ContextVar("vaekit_plots_recording", default=False)
_DRAWERS: dict[str, Callable[..., Any]] = {}  # name -> the drawing function itself


class Drawing:
    """A figure not drawn yet: which drawing function of this module, and its arguments, with any
    torch tensor among them made a numpy array, so that a process without torch can unpickle it and
    draw it (``vaekit.drawing``). ``figure()`` draws it; ``to_png`` takes one as it takes a Figure.
    Arguments that are Drawings themselves (``class_panels``' panels) are drawn first."""

    __slots__ = ("function", "args", "kwargs")

    def __init__(self, function: str, args: tuple, kwargs: dict[str, Any]) -> None:
        self.function, self.args, self.kwargs = function, args, kwargs

    def __reduce__(self):
        return Drawing, (self.function, self.args, self.kwargs)

    def __repr__(self) -> str:
        return f"Drawing({self.function})"

    def figure(self):
        token = _RECORDING.set(False)
        try:
            args = [_drawn_now(a) for a in self.args]
            kwargs = {k: _drawn_now(v) for k, v in self.kwargs.items()}
            return _DRAWERS[self.function](*args, **kwargs)
        finally:
            _RECORDING.reset(token)


@contextlib.contextmanager
def recording():
    """Within it, the figure functions of this module return a ``Drawing`` instead of drawing, after
    doing whatever needs more than matplotlib at once (``latent_map``'s embedding)."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def _portable(x):
    """``x`` as builtins and numpy arrays, which a process without torch or vaekit's model code can
    unpickle: a tensor becomes an array, a list, tuple or dict of any class (a ``train.History``)
    a plain one."""
    if hasattr(x, "detach"):
        return _np(x)
    if isinstance(x, (list, tuple)):
        return (list if isinstance(x, list) else tuple)(_portable(a) for a in x)
    if isinstance(x, dict):
        return {k: _portable(v) for k, v in x.items()}
    return x


def _drawn_now(x):
    if isinstance(x, Drawing):
        return x.figure()
    if isinstance(x, (list, tuple)) and any(isinstance(a, Drawing) for a in x):
        return type(x)(_drawn_now(a) for a in x)
    return x


def _recordable(prepare: Callable[[tuple, dict], tuple[tuple, dict]] | None = None):
    """Register a figure function: called under ``recording()`` it returns a ``Drawing`` of its
    arguments (``prepare`` may first compute what the drawing would otherwise compute itself)."""

    def register(fn):
        _DRAWERS[fn.__name__] = fn

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if not _RECORDING.get():
                return fn(*args, **kwargs)
            args, kwargs = tuple(_portable(a) for a in args), {k: _portable(v) for k, v in kwargs.items()}
            if prepare is not None:
                args, kwargs = prepare(args, kwargs)
            return Drawing(fn.__name__, args, kwargs)

        return call

    return register


# -- figure plumbing ----------------------------------------------------------------------
def _figure(nrows: int = 1, ncols: int = 1, width: float | None = None, height: float | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width or PANEL * ncols, height or PANEL * nrows), layout="constrained", dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def to_png(fig, dpi: int | None = None) -> bytes:
    """The figure rendered as PNG bytes on a white background: one draw on an Agg canvas (the layout
    engine runs inside it) and PIL's PNG encoder. ``savefig`` draws a figure with a layout engine twice,
    once to lay it out and once to render it; the pixels are the same, and one draw is 1.1-1.3x faster
    on vaekit's figures. The figure's dpi and face colour are put back afterwards. A ``Drawing`` is
    drawn first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    if isinstance(fig, Drawing):
        fig = fig.figure()
    dpi = dpi or fig.dpi
    before = fig.dpi, fig.get_facecolor()
    try:
        fig.set_dpi(dpi)
        fig.set_facecolor("white")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        buf = io.BytesIO()
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png", dpi=(dpi, dpi))
    finally:
        fig.set_dpi(before[0])
        fig.set_facecolor(before[1])
    return buf.getvalue()


def save(fig, path: str | os.PathLike, dpi: int | None = None) -> None:
    """Write the figure as a PNG, atomically."""
    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(path, to_png(fig, dpi))


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (without importing torch here)
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _label_colours(labels: np.ndarray):
    """Discrete colours for class labels: tab10 (or tab20 above 10 classes)."""
    from matplotlib import colormaps

    classes = np.unique(labels)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    index = {c: i % cmap.N for i, c in enumerate(classes)}
    return classes, np.array([cmap(index[c]) for c in labels]), {c: cmap(index[c]) for c in classes}


def _scatter(
    ax,
    points: np.ndarray,
    *,
    labels=None,
    colour=None,
    colour_name: str | None = None,
    size: float = 7.0,
    alpha: float = 0.7,
    legend: bool = True,
    fig=None,
):
    """Scatter 2-D points coloured by class labels (legend) or a continuous value (colour bar)."""
    points = _np(points)
    if labels is not None:
        classes, colours, by_class = _label_colours(_np(labels))
        ax.scatter(points[:, 0], points[:, 1], c=colours, s=size, alpha=alpha, linewidths=0)
        if legend and len(classes) <= 20:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], ls="", marker="o", color=by_class[c], label=str(c)) for c in classes]
            ax.legend(
                handles=handles,
                title="label",
                fontsize=7,
                title_fontsize=8,
                loc="best",
                ncols=2 if len(classes) > 5 else 1,
                markerscale=0.8,
                framealpha=0.8,
            )
        return None
    if colour is not None:
        sc = ax.scatter(points[:, 0], points[:, 1], c=_np(colour), cmap=VALUE_CMAP, s=size, alpha=alpha, linewidths=0)
        if fig is not None:
            fig.colorbar(sc, ax=ax, label=colour_name or "", shrink=0.85)
        return sc
    ax.scatter(points[:, 0], points[:, 1], color="#3b6ea5", s=size, alpha=alpha, linewidths=0)
    return None


def _pretty(ax, xlabel: str, ylabel: str, title: str, equal: bool = False) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.25)
    if equal:
        # equal units on both axes where the data are roughly as wide as tall (pinwheel, latent
        # maps); a long thin cloud like the sine curve would otherwise be squashed into a strip
        (x0, x1), (y0, y1) = ax.dataLim.intervalx, ax.dataLim.intervaly
        if x1 > x0 and y1 > y0 and 0.6 <= (x1 - x0) / (y1 - y0) <= 1.6:
            ax.set_aspect("equal", adjustable="datalim")


# -- training curves ------------------------------------------------------------------------
def _column(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([float(row.get(key, math.nan)) if row.get(key) is not None else math.nan for row in history])


def _robust_limits(series: list[np.ndarray]) -> tuple[float, float] | None:
    """y-limits that ignore the first few epochs (often far off scale) when there are enough epochs."""
    values = [s[~np.isnan(s)] for s in series]
    values = [v for v in values if v.size]
    if not values:
        return None
    n = max(v.size for v in values)
    skip = 0 if n < 10 else max(1, n // 20)
    tail = np.concatenate([v[skip:] for v in values])
    lo, hi = float(tail.min()), float(tail.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 0.05)
    return lo - pad, hi + pad


@_recordable()
def training_curves(history: Sequence[dict[str, Any]], *, title: str | None = None):
    """ELBO, reconstruction log p(x|z) and KL per epoch, train (solid) and validation (dashed),
    one panel each (nats per example). Early epochs far off scale are clipped from the y-range
    (noted in the panel) so the converged part stays readable."""
    if not len(history):
        raise ValueError("the history is empty: nothing to plot (train for at least one epoch)")
    epochs = _column(history, "epoch")
    if np.isnan(epochs).all():
        epochs = np.arange(1, len(history) + 1, dtype=float)
    fig, axes = _figure(1, 3, height=3.6)
    panels = [("elbo", "ELBO"), ("log_px_z", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")]
    for ax, (key, name) in zip(axes[0], panels):
        train, val = _column(history, f"train_{key}"), _column(history, f"val_{key}")
        ax.plot(epochs, train, lw=1.8, color="#3b6ea5", label="train")
        shown = [train]
        if not np.isnan(val).all():
            ax.plot(epochs, val, lw=1.5, ls="--", color="#d1495b", label="validation")
            shown.append(val)
        limits = _robust_limits(shown)
        if limits is not None:
            ax.set_ylim(*limits)
            if any(((s < limits[0]) | (s > limits[1]))[~np.isnan(s)].any() for s in shown):
                ax.text(
                    0.98,
                    0.03,
                    "first epochs off scale",
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color="#666666",
                )
        _pretty(ax, "epoch", "nats per example", name)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _curves_panel(ax, history: Sequence[dict[str, Any]]) -> None:
    """The seeds' single-panel curves: ELBO, reconstruction and -KL (train), validation ELBO."""
    epochs = _column(history, "epoch")
    if np.isnan(epochs).all():
        epochs = np.arange(1, len(history) + 1, dtype=float)
    elbo, rec, kl = (_column(history, f"train_{k}") for k in ("elbo", "log_px_z", "kl"))
    val = _column(history, "val_elbo")
    ax.plot(epochs, elbo, lw=2, color="#3b6ea5", label="ELBO")
    ax.plot(epochs, rec, lw=1.5, ls="--", color="#d1495b", label="log p(x|z)")
    ax.plot(epochs, -kl, lw=1.5, ls=":", color="#c99700", label="-KL")
    shown = [elbo, rec, -kl]
    if not np.isnan(val).all():
        ax.plot(epochs, val, lw=1.2, color="#6a994e", alpha=0.9, label="validation ELBO")
        shown.append(val)
    limits = _robust_limits(shown)
    if limits is not None:
        ax.set_ylim(*limits)
    _pretty(ax, "epoch", "nats per example", "Training curves")
    ax.legend(fontsize=8)


# -- 2-D data: the seeds' four panels --------------------------------------------------------
def _check_2d(x: np.ndarray, what: str = "data") -> np.ndarray:
    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"this figure draws 2-D points; the {what} have shape {tuple(x.shape[1:])} per example")
    return x


@_recordable()
def overview_2d(
    x,
    code,
    decoded,
    prior_z1,
    history: Sequence[dict[str, Any]] | None = None,
    *,
    labels=None,
    colour=None,
    colour_name: str = "true phase",
    sample_labels=None,
    prior: str = "$z\\sim\\mathcal{N}(0,I)$",
):
    """The seeds' four panels for 2-D data ``x`` (N, 2), in a 2 x 2 grid:

    (a) the data, coloured by class label (seed 004) or a known continuous value such as the
    sine curve's true phase (seed 000); (b) the code, from the encoder means ``code`` (N, H): with a
    1-D latent the data coloured by it (seed 000), otherwise the means themselves coloured as in (a)
    (seed 004; PCA above two dimensions); (c) ``decoded`` (S, 2), the decoder means of prior samples
    z ~ p(z), coloured by ``prior_z1`` (S,), their first unit, over the data in grey; (d) training
    curves (ELBO, log p(x|z), -KL), when ``history`` is given. ``vaekit.figures.overview_2d``
    computes the arrays from a model.

    A conditional model: ``sample_labels`` (S,) names the class each prior sample was decoded
    under, and (c) colours the samples by it (``prior`` says how z was drawn, for the title).
    """
    x = _check_2d(x)
    mean = _np(code)
    decoded = _check_2d(_np(decoded).reshape(len(decoded), -1), "decoded samples")
    fig, axes = _figure(2, 2, height=2 * PANEL - 0.2)
    ax_data, ax_code, ax_samples, ax_curves = axes.ravel()
    labels = None if labels is None else _np(labels)
    colour = None if colour is None else _np(colour)

    what = "label" if labels is not None else (colour_name if colour is not None else None)
    _scatter(ax_data, x, labels=labels, colour=colour, colour_name=colour_name, fig=fig)
    _pretty(ax_data, "$x_1$", "$x_2$", "Data" + (f" coloured by {what}" if what else ""), equal=True)

    if mean.shape[1] == 1:
        _scatter(ax_code, x, colour=mean[:, 0], colour_name="encoder mean $\\mu_\\phi(x)$", fig=fig)
        _pretty(ax_code, "$x_1$", "$x_2$", "Data coloured by encoder mean", equal=True)
    else:
        points, note = (mean[:, :2], "") if mean.shape[1] == 2 else (embed_2d(mean, "pca")[0], " (PCA)")
        _scatter(ax_code, points, labels=labels, colour=colour, colour_name=colour_name, fig=fig)
        xl, yl = ("$z_1$", "$z_2$") if not note else ("PC 1", "PC 2")
        _pretty(ax_code, xl, yl, f"Encoder means{note}" + (f" by {what}" if what else ""), equal=True)

    ax_samples.scatter(x[:, 0], x[:, 1], color=DATA_COLOUR, s=6, alpha=0.6, linewidths=0, label="data")
    if sample_labels is not None:  # a conditional model: each sample coloured by the class it was decoded under
        _scatter(ax_samples, decoded, labels=sample_labels, size=9, alpha=0.8, fig=fig)
        ax_samples.get_legend().set_title("decoded under")
        title = f"{len(decoded)} prior samples {prior}, per class, decoded means"
    else:
        sc = ax_samples.scatter(
            decoded[:, 0],
            decoded[:, 1],
            c=_np(prior_z1),
            cmap=OVER_DATA_CMAP,
            s=9,
            alpha=0.8,
            linewidths=0,
            label="decoded samples",
        )
        fig.colorbar(sc, ax=ax_samples, label="$z_1$ of the prior sample", shrink=0.85)
        ax_samples.legend(fontsize=8, loc="best")
        title = f"{len(decoded)} prior samples {prior}, decoded means"
    _pretty(ax_samples, "$x_1$", "$x_2$", title, equal=True)

    if history is not None and len(history):
        _curves_panel(ax_curves, history)
    else:
        ax_curves.set_axis_off()
        ax_curves.text(0.5, 0.5, "no training history", ha="center", va="center", color="#666666")
    return fig


# -- images ------------------------------------------------------------------------------------
def _as_images(images, image_shape: Sequence[int]) -> np.ndarray:
    """(N, ...) -> (N, H, W) grey or (N, H, W, C) colour, from an image shape (H, W), (H, W, C) or (C, H, W)."""
    a = _np(images).astype(np.float64)
    shape = tuple(int(s) for s in image_shape)
    a = a.reshape(a.shape[0], *shape)
    if len(shape) == 2:
        return a
    if len(shape) == 3:
        if shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):  # channels first
            a = np.moveaxis(a, 1, -1)
        elif shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"cannot show images of shape {shape}: expected (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4"
            )
        return a[..., 0] if a.shape[-1] == 1 else a
    raise ValueError(f"cannot show images of shape {shape}: expected (H, W), (H, W, C) or (C, H, W)")


def tile(images, image_shape: Sequence[int], ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Lay images out row by row in one mosaic array, ``pad`` pixels of NaN between tiles (and
    around the edge); missing tiles in the last row are NaN. (rows*(H+pad)+pad, cols*(W+pad)+pad[, C])."""
    imgs = _as_images(images, image_shape)
    n = imgs.shape[0]
    if n == 0:
        raise ValueError("no images to show")
    ncols = int(ncols or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    h, w = imgs.shape[1:3]
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, *imgs.shape[3:]), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top : top + h, left : left + w] = imgs[i]
    return out


def _show_mosaic(ax, mosaic: np.ndarray, value_range: tuple[float, float] | None):
    from matplotlib import colormaps

    if mosaic.ndim == 3:  # colour: scale into [0, 1], gaps white
        lo, hi = value_range if value_range else (np.nanmin(mosaic), np.nanmax(mosaic))
        rgb = np.clip((mosaic - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        rgb = np.where(np.isnan(rgb), 1.0, rgb)
        im = ax.imshow(rgb, interpolation="nearest")
    else:
        cmap = colormaps["gray"].with_extremes(bad=(1, 1, 1, 0))
        lo, hi = value_range if value_range else (np.nanmin(mosaic), np.nanmax(mosaic))
        im = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


@_recordable()
def image_grid(
    images,
    image_shape: Sequence[int],
    *,
    ncols: int | None = None,
    value_range: tuple[float, float] | None = None,
    title: str | None = None,
):
    """A grid of images in one panel (row by row), greys from ``value_range`` (default: the images' own)."""
    mosaic = tile(images, image_shape, ncols)
    ratio = mosaic.shape[0] / mosaic.shape[1]
    fig, axes = _figure(1, 1, width=PANEL * 1.3, height=max(1.5, PANEL * 1.3 * ratio + (0.4 if title else 0)))
    _show_mosaic(axes[0, 0], mosaic, value_range)
    if title:
        axes[0, 0].set_title(title, fontsize=10)
    return fig


@_recordable()
def reconstruction_grid(
    originals,
    reconstructions,
    image_shape: Sequence[int],
    *,
    ncols: int | None = None,
    value_range: tuple[float, float] | None = None,
):
    """Originals (left) and their reconstructions (right) in the same tile positions."""
    a, b = _np(originals), _np(reconstructions)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a.shape[0]} originals but {b.shape[0]} reconstructions")
    if value_range is None:
        value_range = (float(min(a.min(), b.min())), float(max(a.max(), b.max())))
    left, right = tile(a, image_shape, ncols), tile(b, image_shape, ncols)
    ratio = left.shape[0] / left.shape[1]
    fig, axes = _figure(1, 2, width=2 * PANEL, height=max(1.5, PANEL * ratio + 0.4))
    _show_mosaic(axes[0, 0], left, value_range)
    axes[0, 0].set_title("data", fontsize=10)
    _show_mosaic(axes[0, 1], right, value_range)
    axes[0, 1].set_title("reconstruction (decoded mean of z ~ q(z|x))", fontsize=10)
    return fig


@_recordable()
def image_rows(
    rows,
    image_shape: Sequence[int],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] | None = None,
    title: str | None = None,
    xlabel: str | None = None,
):
    """Images arranged as given, (R, C, D...) -> one mosaic with R rows and C columns, rows and
    columns labelled at the tile centres."""
    r = _np(rows)
    nrows, ncols = r.shape[:2]
    mosaic = tile(r.reshape(nrows * ncols, *r.shape[2:]), image_shape, ncols)
    h, w = _as_images(r.reshape(nrows * ncols, *r.shape[2:])[:1], image_shape).shape[1:3]
    ratio = mosaic.shape[0] / mosaic.shape[1]
    width = min(2.2 * PANEL, max(PANEL, 0.55 * ncols + 1))
    fig, axes = _figure(1, 1, width=width, height=max(1.4, width * ratio + 0.6))
    ax = axes[0, 0]
    _show_mosaic(ax, mosaic, value_range)
    if col_labels is not None:
        ax.set_xticks([1 + j * (w + 1) + (w - 1) / 2 for j in range(ncols)], list(col_labels), fontsize=7)
        ax.tick_params(axis="x", length=0)
    if row_labels is not None:
        ax.set_yticks([1 + i * (h + 1) + (h - 1) / 2 for i in range(nrows)], list(row_labels), fontsize=7)
        ax.tick_params(axis="y", length=0)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


@_recordable()
def points_over_data(points, data=None, *, colour=None, colour_name: str = "", title: str = "", label: str = "samples"):
    """2-D points (generated or reconstructed) over the data in grey, coloured by ``colour``."""
    points = _check_2d(points, label)
    fig, axes = _figure(1, 1, width=PANEL * 1.25)
    ax = axes[0, 0]
    if data is not None:
        d = _check_2d(data)
        ax.scatter(d[:, 0], d[:, 1], color=DATA_COLOUR, s=6, alpha=0.6, linewidths=0, label="data")
    if colour is not None:
        sc = ax.scatter(
            points[:, 0], points[:, 1], c=_np(colour), cmap=OVER_DATA_CMAP, s=9, alpha=0.8, linewidths=0, label=label
        )
        fig.colorbar(sc, ax=ax, label=colour_name, shrink=0.85)
    else:
        ax.scatter(points[:, 0], points[:, 1], color="#3b6ea5", s=9, alpha=0.8, linewidths=0, label=label)
    ax.legend(fontsize=8)
    _pretty(ax, "$x_1$", "$x_2$", title, equal=True)
    return fig


# -- the latent space ---------------------------------------------------------------------------
@_recordable()
def manifold_figure(
    decoded,
    values,
    *,
    dims: tuple[int, int] | None = (0, 1),
    latent_dim: int | None = None,
    image_shape: Sequence[int] | None = None,
    data=None,
    quantiles: tuple[float, float] = (0.05, 0.95),
    value_range: tuple[float, float] | None = None,
    chosen_by: str = "",
):
    """The learned manifold: ``decoded`` (R, C, *shape), the decoder means on the grid of latent points
    ``generate.quantile_grid`` builds through the prior's quantiles ``values`` (C,): column j holds
    unit ``dims[0]`` at ``values[j]``, row i unit ``dims[1]`` at its i-th largest value; the other
    units sit at 0, the prior's mean. ``dims=None`` (or R == 1): a 1-D latent, one row.

    Images: one tile per grid point, z along ``dims[0]`` left to right and ``dims[1]`` bottom to top
    (tick labels give the z values). 2-D data: the decoded grid drawn as a mesh over the data (a
    curve for a 1-D latent). ``chosen_by`` says in the title why these two units were picked."""
    decoded, values = _np(decoded), _np(values)
    low, high = quantiles
    if latent_dim is None:
        latent_dim = 1 if dims is None or decoded.shape[0] == 1 else 2
    a, b = (0, None) if latent_dim == 1 or dims is None else (int(dims[0]), int(dims[1]))
    if latent_dim <= 2:
        title = f"Decoded latent grid: z through the prior's {low:.0%}-{high:.0%} quantiles"
    else:
        title = (
            f"Decoded latent grid over $z_{{{a + 1}}}$ and $z_{{{b + 1}}}$ of {latent_dim}{chosen_by}\n"
            f"through the prior's {low:.0%}-{high:.0%} quantiles; the other units at 0 (the prior mean)"
        )
    if image_shape is not None:
        cols = [f"{v:.2f}" for v in values]
        rows = [f"{v:.2f}" for v in values[::-1]] if b is not None else [""]
        fig = image_rows(
            decoded,
            image_shape,
            row_labels=rows,
            col_labels=cols,
            value_range=value_range,
            title=title,
            xlabel=f"$z_{{{a + 1}}}$",
        )
        if b is not None:
            fig.axes[0].set_ylabel(f"$z_{{{b + 1}}}$", fontsize=9)
        return fig
    flat = decoded.reshape(*decoded.shape[:2], -1)
    if flat.shape[-1] != 2:
        raise ValueError(
            f"the manifold picture needs image data or 2-D data; these examples have shape {decoded.shape[2:]}"
        )
    fig, axes = _figure(1, 1, width=PANEL * 1.3, height=PANEL * 1.15)
    ax = axes[0, 0]
    if data is not None:
        d = _check_2d(data)
        ax.scatter(d[:, 0], d[:, 1], color=DATA_COLOUR, s=6, alpha=0.6, linewidths=0, label="data")
    from matplotlib import colormaps

    cmap = colormaps[ORDERED_CMAP]
    if b is None:  # a curve through the quantiles of the single unit
        ax.plot(flat[0, :, 0], flat[0, :, 1], color="#333333", lw=1.2, zorder=2)
        sc = ax.scatter(
            flat[0, :, 0],
            flat[0, :, 1],
            c=values,
            cmap=ORDERED_CMAP,
            s=28,
            zorder=3,
            edgecolors="white",
            linewidths=0.5,
        )
        fig.colorbar(sc, ax=ax, label="$z_1$", shrink=0.85)
    else:
        for i in range(flat.shape[0]):  # rows: constant z_b, z_a varies
            ax.plot(flat[i, :, 0], flat[i, :, 1], color=cmap(1 - i / max(1, flat.shape[0] - 1)), lw=1.1, zorder=2)
        for j in range(flat.shape[1]):  # columns: constant z_a
            ax.plot(flat[:, j, 0], flat[:, j, 1], color="#555555", lw=0.6, alpha=0.7, zorder=2)
        ax.scatter(flat[..., 0].ravel(), flat[..., 1].ravel(), color="#222222", s=6, zorder=3)
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        sm = ScalarMappable(norm=Normalize(values.min(), values.max()), cmap=ORDERED_CMAP)
        fig.colorbar(
            sm, ax=ax, label=f"$z_{{{b + 1}}}$ (coloured lines); grey lines: constant $z_{{{a + 1}}}$", shrink=0.85
        )
    _pretty(ax, "$x_1$", "$x_2$", title, equal=True)
    ax.title.set_fontsize(9)
    return fig


def has_opentsne() -> bool:
    """Whether openTSNE (the ``tsne`` extra) can be imported."""
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


TSNE_EXAGGERATION_ITER = 50  # openTSNE's defaults are 250 and 500: a map of a few thousand codes
TSNE_ITER = 100  # has settled by then (same neighbourhoods: trustworthiness and 5-NN labels agree)
TSNE_EXAGGERATION = 12.0
EXACT_TSNE = 2000  # up to this many codes, t-SNE's exact gradient here (torch, n x n matrices)
EXACT_NEIGHBOURS = 10_000  # up to this many codes, openTSNE with exact neighbours (a tree), not Annoy


def tsne(z: np.ndarray, perplexity: float, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D t-SNE embedding (PCA initialisation) and the name of the code that made it. Up to
    ``EXACT_TSNE`` codes: ``vaekit.tsne.exact_tsne`` (torch, no random draws), which needs neither openTSNE
    nor scikit-learn, whose imports take longer than the whole map of 1000 codes. Above it,
    openTSNE when installed (the ``tsne`` extra), seeded, with the same iterations and exact
    nearest neighbours for up to ``EXACT_NEIGHBOURS`` codes; else scikit-learn's, with 500
    iterations instead of its default 1000 to bound the time."""
    if len(z) <= EXACT_TSNE:
        from .tsne import exact_tsne  # torch: the drawing here stays free of it

        return exact_tsne(z, perplexity, TSNE_EXAGGERATION_ITER, TSNE_ITER, TSNE_EXAGGERATION), "exact gradient"
    if has_opentsne():
        import openTSNE

        embedding = openTSNE.TSNE(
            n_components=2,
            perplexity=perplexity,
            initialization="pca",
            random_state=seed,
            n_jobs=1,
            verbose=False,
            early_exaggeration_iter=TSNE_EXAGGERATION_ITER,
            n_iter=TSNE_ITER,
            neighbors="exact" if len(z) <= EXACT_NEIGHBOURS else "auto",
        ).fit(z)
        return np.asarray(embedding, dtype=np.float64), "openTSNE"
    import inspect

    from sklearn.manifold import TSNE

    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"  # renamed in 1.5
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, **{iterations: 500}
    ).fit_transform(z)
    return points, "scikit-learn"


def embed_2d(z, method: str = "auto", *, max_points: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Two coordinates per example for a map of latent codes: the codes themselves when 2-D, else
    PCA or t-SNE (``method``; ``auto`` = t-SNE). t-SNE runs on at most ``max_points`` examples
    (a fixed random subset). Returns (points, indices of the examples used, description)."""
    z = _np(z).astype(np.float64)
    n, h = z.shape
    index = np.arange(n)
    if h <= 2:
        return (z if h == 2 else np.stack([z[:, 0], np.zeros(n)], 1)), index, "latent units"
    if method == "auto":
        method = "tsne"
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(z)
        share = pca.explained_variance_ratio_.sum()
        return pca.transform(z), index, f"PCA ({share:.0%} of the variance)"
    if method == "tsne":
        if n > max_points:
            index = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
            z = z[index]
        if len(z) < 5:
            raise ValueError(f"t-SNE needs at least 5 examples, got {len(z)}")
        perplexity = float(min(30.0, (len(z) - 1) / 3))
        points, backend = tsne(z, perplexity, seed)
        return points, index, f"t-SNE (perplexity {perplexity:.0f}, {len(z)} examples, {backend})"
    raise ValueError(f"unknown embedding method {method!r}; choose auto, pca or tsne")


def _embedded_first(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``latent_map``'s arguments with its 2-D embedding computed now (t-SNE runs on torch)."""
    z = _np(args[0] if args else kwargs["z"])
    if z.ndim == 2 and z.shape[1] > 1 and kwargs.get("embedding") is None:
        method, max_points, seed = (
            kwargs.get(k, d) for k, d in (("method", "auto"), ("max_points", 2000), ("seed", 0))
        )
        kwargs = {**kwargs, "embedding": embed_2d(z, method, max_points=max_points, seed=seed)}
    return args, kwargs


@_recordable(prepare=_embedded_first)
def latent_map(
    z,
    *,
    labels=None,
    colour=None,
    colour_name: str = "value",
    method: str = "auto",
    max_points: int = 2000,
    seed: int = 0,
    embedding: tuple[np.ndarray, np.ndarray, str] | None = None,
):
    """A map of encoder means: the two units of a 2-D code (dashed circles at 1 and 2 prior standard
    deviations), PCA or t-SNE above two dimensions, coloured by class label or a continuous value.
    A 1-D code is drawn against the colouring value (or as a histogram against the prior's density).
    ``embedding``: ``embed_2d``'s result for these codes, computed beforehand (a recorded map's is
    computed where it is recorded, so that drawing it needs no torch)."""
    z = _np(z)
    labels = None if labels is None else _np(labels)
    colour = None if colour is None else _np(colour)
    fig, axes = _figure(1, 1, width=PANEL * 1.3, height=PANEL * 1.15)
    ax = axes[0, 0]
    if z.shape[1] == 1:
        if labels is None and colour is None:
            ax.hist(z[:, 0], bins=40, density=True, color="#3b6ea5", alpha=0.7, label="encoder means")
            grid = np.linspace(min(-3.5, z.min()), max(3.5, z.max()), 200)
            ax.plot(
                grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), color="#333333", lw=1.2, label="prior N(0, 1)"
            )
            ax.legend(fontsize=8)
            _pretty(ax, "$z_1$", "density", "Encoder means (1-D code)")
        elif labels is not None:
            rng = np.random.default_rng(seed)
            classes = np.unique(labels)
            row = {c: i for i, c in enumerate(classes)}
            y = np.array([row[c] for c in labels]) + rng.uniform(-0.3, 0.3, len(labels))
            _scatter(ax, np.stack([z[:, 0], y], 1), labels=labels, legend=False)
            ax.set_yticks(range(len(classes)), [str(c) for c in classes])
            _pretty(ax, "encoder mean $z_1$", "label", "Encoder means by label (1-D code)")
        else:
            ax.scatter(colour, z[:, 0], c=colour, cmap=VALUE_CMAP, s=7, alpha=0.7, linewidths=0)
            _pretty(ax, colour_name, "encoder mean $z_1$", f"Encoder mean against {colour_name}")
        return fig
    points, index, how = embedding if embedding is not None else embed_2d(z, method, max_points=max_points, seed=seed)
    lab = None if labels is None else labels[index]
    col = None if colour is None else colour[index]
    _scatter(ax, points, labels=lab, colour=col, colour_name=colour_name, fig=fig)
    if z.shape[1] == 2:
        from matplotlib.patches import Circle

        for r in (1, 2):
            ax.add_patch(Circle((0, 0), r, fill=False, ls="--", lw=0.8, color="#666666"))
        _pretty(ax, "$z_1$", "$z_2$", "Encoder means (dashed: 1 and 2 prior std. dev.)", equal=True)
    else:
        names = ("PC 1", "PC 2") if how.startswith("PCA") else ("t-SNE 1", "t-SNE 2")
        _pretty(ax, *names, f"Encoder means of a {z.shape[1]}-D code, {how}")
    return fig


INFORMATIVE_KL = 0.1  # nats: a unit's average KL bounds what it tells about x (I(x; z_h) <= E_x KL), 0.14 bits


@_recordable()
def kl_units(kl, *, threshold: float = INFORMATIVE_KL, adds_up: bool = True):
    """Bar chart of the average KL(q(z_h|x) || p(z_h)) per latent unit h = 1..H, in nats. Units below
    ``threshold`` nats (default 0.1: the unit carries at most that much information about x) are grey,
    and the title counts the others, so the count and the bars use one rule. Grey bars are labelled
    with their value, since they are too short to read. ``adds_up=False``: the values are KLs between
    one-dimensional marginals (a full-covariance q, a mixture prior), and the title says their sum is
    not the KL."""
    kl = _np(kl).astype(np.float64).ravel()
    fig, axes = _figure(1, 1, width=max(PANEL, min(2 * PANEL, 0.35 * len(kl) + 2)), height=3.4)
    ax = axes[0, 0]
    units = np.arange(1, len(kl) + 1)
    low = kl < threshold
    ax.bar(units[~low], kl[~low], color="#3b6ea5", width=0.7, label=f"at least {threshold:g} nats")
    if low.any():
        ax.bar(
            units[low],
            np.maximum(kl[low], 0),
            color="#b0b0b0",
            width=0.7,
            label=f"below {threshold:g} nats (next to no information about x)",
        )
        if len(kl) <= 32:
            for u, value in zip(units[low], kl[low]):
                ax.annotate(
                    f"{value:.2f}",
                    (u, max(value, 0)),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#666666",
                )
        top = float(np.max(kl, initial=0.0))
        if top > 0:
            ax.set_ylim(0, 1.4 * top)  # headroom: the legend sits above the bars, not on them
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlim(0.3, len(kl) + 0.7)
    ax.set_xticks(units if len(units) <= 32 else units[:: math.ceil(len(units) / 32)])
    head = (
        f"KL per latent unit, total {kl.sum():.3f} nats"
        if adds_up
        else f"KL of each unit's marginals, sum {kl.sum():.3f} nats (not the KL)"
    )
    count = f"{int((~low).sum())} of {len(kl)} units carry at least {threshold:g} nats"
    _pretty(ax, "latent unit", "KL (nats per example)", f"{head}\n{count}")
    ax.grid(True, axis="y", alpha=0.25)
    ax.grid(False, axis="x")
    return fig


def _paths_2d(
    paths: np.ndarray,
    data,
    labels: Sequence[str],
    title: str,
    colour_name: str | None = None,
    ends=None,
    positions=None,
):
    """Curves in 2-D data space, one per row of ``paths`` (R, C, 2), each in its own colour. With
    ``colour_name`` the points are also filled by ``positions`` (C,) (default 0..1 along the curve)
    with one colour bar; ``ends`` (R, 2, 2) marks the two examples each curve connects with stars."""
    fig, axes = _figure(1, 1, width=PANEL * 1.3, height=PANEL * 1.15)
    ax = axes[0, 0]
    if data is not None:
        d = _check_2d(data)
        ax.scatter(d[:, 0], d[:, 1], color=DATA_COLOUR, s=6, alpha=0.6, linewidths=0)
    from matplotlib import colormaps

    tab = colormaps["tab10"]
    steps = paths.shape[1]
    sc = None
    for i, path in enumerate(paths):
        colour = tab(i % 10)
        ax.plot(path[:, 0], path[:, 1], color=colour, lw=1.6, label=labels[i], zorder=2)
        if colour_name:
            fill = np.linspace(0, 1, steps) if positions is None else _np(positions)
            sc = ax.scatter(
                path[:, 0], path[:, 1], c=fill, cmap=ORDERED_CMAP, s=22, zorder=3, edgecolors=colour, linewidths=1.0
            )
        else:
            ax.scatter(path[:, 0], path[:, 1], color=colour, s=14, zorder=3)
        if ends is not None:
            ax.scatter(
                ends[i, :, 0],
                ends[i, :, 1],
                marker="*",
                s=160,
                color=colour,
                edgecolors="black",
                linewidths=0.8,
                zorder=4,
            )
    if sc is not None:
        fig.colorbar(sc, ax=ax, label=colour_name, shrink=0.85)
    if len(paths) <= 12:
        ax.legend(fontsize=7, loc="best")
    _pretty(ax, "$x_1$", "$x_2$", title, equal=True)
    return fig


@_recordable()
def traversal_figure(
    decoded,
    units: Sequence[int],
    values,
    *,
    image_shape: Sequence[int] | None = None,
    data=None,
    value_range: tuple[float, float] | None = None,
    at_zero: bool = True,
    quantiles: tuple[float, float] = (0.05, 0.95),
):
    """Draw decoded traversals (U, S, *shape): row u holds unit ``units[u]`` at each of ``values``."""
    decoded = _np(decoded)
    row_labels = [f"$z_{{{u + 1}}}$" for u in units]
    where = "others at 0" if at_zero else "others at an example's encoder mean"
    if image_shape is not None:
        return image_rows(
            decoded,
            image_shape,
            row_labels=row_labels,
            col_labels=[f"{v:.2f}" for v in _np(values)],
            value_range=value_range,
            xlabel="value of the unit (prior quantiles)",
            title=f"Latent traversals, one unit per row, {where}",
        )
    flat = decoded.reshape(*decoded.shape[:2], -1)
    if flat.shape[-1] != 2:
        raise ValueError(
            f"the traversal picture needs image data or 2-D data; these examples have shape {decoded.shape[2:]}"
        )
    return _paths_2d(
        flat,
        data,
        row_labels,
        f"Latent traversals ({where})",
        f"value of the moving unit (prior's {quantiles[0]:.0%} to {quantiles[1]:.0%} quantiles)",
        positions=values,
    )


@_recordable()
def interpolation_figure(
    x_from,
    x_to,
    decoded,
    *,
    image_shape: Sequence[int] | None = None,
    data=None,
    value_range: tuple[float, float] | None = None,
    pair_labels: Sequence[str] | None = None,
):
    """Draw decoded interpolations (P, S, *shape) between ``x_from[p]`` and ``x_to[p]`` (rows or
    paths named by ``pair_labels``, default "pair 1", ...)."""
    a, b, decoded = _np(x_from), _np(x_to), _np(decoded)
    steps = decoded.shape[1]
    labels = list(pair_labels) if pair_labels is not None else [f"pair {i + 1}" for i in range(len(a))]
    if image_shape is not None:
        rows = np.concatenate([a[:, None], decoded, b[:, None]], axis=1)  # (P, S + 2, *shape)
        cols = ["data"] + [f"{t:.2f}" for t in np.linspace(0, 1, steps)] + ["data"]
        return image_rows(
            rows,
            image_shape,
            row_labels=labels,
            col_labels=cols,
            value_range=value_range,
            xlabel="position between the two encoder means",
            title="Interpolation between encoded examples (ends: the examples themselves)",
        )
    flat = decoded.reshape(*decoded.shape[:2], -1)
    if flat.shape[-1] != 2:
        raise ValueError(
            f"the interpolation picture needs image data or 2-D data; these examples have shape {decoded.shape[2:]}"
        )
    ends = np.stack([a.reshape(len(a), -1), b.reshape(len(b), -1)], axis=1)
    return _paths_2d(flat, data, labels, "Interpolations between encoded examples (stars), decoded", ends=ends)


# -- one panel per class -------------------------------------------------------------------------
def _raster(fig, dpi: int) -> np.ndarray:
    """The figure drawn as an RGBA array (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@_recordable()
def class_panels(figures, titles: Sequence[str], *, title: str | None = None, ncols: int | None = None, dpi: int = 90):
    """Figures of one kind for several classes (or covariate groups), side by side: one panel per
    figure, titled by ``titles`` (e.g. "class 3"), in rows of ``ncols`` (default: up to 4). Each
    figure is drawn as it would be alone (``manifold_figure``, ``traversal_figure``, ...), so every
    panel keeps its own axes, labels and colour bars."""
    figures = list(figures)
    if not figures or len(figures) != len(titles):
        raise ValueError(
            f"class_panels needs one title per figure, got {len(figures)} figures and {len(titles)} titles"
        )
    images = [_raster(f, dpi) for f in figures]
    ncols = int(ncols or min(4, len(images)))
    nrows = math.ceil(len(images) / ncols)
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    panel_w = min(PANEL * 1.3, 16 / ncols)
    fig, axes = _figure(nrows, ncols, width=panel_w * ncols, height=panel_w * h / w * nrows + (0.5 if title else 0.3))
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, image, name in zip(axes.ravel(), images, titles):
        ax.imshow(image, interpolation="antialiased")
        ax.set_title(str(name), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
