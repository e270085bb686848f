"""What the generation commands (sample, reconstruct, encode, interpolate, traverse) share:
opening the run, choosing the input data, checking output paths before any work, and writing
arrays, tables and pictures atomically.

Outputs in data space (samples, reconstructions, interpolations, traversals) take the run's
form: arrays as ``.npy`` / ``.npz`` for array and image runs; for a run trained on a table, a
table with the original columns, values and categories, as CSV (the default) or Parquet, chosen
by the extension of ``-o``. A table run's ``-o x.npy`` / ``.npz`` writes the model-space numbers
instead (standardised numeric columns, 0/1 binary ones, one-hot categories, NaN for missing).
Nothing is ever pickled."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .options import positive_int

if TYPE_CHECKING:  # the command parsers import this module: torch and the run layer load when a command runs
    from .. import runs
    from ..data import Dataset


def add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder written by 'vaekit train'")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps or auto")


def add_data_arguments(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--data", help=f"data to {what}: a built-in name or a .npy/.npz/.csv file (default: the run's test split)"
    )
    g.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="one of the run's own splits instead of --data [default: test]",
    )


def add_condition_file_argument(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument(
        "--condition-file",
        metavar="TABLE",
        help=help_text
        or "a run trained with --condition-columns: a table (.csv) of exactly those columns, one row per example "
        "or one row for all, used as c instead of the data's own condition columns",
    )


def condition_words(run: runs.Run, args: argparse.Namespace) -> str:
    """What c is for this command's data, for its messages ("" for an unconditional run)."""
    kind = run.condition_kind
    if kind == "label":
        return "c = each example's class label"
    if kind == "columns":
        names = ", ".join(run.covariates.names)
        given = getattr(args, "condition_file", None)
        return f"c = the covariates ({names}) of {given}" if given else f"c = each row's own covariates ({names})"
    return ""


def refuse_label_condition(run: runs.Run, flag: str, file_flag: str = "--condition-file") -> None:
    """Call when ``flag`` K was given: a run on table columns is refused in one line saying what to give."""
    if run.condition_kind == "columns":
        raise ValueError(
            f"{flag} K applies to a run trained with --condition label; this run is conditioned on the table "
            f"columns {', '.join(run.covariates.names)}: give them with {file_flag}"
        )


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of taking the decoded mean")
    g.add_argument(
        "--round",
        action="store_true",
        help="the most probable value instead of the mean: Bernoulli means rounded to 0/1, "
        "a categorical's most likely level (not for continuous likelihoods other than Gaussian)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the prior samples and draws")


def decode_how(args: argparse.Namespace) -> str:
    return "draw" if args.draw else ("mode" if args.round else "mean")


MAX_TILES = 256  # pictures show at most this many images (the arrays hold all)
DESCRIBE_HOW = {"mean": "decoded means", "draw": "draws from p(x|z)", "mode": "most probable values"}


def open_run(args: argparse.Namespace) -> runs.Run:
    """The run named on the command line, its model on --device (the generate functions put it in
    inference mode, ``batches.inference``, while they use it)."""
    from .. import runs
    from ..train import resolve_device

    return runs.open_run(args.run, device=resolve_device(args.device))


def input_data(run: runs.Run, args: argparse.Namespace) -> Dataset:
    from .. import runs

    given = getattr(args, "condition_file", None)
    if getattr(args, "data", None):
        data = runs.read_input(run, args.data, condition_file=given)
    else:
        data = runs.read_input(run, None, which=getattr(args, "split", None) or "test", condition_file=given)
    if len(data) == 0:
        raise ValueError("the input data hold no examples (an empty split?); give --data or another --split")
    return data


def rows(x, which) -> np.ndarray:
    """Rows ``which`` (a slice or indices) of in-memory or on-disk data, in memory as float32."""
    return np.asarray(x[which], dtype=np.float32)


def array_path(run: runs.Run, given: str | None, default_name: str, allowed=(".npy",)) -> Path:
    path = Path(given) if given else run.path / default_name
    if path.suffix.lower() not in allowed:
        raise ValueError(f"output file {path} must end in {' or '.join(allowed)}")
    if not path.parent.exists():
        raise ValueError(f"the folder of the output file {path} does not exist; create it first")
    return path


TABLE_FILES = (".csv", ".parquet")


def output_path(run: runs.Run, given: str | None, default_stem: str, numeric=(".npy",)) -> Path:
    """The data-space output file: for a table run ``.csv`` (default) or ``.parquet``, or one of the
    ``numeric`` suffixes for the model-space numbers; for other runs one of ``numeric``."""
    if run.schema is None:
        return array_path(run, given, default_stem + numeric[0], allowed=numeric)
    path = array_path(run, given, default_stem + ".csv", allowed=(*TABLE_FILES, *numeric))
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"writing {path.name} needs pyarrow: pip install 'vaekit[parquet]', or write a .csv"
            ) from None
    return path


def is_table_file(path: Path) -> bool:
    return path.suffix.lower() in TABLE_FILES


def as_table(run: runs.Run, x, lead: dict[str, np.ndarray] | None = None, covariates=None):
    """Model-space rows ``x`` (N, width) as the run's table, with the columns of ``lead`` (e.g. which
    pair and step a row belongs to) in front; a run on table columns puts ``covariates`` (the raw
    condition columns of these rows) back in their places."""
    from .. import runs

    frame = runs.format_output(run, np.asarray(x), covariates)
    for i, (name, values) in enumerate((lead or {}).items()):
        while name in frame.columns:  # never hide one of the table's own columns
            name = "_" + name
        frame.insert(i, name, np.asarray(values))
    return frame


def write_table(path: Path, frame) -> None:
    from ..checkpoint import atomic_write_bytes

    if path.suffix.lower() == ".parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_bytes(path, frame.to_csv(index=False).encode())


def write_data(run: runs.Run, path: Path, x, lead: dict[str, np.ndarray] | None = None, covariates=None) -> str:
    """Write data-space output ``x`` (model-space rows, any leading shape) to ``path`` in the run's form;
    returns how it was written, for the message. A table file gets one row per example, the leading
    indices as the columns named in ``lead``, and (a run on table columns) the condition columns
    ``covariates``, one row per example."""
    from .. import runs

    x = np.asarray(x)
    if run.schema is None:
        write_npy(path, runs.format_output(run, x))
        return "array"
    if is_table_file(path):
        flat = x.reshape(-1, x.shape[-1])
        write_table(path, as_table(run, flat, lead, covariates))
        n_cols = len(run.schema.names) + (len(run.covariates.names) if covariates is not None else 0)
        return f"a table of {len(flat)} rows in the {n_cols} original columns"
    write_npy(path, x.astype(np.float32))
    return "model-space numbers (standardised numeric columns, one-hot categories)"


def png_path(run: runs.Run, args: argparse.Namespace, default_name: str, drawable: bool) -> Path | None:
    """Where the picture goes: --png FILE, RUN/default_name by default when the data can be drawn,
    nowhere with --no-png or when they cannot."""
    if getattr(args, "no_png", False):
        return None
    given = getattr(args, "png", None)
    if given:
        if not drawable:
            raise ValueError("--png needs image data or 2-D data; this run's examples are flat vectors")
        path = Path(given)
        if path.suffix.lower() != ".png":
            raise ValueError(f"picture file {path} must end in .png")
        if not path.parent.exists():
            raise ValueError(f"the folder of the picture file {path} does not exist; create it first")
        return path
    return run.path / default_name if drawable else None


def add_png_arguments(p: argparse.ArgumentParser, default_name: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--png", help=f"picture file (default for image or 2-D data: RUN/{default_name})")
    g.add_argument("--no-png", action="store_true", help="write no picture")


def _plain(name: str, array) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype == object:  # np.savez would pickle it silently; a table belongs in write_table
        raise TypeError(f"{name} is an object array; it would need pickle to be saved")
    return a


def write_npy(path: Path, array) -> None:
    from ..checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, _plain(path.name, array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: Path, **arrays) -> None:
    from ..checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{k: _plain(f"{path.name}[{k!r}]", v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def positive_steps(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 steps, got {value}")
    return value


def image_shape(run: runs.Run):
    from .. import figures

    return figures.image_shape_of(run)


def is_2d(run: runs.Run) -> bool:
    return tuple(run.model.data_shape or ()) == (2,)


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
