"""Where training batches come from: shuffled index batches over data already on the device."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch


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
    ) -> None:
        self.x = as_tensor(x, device)
        if self.x.shape[0] == 0:
            raise ValueError("training data are empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = self.x.device
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = self.x.shape[0] // self.world_size if self.world_size > 1 else self.x.shape[0]
        if self.per_rank == 0:
            raise ValueError(f"{self.x.shape[0]} examples cannot be shared among {self.world_size} processes")

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    @property
    def n_examples(self) -> int:
        return self.per_rank

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.x.shape[0], generator=generator)
        if self.world_size > 1:
            perm = perm[self.rank :: self.world_size][: self.per_rank]
        perm = perm.to(self.device)
        for start in range(0, self.per_rank, self.batch_size):
            yield self.x[perm[start : start + self.batch_size]]


def make_source(x, batch_size: int, device, rank: int = 0, world_size: int = 1) -> TensorSource:
    """The batch source for training data ``x``; the one place that decides how batches are made."""
    return TensorSource(x, batch_size, device, rank=rank, world_size=world_size)


def iterate(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive batches, for evaluation."""
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]
