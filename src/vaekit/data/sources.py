"""``load``: a built-in data set by name or a file or folder by path. It sits above ``core``,
``builtin`` and ``readers`` (which only import ``core``), so the data package has no import cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .builtin import BUILTIN
from .core import Dataset
from .readers import read_path


def load(source: str, **options: Any) -> Dataset:
    """A built-in data set by name (``sine``, ``pinwheel``, ``digits``) or a path: ``.npy``
    (read from disk batch by batch when large or with ``stream=True``), ``.npz``, a CSV/TSV/Parquet table, an IDX
    file (MNIST's format, gzip'd or not) or a folder of images. Options: ``binarize`` (pixels
    > 0.5 become 1), ``stream``, ``label_column``, ``numeric`` / ``binary`` / ``categorical``
    (column type overrides), ``schema`` (a fitted table preprocessing to apply)."""
    if source in BUILTIN:
        return BUILTIN[source](**options)
    path = Path(source)
    if not path.exists():
        raise DataError(f"no data set or file named {source!r}; give a path or one of: {', '.join(sorted(BUILTIN))}")
    return read_path(path, **options)
