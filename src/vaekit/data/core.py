"""The ``Dataset`` container, the split helper and ``load`` (a built-in name or a path)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """``x``: (N, *data_shape) float32, in memory or on disk (``DiskArray``, rows read on
    demand). ``labels``: (N,) class labels or None. ``extra``: other per-example arrays (the
    sine curve's true phase). ``image_shape`` says how to show one example as a picture, where
    that makes sense: (H, W) for grey, (3, H, W) for colour (channels first, as x is).
    Tables also carry ``frame`` (the raw pandas DataFrame of feature columns) and ``schema``
    (the preprocessing that made ``x`` from it, ``vaekit.data.tables.Schema``)."""

    x: np.ndarray
    name: str
    labels: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    frame: Any = None
    schema: Any = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray) -> "Dataset":
        return Dataset(
            x=self.x.subset(index) if hasattr(self.x, "subset") else self.x[index],
            name=self.name,
            labels=None if self.labels is None else self.labels[index],
            extra={k: v[index] for k, v in self.extra.items()},
            image_shape=self.image_shape,
            info=dict(self.info),
            frame=None if self.frame is None else self.frame.iloc[index].reset_index(drop=True),
            schema=self.schema,
        )


def split(n: int, fractions: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it by ``fractions`` (summing to 1).
    The same arguments always give the same index arrays."""
    fr = np.asarray(fractions, dtype=float)
    if (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fr)[:-1] * n).astype(int)
    return np.split(perm, cuts)


def load(source: str, **options: Any) -> Dataset:
    """A built-in data set by name (``sine``, ``pinwheel``, ``digits``) or a path: ``.npy``
    (read from disk batch by batch when large or with ``stream=True``), ``.npz``, a CSV/TSV/Parquet table, an IDX
    file (MNIST's format, gzip'd or not) or a folder of images. Options: ``binarize`` (pixels
    > 0.5 become 1), ``stream``, ``label_column``, ``numeric`` / ``binary`` / ``categorical``
    (column type overrides), ``schema`` (a fitted table preprocessing to apply)."""
    from .builtin import BUILTIN
    from .readers import read_path

    if source in BUILTIN:
        return BUILTIN[source](**options)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"no data set or file named {source!r}; give a path or one of: {', '.join(sorted(BUILTIN))}"
        )
    return read_path(path, **options)
