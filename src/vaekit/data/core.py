"""The ``Dataset`` container, the split helper and ``load`` (a built-in name or a path)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """``x``: (N, *data_shape) float32. ``labels``: (N,) class labels or None. ``extra``:
    other per-example arrays (the sine curve's true phase). ``image_shape`` says how to
    show one example as a picture, where that makes sense."""

    x: np.ndarray
    name: str
    labels: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray) -> "Dataset":
        return Dataset(
            x=self.x[index],
            name=self.name,
            labels=None if self.labels is None else self.labels[index],
            extra={k: v[index] for k, v in self.extra.items()},
            image_shape=self.image_shape,
            info=dict(self.info),
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
    """A built-in data set by name (``sine``, ``pinwheel``, ``digits``) or a file path."""
    from .builtin import BUILTIN
    from .readers import read_array

    if source in BUILTIN:
        return BUILTIN[source](**options)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"no data set or file named {source!r}; give a path or one of: {', '.join(sorted(BUILTIN))}"
        )
    x, labels = read_array(path)
    return Dataset(x=x, name=path.stem, labels=labels, info={"path": str(path.resolve())})
