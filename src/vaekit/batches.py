"""Where training batches come from: shuffled index batches over data already on the device, over
a file on disk read batch by batch (``DiskSource``) when the data are larger than memory, over a
map-style ``torch.utils.data.Dataset`` read item by item (``DatasetSource``), or from an iterable
dataset or a ``DataLoader`` as it yields them (``LoaderSource``)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from .data.disk import as_streamed, is_streamed

__all__ = [
    "DatasetSource",
    "DiskSource",
    "LoaderSource",
    "TensorSource",
    "as_tensor",
    "gather",
    "inference",
    "is_dataset",
    "is_streamed",
    "iterate",
    "make_source",
    "materialize",
]


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
        self._keep(*self._hold(x, device), batch_size, rank, world_size, binarize)

    def _hold(self, x, device):
        """The data as this source keeps them, and the device its batches go to."""
        x = as_tensor(x, device)
        return x, x.device

    def _keep(self, x, device, batch_size: int, rank: int, world_size: int, binarize: bool) -> None:
        """Check and keep the data and the batching settings (shared with ``DiskSource``)."""
        if len(x) == 0:
            raise ValueError("training data are empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.batch_size, self.device = x, int(batch_size), torch.device(device)
        self.binarize = bool(binarize)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = len(x) // self.world_size if self.world_size > 1 else len(x)
        if self.per_rank == 0:
            raise ValueError(f"{len(x)} examples cannot be shared among {self.world_size} processes")

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

    def _hold(self, x, device):
        return x, torch.device(device)  # the rows stay on disk

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


# -- torch datasets and loaders ------------------------------------------------------------
def is_dataset(x) -> bool:
    """``x`` is a ``torch.utils.data.Dataset`` (map-style or iterable) or a ``DataLoader``."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    return isinstance(x, (Dataset, IterableDataset, DataLoader))


def _is_map_style(x) -> bool:
    from torch.utils.data import Dataset, IterableDataset

    return isinstance(x, Dataset) and not isinstance(x, IterableDataset) and hasattr(x, "__len__")


def _example(item) -> torch.Tensor:
    """One example of a dataset as a float32 CPU tensor. A (x, label, ...) tuple or list (the
    torchvision convention) gives its first element; a label is never trained on."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("a dataset item is an empty tuple; it must be an example or (example, label, ...)")
        item = item[0]
    if isinstance(item, torch.Tensor):
        return item.detach().to("cpu", torch.float32)
    try:
        return torch.as_tensor(np.asarray(item, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"a dataset item of type {type(item).__name__} is not numeric ({err}); give the Dataset a "
            "transform that returns a tensor or an array"
        ) from None


def _stack(items: list, what: str) -> torch.Tensor:
    examples = [_example(i) for i in items]
    shapes = {tuple(e.shape) for e in examples}
    if len(shapes) > 1:
        raise ValueError(f"{what} holds examples of different shapes {sorted(shapes)[:3]}; resize them to one shape")
    return torch.stack(examples)


class _DatasetRows:
    """A map-style dataset seen as rows: ``shape``, ``len`` and ``rows(idx)`` for ``gather``."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        n = len(dataset)
        self.first = _example(dataset[0]) if n else None
        self.shape = (n, *(() if self.first is None else self.first.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx) -> np.ndarray:
        return self.batch(idx).numpy()

    def batch(self, idx) -> torch.Tensor:
        return _stack([self.dataset[int(i)] for i in idx], "the dataset")


class DatasetSource(TensorSource):
    """Batches from a map-style ``torch.utils.data.Dataset``: the same seeded permutation as
    ``TensorSource`` (so shuffling follows ``seed`` and a resumed run continues exactly), each batch
    read item by item (``dataset[i]``, transforms included), stacked and copied to the device.
    Memory holds one batch."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        binarize: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x = dataset if isinstance(dataset, _DatasetRows) else _DatasetRows(dataset)
        if len(self.x) == 0:
            raise ValueError("training data are empty")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.binarize = bool(binarize)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = len(self.x) // self.world_size if self.world_size > 1 else len(self.x)
        if self.per_rank == 0:
            raise ValueError(f"{len(self.x)} examples cannot be shared among {self.world_size} processes")

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        perm = self._permutation(generator).tolist()
        for start in range(0, self.per_rank, self.batch_size):
            xb = self.x.batch(perm[start : start + self.batch_size])
            yield self._finish(xb.to(self.device, non_blocking=True))


class _LoaderRows:
    """The first batch of a loader, for ``gather`` (the thread-count trial)."""

    def __init__(self, source: LoaderSource) -> None:
        self.source = source

    def rows(self, idx) -> np.ndarray:
        first = next(iter(self.source._raw_batches()))
        return first[np.asarray(idx) % first.shape[0]].numpy()


RESUME_WARNING = (
    "{what} decides its own order of examples: vaekit cannot seed or restore it, so training is not "
    "reproducible from seed and a resumed run does not continue exactly; pass a map-style Dataset "
    "(vaekit shuffles it with its seeded sampler) or arrays for exact resume"
)


def _loader_batches(loader, batch_size: int) -> Iterator[torch.Tensor]:
    """A DataLoader's batches (x of an (x, label, ...) batch), or an iterable's examples in batches."""
    from torch.utils.data import DataLoader

    if isinstance(loader, DataLoader):
        for b in loader:
            xb = b[0] if isinstance(b, (tuple, list)) else b
            # a collated batch is one tensor already; anything else is stacked example by example
            yield xb.detach().to("cpu", torch.float32) if isinstance(xb, torch.Tensor) else _stack(list(xb), "a batch")
        return
    items: list = []
    for item in loader:
        items.append(item)
        if len(items) == batch_size:
            yield _stack(items, "the dataset")
            items = []
    if items:
        yield _stack(items, "the dataset")


class LoaderSource(TensorSource):
    """Batches as an iterable ``Dataset`` (examples, batched here) or a ``DataLoader`` (its own
    batches, a (x, label, ...) batch giving x) yields them, one pass per epoch. The order is the
    loader's: shuffling is not vaekit's seeded permutation and resume cannot be exact (a warning
    says so). The number of batches is ``len(loader)`` where it exists, else counted by the last
    pass."""

    def __init__(self, loader, batch_size: int, device: torch.device | str = "cpu", binarize: bool = False) -> None:
        from torch.utils.data import DataLoader

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loader = loader
        self.is_loader = isinstance(loader, DataLoader)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.binarize = bool(binarize)
        self.rank, self.world_size = 0, 1
        self.x = _LoaderRows(self)
        self._counted: tuple[int, int] | None = None  # (batches, examples) of the last full pass
        first = next(iter(self._raw_batches()), None)
        if first is None:
            raise ValueError("training data are empty")
        self.first_shape = tuple(first.shape[1:])
        try:
            n = len(loader.dataset) if self.is_loader else len(loader)
        except TypeError:
            n = None
        self.per_rank = n if n is not None else first.shape[0]
        self.known_length = n is not None

    def _raw_batches(self) -> Iterator[torch.Tensor]:
        return _loader_batches(self.loader, self.batch_size)

    def __len__(self) -> int:
        if self.is_loader:
            with contextlib.suppress(TypeError):
                return len(self.loader)
        if self.known_length:
            return math.ceil(self.per_rank / self.batch_size)
        return self._counted[0] if self._counted else 1

    @property
    def n_examples(self) -> int:
        return self._counted[1] if self._counted else self.per_rank

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        n_batches = n_examples = 0
        for xb in self._raw_batches():
            n_batches, n_examples = n_batches + 1, n_examples + xb.shape[0]
            yield self._finish(xb.to(self.device, non_blocking=True))
        self._counted = (n_batches, n_examples)
        self.per_rank = n_examples


def make_source(x, batch_size: int, device, rank: int = 0, world_size: int = 1, binarize: bool = False) -> TensorSource:
    """The batch source for training data ``x``; the one place that decides how batches are made.
    Memory-mapped data (``np.load(..., mmap_mode="r")``) and ``vaekit.data.DiskArray`` are
    streamed from disk; a map-style torch ``Dataset`` is read item by item in vaekit's seeded order;
    an iterable ``Dataset`` or a ``DataLoader`` is taken in its own order (with a warning that
    resume cannot be exact); anything else is put on the device whole. ``binarize``: every batch
    is a fresh Bernoulli draw from data holding probabilities (dynamic binarisation)."""
    if is_dataset(x):
        from torch.utils.data import DataLoader

        if _is_map_style(x):
            return DatasetSource(x, batch_size, device, rank=rank, world_size=world_size, binarize=binarize)
        if world_size > 1:
            raise ValueError("data-parallel training needs arrays or a map-style Dataset, not an iterable or a loader")
        what = "a DataLoader" if isinstance(x, DataLoader) else "an iterable Dataset"
        warnings.warn(RESUME_WARNING.format(what=what), stacklevel=3)
        return LoaderSource(x, batch_size, device, binarize=binarize)
    if is_streamed(x):
        return DiskSource(as_streamed(x), batch_size, device, rank=rank, world_size=world_size, binarize=binarize)
    return TensorSource(x, batch_size, device, rank=rank, world_size=world_size, binarize=binarize)


def materialize(x, limit: int | None = None) -> torch.Tensor:
    """The examples of a torch Dataset or DataLoader (the first ``limit`` of them) as one CPU tensor."""
    out, n = [], 0
    for xb in iterate(x, 256):
        out.append(xb)
        n += xb.shape[0]
        if limit is not None and n >= limit:
            break
    if not out:
        raise ValueError("the dataset is empty")
    t = torch.cat(out)
    return t if limit is None else t[:limit]


def iterate(x, batch_size: int, device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """Consecutive batches, for evaluation. ``x`` is a tensor (sliced where it is), an array (ones
    on disk included: each batch read and moved to ``device`` in turn), or a torch Dataset or
    DataLoader (read in its own order)."""
    if isinstance(x, torch.Tensor):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yield xb if device is None else xb.to(device)
        return
    if is_dataset(x):
        if _is_map_style(x):
            for start in range(0, len(x), batch_size):
                yield _stack([x[i] for i in range(start, min(start + batch_size, len(x)))], "the dataset").to(
                    device or "cpu"
                )
            return
        for xb in _loader_batches(x, batch_size):
            yield xb.to(device or "cpu")
        return
    x = as_streamed(x)
    for start in range(0, len(x), batch_size):
        yield as_tensor(np.asarray(x[start : start + batch_size]), device or "cpu")
