"""The ``Dataset`` container and the split helper (``load`` is in ``sources``, above the readers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """``x``: (N, *data_shape) float32, in memory or on disk (``DiskArray``, rows read on
    demand). ``labels``: (N,) class labels or None. ``extra``: other per-example arrays (the
    sine curve's true phase). ``image_shape`` says how to show one example as a picture, where
    that makes sense: (H, W) for grey, (3, H, W) for colour (channels first, as x is).
    Tables also carry ``frame`` (the raw pandas DataFrame of feature columns) and ``schema``
    (the preprocessing that made ``x`` from it, ``vaekit.data.tables.Schema``) and, for a run
    conditioned on table columns, ``covariates`` (those raw columns, kept out of ``frame`` and ``x``)."""

    x: np.ndarray
    name: str
    labels: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    frame: Any = None
    schema: Any = None
    covariates: Any = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(
            x=self.x.subset(index) if hasattr(self.x, "subset") else self.x[index],
            name=self.name,
            labels=None if self.labels is None else self.labels[index],
            extra={k: v[index] for k, v in self.extra.items()},
            image_shape=self.image_shape,
            info=dict(self.info),
            frame=None if self.frame is None else self.frame.iloc[index].reset_index(drop=True),
            schema=self.schema,
            covariates=None if self.covariates is None else self.covariates.iloc[index].reset_index(drop=True),
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
