"""Where training batches come from: shuffled index batches over data already on the device, or
over a file on disk read batch by batch (``DiskSource``) when the data are larger than memory."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from .data.disk import as_streamed, is_streamed

__all__ = ["DiskSource", "TensorSource", "as_tensor", "gather", "inference", "is_streamed", "iterate", "make_source"]


@contextlib.contextmanager
def inference(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The one inference context: ``model`` in eval mode under ``torch.no_grad()``, its
    training flag restored afterwards (also when the body raises)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def as_tensor(x, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class TensorSource:
    """All of the data as one tensor on the device; an epoch is a random permutation cut into
    batches (no per-sample Python work, no host-device copies per step).

    With ``world_size > 1`` every rank draws the same permutation (same generator seed) and
    takes every ``world_size``-th index, cut to equal length so all ranks step together.
    """

    def __init__(
        self,
        x,
        batch_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        binarize: bool = False,
    ) -> None:
        self.x = as_tensor(x, device)
        if self.x.shape[0] == 0:
            raise ValueError("training data are empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = self.x.device
        self.binarize = bool(binarize)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = self.x.shape[0] // self.world_size if self.world_size > 1 else self.x.shape[0]
        if self.per_rank == 0:
            raise ValueError(f"{self.x.shape[0]} examples cannot be shared among {self.world_size} processes")

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    @property
    def n_examples(self) -> int:
        return self.per_rank

    def _permutation(self, generator: torch.Generator) -> torch.Tensor:
        perm = torch.randperm(self.x.shape[0], generator=generator)
        if self.world_size > 1:
            perm = perm[self.rank :: self.world_size][: self.per_rank]
        return perm

    def _finish(self, xb: torch.Tensor) -> torch.Tensor:
        # dynamic binarisation: the data hold probabilities, each batch is a fresh x ~ Bernoulli(p)
        return torch.bernoulli(xb) if self.binarize else xb

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        perm = self._permutation(generator).to(self.device)
        for start in range(0, self.per_rank, self.batch_size):  # index_select: one gather kernel, no indexing machinery
            yield self._finish(self.x.index_select(0, perm[start : start + self.batch_size]))


class DiskSource(TensorSource):
    """Batches gathered from a file on disk: the same shuffled permutation as
    ``TensorSource`` (so a run is the same whichever source it gets), but each batch's rows
    are read from disk in file order and copied to the device one batch at a time. Memory
    holds one batch, not the data set."""

    def __init__(
        self,
        x,
        batch_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        binarize: bool = False,
    ) -> None:
        if len(x) == 0:
            raise ValueError("training data are empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x = x
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.binarize = bool(binarize)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = len(x) // self.world_size if self.world_size > 1 else len(x)
        if self.per_rank == 0:
            raise ValueError(f"{len(x)} examples cannot be shared among {self.world_size} processes")

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        perm = self._permutation(generator).numpy()
        for start in range(0, self.per_rank, self.batch_size):
            rows = gather(self.x, perm[start : start + self.batch_size])
            yield self._finish(torch.from_numpy(rows).to(self.device, non_blocking=True))


def gather(x, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an on-disk array as float32, read in file order, returned in ``idx`` order."""
    if hasattr(x, "rows"):
        return x.rows(idx)
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *x.shape[1:]), dtype=np.float32)
    out[order] = x[idx[order]]
    return out


def make_source(x, batch_size: int, device, rank: int = 0, world_size: int = 1, binarize: bool = False) -> TensorSource:
    """The batch source for training data ``x``; the one place that decides how batches are made.
    Memory-mapped data (``np.load(..., mmap_mode="r")``) and ``vaekit.data.DiskArray`` are
    streamed from disk; anything else is put on the device whole. ``binarize``: every batch
    is a fresh Bernoulli draw from data holding probabilities (dynamic binarisation)."""
    if is_streamed(x):
        return DiskSource(as_streamed(x), batch_size, device, rank=rank, world_size=world_size, binarize=binarize)
    return TensorSource(x, batch_size, device, rank=rank, world_size=world_size, binarize=binarize)


def iterate(x, batch_size: int, device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """Consecutive batches, for evaluation. ``x`` is a tensor (sliced where it is) or an array,
    ones on disk included (each batch read and moved to ``device`` in turn)."""
    if isinstance(x, torch.Tensor):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yield xb if device is None else xb.to(device)
        return
    x = as_streamed(x)
    for start in range(0, len(x), batch_size):
        yield as_tensor(np.asarray(x[start : start + batch_size]), device or "cpu")
