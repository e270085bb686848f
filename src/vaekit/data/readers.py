"""Readers for user data: arrays (.npy, streamed from disk when large; .npz), tables (.csv, .tsv,
.parquet), IDX files (MNIST's format) and folders of images. ``read_path`` returns a ``Dataset``."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .core import Dataset

_X_KEYS = ("x", "X", "data", "features")
_Y_KEYS = ("y", "labels", "target")
STREAM_BYTES = 2**30  # .npy files larger than this are streamed from disk unless told otherwise
_TABLE_OPTIONS = ("label_column", "numeric", "binary", "categorical", "schema")
KNOWN_OPTIONS = ("binarize", "stream", *_TABLE_OPTIONS)


def read_path(path: str | Path, *, strict: bool = True, **options: Any) -> Dataset:
    """Read a file or an image folder into a ``Dataset``. Options that do not apply to this kind
    of file raise ``DataError`` (or are ignored with ``strict=False``)."""
    from .idx import is_idx, load_idx
    from .images import is_image_folder, load_image_folder
    from .tables import TABLE_SUFFIXES, load_table

    path = Path(path)
    unknown = set(options) - set(KNOWN_OPTIONS)
    if unknown:
        raise DataError(f"unknown data option(s): {', '.join(sorted(unknown))}")
    suffix = path.suffix.lower()
    if path.is_dir():
        kind = "images"
    elif suffix in TABLE_SUFFIXES:
        kind = "table"
    elif suffix in (".npy", ".npz"):
        kind = suffix[1:]
    elif is_idx(path):
        kind = "idx"
    else:
        raise DataError(
            f"cannot read {path.name}: unknown file type {suffix or '(none)'}; use .npy, .npz, .csv, "
            ".tsv, .parquet, an IDX file (MNIST's ...-idx3-ubyte[.gz]) or a folder of images"
        )
    given = {k: v for k, v in options.items() if v not in (None, False, (), [], "")}
    allowed = {
        "table": _TABLE_OPTIONS,
        "npy": ("binarize", "stream"),
        "npz": ("binarize",),
        "idx": ("binarize",),
        "images": ("binarize",),
    }[kind]
    misplaced = sorted(set(given) - set(allowed) - ({"stream"} if given.get("stream") == "auto" else set()))
    if misplaced and strict:
        raise DataError(
            f"option(s) {', '.join('--' + m.replace('_', '-') for m in misplaced)} do not apply to "
            f"{path.name} ({'a table' if kind == 'table' else 'an array'})"
        )
    opts = {k: v for k, v in options.items() if k in allowed}

    name = path.stem if kind != "idx" else path.name.split(".")[0]
    if kind == "table":
        x, labels, info, frame, schema, report = load_table(path, **opts)
        info["transform_report"] = report
        return Dataset(x=x, name=name, labels=labels, info=info, frame=frame, schema=schema)
    image_shape = None
    if kind == "images":
        if not is_image_folder(path):
            raise DataError(f"{path} is a folder without image files ({', '.join(('png', 'jpg', 'bmp', '...'))})")
        x, labels, image_shape, info = load_image_folder(path)
    elif kind == "idx":
        x, labels, image_shape, info = load_idx(path)
        x = _check(x, path)
    else:
        x, labels = _read_array(path, kind, opts.get("stream"))
        info = {"path": str(path.resolve())}
        if hasattr(x, "chunks"):
            info["streamed"] = True
    if opts.get("binarize"):
        x = binarize_static(x, path.name)
        info["binarize"] = "static"
    return Dataset(x=x, name=name, labels=labels, image_shape=image_shape, info=info)


def binarize_static(x, what: str = "the data"):
    """Values > 0.5 become 1, others 0; the data must lie in [0, 1] (pixels)."""
    from ..likelihoods import value_summary

    s = value_summary(x)
    if s["size"] and (s["min"] < 0 or s["max"] > 1):
        raise DataError(
            f"--binarize needs values in [0, 1] (pixels); {what} has values in [{s['min']:.4g}, {s['max']:.4g}]"
        )
    if hasattr(x, "binarized"):
        return x.binarized(0.5)
    return (np.asarray(x) > 0.5).astype(np.float32)


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read (x, labels-or-None) from a .npy/.npz file into memory; x is float32 of shape (N, ...)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(
            f"cannot read {path.name} as an array: unknown file type {suffix or '(none)'}; use .npy or .npz"
        )
    return _read_array(path, suffix[1:], stream=False)


def _read_array(path: Path, kind: str, stream=None):
    if kind == "npy" and _should_stream(path, stream):
        return _open_on_disk(path), None
    readers = {"npy": _read_npy, "npz": _read_npz}
    try:
        x, labels = readers[kind](path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return _check(x, path), labels


def _should_stream(path: Path, stream) -> bool:
    if stream in (None, "auto"):
        return path.stat().st_size > STREAM_BYTES
    if isinstance(stream, str):
        if stream.lower() in ("on", "true", "yes", "1"):
            return True
        if stream.lower() in ("off", "false", "no", "0"):
            return False
        raise DataError(f"stream must be auto, on or off, got {stream!r}")
    return bool(stream)


def _open_on_disk(path: Path):
    """A ``DiskArray`` over the file, checked block by block (values finite, rows present)."""
    from ..likelihoods import value_summary
    from .disk import DiskArray

    x = DiskArray(path)
    if x.ndim < 2:
        raise DataError(f"{path.name} is 1-D; streaming needs rows of features (shape (N, D) or (N, C, H, W))")
    if len(x) == 0 or x.shape[1:] and 0 in x.shape[1:]:
        raise DataError(f"{path.name} holds no examples")
    s = value_summary(x)
    if s["n_nan"] or s["n_inf"]:
        raise DataError(f"{path.name} has {s['n_nan'] + s['n_inf']} NaN or infinite values; remove or impute them")
    return x


def _check(x: np.ndarray, path: Path) -> np.ndarray:
    from .disk import check_npy_dtype

    check_npy_dtype(np.dtype(x.dtype), path.name)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 0 or x.shape[0] == 0 or x.size == 0:
        raise DataError(f"{path.name} holds no examples")
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{path.name} has {int(bad.sum())} NaN or infinite values (first in row {row}); remove or impute them"
        )
    return x


def _checked_header(f, name: str, available: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check a .npy header before anything is allocated: a numeric, real dtype; as many
    bytes as the shape needs; and memory for the array and its float32 copy."""
    from ..limits import require_memory
    from .disk import check_npy_dtype, npy_header

    shape, _, dtype, offset = npy_header(f, name)
    check_npy_dtype(dtype, name)
    n = math.prod(shape)
    need = n * dtype.itemsize
    if available - offset < need:
        raise DataError(
            f"{name} is truncated: its header promises {shape} values ({need} bytes), "
            f"the file holds {max(0, available - offset)}"
        )
    try:
        require_memory(
            need + 5 * n, f"reading {name} (shape {shape}, {dtype})", "read it streamed from disk (--stream on)"
        )
    except ValueError as err:
        raise DataError(str(err)) from None
    return shape, dtype


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


def _read_npy(path: Path):
    with open(path, "rb") as f:
        _checked_header(f, path.name, path.stat().st_size)
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False), None


def _read_npz(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except OSError:
        raise
    except Exception as err:  # BadZipFile, and NotImplementedError / ValueError for damaged directory entries
        reason = "not a zip archive, or truncated" if isinstance(err, zipfile.BadZipFile) else _one_line(err)
        raise DataError(f"{path.name} is not a readable .npz file ({reason}); save it again with numpy.savez") from None
    with archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        if not members:
            raise DataError(f"{path.name} holds no arrays")
        keys = list(members)
        xkey = next((k for k in _X_KEYS if k in keys), keys[0])
        ykey = next((k for k in _Y_KEYS if k in keys and k != xkey), None)
        out = []
        for key in (xkey, ykey):
            if key is None:
                out.append(None)
                continue
            name, info = f"{path.name}[{key}]", members[key]
            try:
                with archive.open(info) as f:
                    _checked_header(f, name, info.file_size)
                with archive.open(info) as f:
                    out.append(np.lib.format.read_array(f, allow_pickle=False))
            except DataError:
                raise
            except Exception as err:  # zip and zlib raise BadZipFile, zlib.error, EOFError, ValueError, ...
                raise DataError(
                    f"{name} cannot be read: the archive is corrupted or truncated ({_one_line(err)}); "
                    "save it again with numpy.savez"
                ) from None
        return out[0], out[1]
