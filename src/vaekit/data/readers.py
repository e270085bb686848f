"""Readers for user arrays: .npy, .npz, .csv holding a numeric matrix."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

_X_KEYS = ("x", "X", "data", "features")
_Y_KEYS = ("y", "labels", "target")


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read (x, labels-or-None) from a file; x is float32 of shape (N, ...) with N >= 1."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv}
    if suffix not in readers:
        raise DataError(f"cannot read {path.name}: unknown file type {suffix or '(none)'}; use .npy, .npz or .csv")
    try:
        x, labels = readers[suffix](path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return _check(x, path), labels


def _check(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise DataError(f"{path.name} does not hold a numeric array (dtype {x.dtype})")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 0 or x.shape[0] == 0 or x.size == 0:
        raise DataError(f"{path.name} holds no examples")
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path.name} has {int(bad.sum())} NaN or infinite values (first in row {row}); remove or impute them")
    return x


def _read_npy(path: Path):
    return np.load(path, allow_pickle=False), None


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if not keys:
            raise DataError(f"{path.name} holds no arrays")
        xkey = next((k for k in _X_KEYS if k in keys), keys[0])
        ykey = next((k for k in _Y_KEYS if k in keys and k != xkey), None)
        return z[xkey], (z[ykey] if ykey else None)


def _read_csv(path: Path):
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path.name} is empty")
    first = lines[0].split(",")
    has_header = not all(_is_number(c) for c in first)
    rows = lines[1:] if has_header else lines
    widths = {len(r.split(",")) for r in rows}
    if len(widths) > 1:
        counts = [len(r.split(",")) for r in rows]
        bad = next(i for i, c in enumerate(counts) if c != counts[0])
        raise DataError(f"{path.name} has ragged rows: row {bad + 1 + has_header} has {counts[bad]} fields, the first has {counts[0]}")
    try:
        x = np.array([[float(c) if c.strip() else np.nan for c in r.split(",")] for r in rows], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path.name} has a non-numeric value ({err}); this reader takes numeric tables only") from None
    return x.reshape(len(rows), -1), None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
