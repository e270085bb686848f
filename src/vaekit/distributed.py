"""Data-parallel training under ``torchrun``: joining the process group and the few collectives
vaekit needs.

``torchrun --nproc_per_node N -m vaekit train ...`` starts N copies of the command and gives each
one RANK, LOCAL_RANK and WORLD_SIZE (plus the rendezvous address) in its environment.
``launch()`` reads them, joins the process group (gloo carries CPU tensors, NCCL CUDA ones) and
leaves it at the end; without torchrun it does nothing. The training loop itself
(``train.fit(..., rank=, world_size=)``) shards the data, averages gradients with
``DistributedDataParallel`` and sums the metrics; only rank 0 writes files and prints.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import TrainingError


@dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel job (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_context() -> Context | None:
    """The job torchrun describes in the environment, or None when not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not describe a valid job")
    return Context(rank=rank, world_size=world, local_rank=local)


def current() -> Context:
    """This process's place in the initialised process group (rank 0 of 1 if there is none)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    return Context()


@contextmanager
def launch(timeout_minutes: float = 30.0) -> Iterator[Context]:
    """Join the torchrun job described by the environment for the duration of the block.

    Nothing happens (and rank 0 of 1 is yielded) without torchrun, with a single process, or
    when the caller has already initialised a process group (it is then left as it is).
    """
    ctx = env_context()
    if ctx is None or ctx.world_size == 1 or not dist.is_available() or dist.is_initialized():
        yield current()
        return
    if torch.cuda.is_available() and ctx.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(ctx.local_rank)  # before any CUDA work: one GPU per process
    # one group, two transports: gloo for CPU tensors, NCCL for CUDA ones
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    left = False
    try:
        yield ctx
        dist.barrier()  # all processes leave together: none ends while another still talks to it
        left = True
    finally:
        dist.destroy_process_group()
        if left:
            # the communicators' last references (DDP's reducer holds the group in reference cycles) go now,
            # while the interpreter is whole; freed at interpreter exit, gloo's worker threads can abort it
            gc.collect()


def device_for_rank(device: torch.device, ctx: Context) -> torch.device:
    """In a multi-process job each process gets its own GPU (cuda:LOCAL_RANK)."""
    if not ctx.active or device.type != "cuda" or device.index is not None:
        return device
    if ctx.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"process LOCAL_RANK={ctx.local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most one process per GPU or train with --device cpu"
        )
    return torch.device("cuda", ctx.local_rank)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes, in place (a no-op when alone)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (in memory; ``obj`` must be picklable)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(module: torch.nn.Module) -> str:
    """Raise ``TrainingError`` unless every process holds bit-identical weights; return their digest."""
    digest = state_digest(module)
    digests = gather_objects(digest)
    if len(set(digests)) != 1:
        listing = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        raise TrainingError(
            f"the processes ended with different weights ({listing}); data-parallel training went wrong"
        )
    return digest
