"""Training: ``fit(model, train, val, config)`` -> FitResult (history, trainer state).

The loop is deliberately lean: the data sit on the device, an epoch is a shuffled index
permutation, per-batch metric sums stay on the device and are read back once per epoch (no
host-device synchronisation inside an epoch), Adam is the fused kernel where torch has one.
Options: ``threads`` (CPU intra-op threads), ``compile`` (torch.compile of the loss step),
``amp="bf16"`` (bfloat16 autocast for the networks; likelihood and KL stay float32), and
data-parallel training over processes (``rank``/``world_size``, see ``vaekit.distributed``).
Schedules (KL warm-up) live here; the model never sees the epoch.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import adam, cores, distributed, likelihoods, objectives, schedules
from .batches import (
    TensorSource,
    as_tensor,
    gather,
    inference,
    is_dataset,
    is_streamed,
    iterate,
    make_source,
    materialize,
)
from .config import TrainConfig  # the settings dataclass (torch-free, shared with the CLI); re-exported here
from .errors import TrainingError
from .model import Model

AMP_DTYPES = {"bf16": torch.bfloat16}


class History(list):
    """One dict per epoch (train_elbo, train_log_px_z, train_kl, beta, val_elbo, ...)."""

    def column(self, key: str) -> list[float]:
        return [row.get(key, math.nan) for row in self]

    @property
    def last(self) -> dict[str, Any]:
        return self[-1] if self else {}


@dataclass
class TrainerState:
    """Everything needed to continue training exactly where it stopped."""

    epoch: int = 0  # completed epochs
    step: int = 0
    history: History = field(default_factory=History)
    optimizer: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    best_val: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False
    schedule: dict[str, Any] | None = None  # the plateau learning-rate schedule's tracker (best, bad, scale)
    # where the last checkpoint of this run was written (set by checkpoint callbacks and load_trainer;
    # not itself saved): the divergence message names it only when there is one
    saved_to: str | None = None


Callback = Callable[[Model, TrainerState], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if str(device) != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"unknown device {device!r}: {err}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; use --device cpu or auto")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_optimizer(model: Model, config: TrainConfig):
    """``config.optimizer``: Adam or AdamW, as vaekit's direct call of torch's fused kernel where it
    exists (see ``vaekit.adam``), else torch's foreach implementation. The learning rate is set per
    epoch by the schedule (``vaekit.schedules``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused, fallback = (adam.AdamW, torch.optim.AdamW) if config.optimizer == "adamw" else (adam.Adam, torch.optim.Adam)
    if adam.available(params, fused._kernel):
        return fused(params, lr=config.lr, weight_decay=config.weight_decay)
    return fallback(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


def _check_same_optimizer(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to continue a trainer state with another optimiser than the one that wrote it: Adam's
    and AdamW's moments have the same layout, so loading one into the other would pass unnoticed."""
    groups = saved.get("param_groups") or [{}]
    decoupled = groups[0].get("decoupled_weight_decay")
    if decoupled is None:  # a state written before the optimiser was a setting: Adam
        decoupled = False
    was = "adamw" if decoupled else "adam"
    if was != config.optimizer:
        raise ValueError(
            f"the trainer state was written by optimizer={was!r}, but this run asks for optimizer="
            f"{config.optimizer!r}: resume with optimizer={was!r}, or start a new run"
        )


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _rng_state(generator: torch.Generator, device: torch.device, world_size: int = 1) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if world_size > 1:
        # each process draws its own noise; keeping every process's state makes resume exact
        ranks = distributed.gather_objects({k: v for k, v in state.items() if k != "shuffle"})
        state["torch_per_rank"] = torch.stack([r["torch"] for r in ranks])
        if "cuda" in state:
            state["cuda_per_rank"] = torch.stack([r["cuda"] for r in ranks])
    return state


def _set_rng_state(
    state: dict[str, torch.Tensor],
    generator: torch.Generator,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
) -> None:
    generator.set_state(state["shuffle"].cpu())  # the same on every process: one permutation per epoch
    per_rank = state.get("torch_per_rank")
    if per_rank is not None and per_rank.shape[0] == world_size:
        torch.set_rng_state(per_rank[rank].cpu().clone())
        if device.type == "cuda" and "cuda_per_rank" in state:
            torch.cuda.set_rng_state(state["cuda_per_rank"][rank].cpu().clone(), device)
    elif world_size == 1:
        torch.set_rng_state(state["torch"].cpu())
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    else:  # saved by a different number of processes: fresh, reproducible noise for each one
        torch.manual_seed(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


def _elbo_sums(model: Model, x, batch_size: int, n_samples: int = 1, c: torch.Tensor | None = None) -> torch.Tensor:
    """Sums over ``x`` of the ELBO, log p(x|z) and KL, (3,) float64 on the model's device (no host
    sync). ``x`` may be a tensor or an array (one on disk is read batch by batch); ``c`` the
    conditions of a conditional model."""
    device = x.device if isinstance(x, torch.Tensor) else next(model.parameters()).device
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    with inference(model):
        for i, xb in enumerate(iterate(x, batch_size, device)):
            cb = None if c is None else c[i * batch_size : (i + 1) * batch_size]
            t = objectives.elbo(model, xb, n_samples=n_samples, c=cb)
            sums += torch.stack([t.elbo.sum(), t.log_px_z.sum(), t.kl.sum()]).double()
    return sums


def evaluate_elbo(
    model: Model, x: torch.Tensor, batch_size: int = 4096, n_samples: int = 1, c: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean ELBO, reconstruction log-likelihood and KL over ``x`` (nats per example); ``c``: the
    conditions of a conditional model."""
    elbo, log_px_z, kl = (_elbo_sums(model, x, batch_size, n_samples, c=c) / x.shape[0]).tolist()
    return {"elbo": elbo, "log_px_z": log_px_z, "kl": kl}


# buffers (the prior's constants) never change, so DDP need not re-send them before every step
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class LossStep(nn.Module):
    """The forward half of a training step as a module: the loss and, detached, the batch sums
    of (objective, ELBO, log p(x|z), KL). Being a module lets DistributedDataParallel wrap it
    (gradient averaging) and torch.compile compile it as one graph."""

    def __init__(self, model: Model, config: TrainConfig, device_type: str) -> None:
        super().__init__()
        self.model = model
        self.n_samples, self.free_bits, self.iw_samples = config.n_samples, config.free_bits, config.iw_samples
        self.amp_dtype = AMP_DTYPES.get(config.amp) if config.amp else None
        self.device_type = device_type
        # the diagonal-Gaussian / N(0, I) ELBO straight from tensors (objectives.fast_loss); the rest, general
        self.fast = objectives.fast_step_supported(model, self.free_bits, self.iw_samples)

    def forward(self, x: torch.Tensor, beta: float, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.amp_dtype is None and self.fast and c is None:
            return objectives.fast_loss(self.model, x, beta, self.n_samples)
        autocast = (
            torch.autocast(self.device_type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:  # the networks run in bf16; Model casts their outputs to float32 for q, p(x|z), KL
            if self.fast and c is None:
                return objectives.fast_loss(self.model, x, beta, self.n_samples)
            loss, t = objectives.loss(
                self.model,
                x,
                beta=beta,
                n_samples=self.n_samples,
                free_bits=self.free_bits,
                iw_samples=self.iw_samples,
                c=c,
            )
        sums = torch.stack([t.objective, t.elbo, t.log_px_z, t.kl]).detach().sum(1)  # (4,)
        return loss, sums


def _compiled(step: nn.Module) -> Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]:
    """``torch.compile(step)``; if compiling fails (no C++ compiler, an unsupported operation),
    warn once and go on eagerly with the same module, so ``compile=True`` never stops a run."""
    try:
        compiled = torch.compile(step)
    except Exception as err:  # noqa: BLE001 - any failure of the optional compiler means: run eagerly
        warnings.warn(f"torch.compile is unavailable ({_first_line(err)}); training runs without it", stacklevel=2)
        return step
    current: list[Callable] = [compiled]

    def run(x: torch.Tensor, beta: float, c: torch.Tensor | None = None):
        if current[0] is step:
            return step(x, beta, c)
        try:
            return current[0](x, beta, c)
        except Exception as err:  # noqa: BLE001 - compilation happens lazily, at the first calls
            warnings.warn(f"torch.compile failed ({_first_line(err)}); training continues without it", stacklevel=2)
            current[0] = step
            return step(x, beta, c)

    return run


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def thread_candidates() -> list[int]:
    """The intra-op thread counts the automatic setting tries: 1, 2 and all cores (those that exist)."""
    n_cores = cores.usable()
    return sorted({n for n in (1, 2, n_cores) if n <= n_cores})


def free_cores() -> int:
    """Cores that other processes' runnable threads leave free now (``cores.free_cores``: the fewest
    others seen in up to eight reads 3 ms apart). Counts above it are not tried: on a busy machine a
    step at more threads than are free waits at every barrier for a thread that is not scheduled
    (20x slower seen), and even timing one such step costs seconds."""
    return cores.free_cores()


def _trial_batch(run: _Run) -> torch.Tensor:
    n = min(run.source.batch_size, run.source.per_rank)
    if isinstance(run.source.x, torch.Tensor):
        return run.source.x[:n]
    return as_tensor(gather(run.source.x, np.arange(n)), run.device)


def _fastest_threads(
    run: _Run, candidates: list[int], budget_s: float = 0.03, rounds: int = 2, min_run_s: float = 1.0
) -> int:
    """Time real training steps (forward and backward on the first batch) at each thread count,
    in ``rounds`` rounds, and return the fastest. Nothing of the run changes: no optimiser step,
    gradients and buffers (batch-norm statistics) put back, the global RNG restored. A run that the
    first candidate would finish in under ``min_run_s`` keeps it: more threads could save less than
    one step at a bad count costs (on a busy machine a step at 2 threads can take 20x longer)."""
    if len(candidates) < 2:
        return candidates[0]
    rng = torch.get_rng_state()
    xb, cb = run.split(_trial_batch(run))
    buffers = [b.detach().clone() for b in run.model.buffers()]
    grads = [p.grad for p in run.params]
    best = {n: math.inf for n in candidates}
    run.model.train()

    def one_step() -> None:
        loss, _ = run.step(xb, run.config.beta) if cb is None else run.step(xb, run.config.beta, cb)
        loss.backward()
        for p in run.params:
            p.grad = None

    try:
        for round_ in range(rounds):
            fastest = min(best.values())
            # later rounds retime only the counts that came close: a clearly slower count (many threads on
            # a busy machine can be 10x slower) costs one step, not a round
            for n in candidates if round_ == 0 else [n for n in candidates if best[n] < 1.5 * fastest]:
                torch.set_num_threads(n)
                started = time.perf_counter()
                one_step()  # the first step at a new count also wakes its thread pool up
                first = time.perf_counter() - started
                if first > 3 * min(best.values()):
                    best[n] = min(best[n], first)
                    continue
                steps, started = 0, time.perf_counter()
                while True:
                    one_step()
                    steps += 1
                    elapsed = time.perf_counter() - started
                    if elapsed > budget_s or steps >= 50:
                        break
                best[n] = min(best[n], elapsed / steps)
                if round_ == 0 and n == candidates[0]:
                    remaining = (run.config.epochs - run.state.epoch) * len(run.source)
                    if best[n] * remaining < min_run_s:
                        break
            else:
                continue
            break
    finally:
        torch.set_rng_state(rng)
        with torch.no_grad():
            for b, saved in zip(run.model.buffers(), buffers):
                b.copy_(saved)
        for p, g in zip(run.params, grads):
            p.grad = g
    return min(candidates, key=lambda n: best[n])


@contextlib.contextmanager
def cpu_threads(threads: int, run: _Run, resume: TrainerState | None = None) -> Iterator[int]:
    """Set torch's intra-op CPU threads for a training run and restore them afterwards.

    ``threads > 0`` is taken as given. ``0`` (automatic) times a few real steps at 1, 2 and all
    cores (``thread_candidates``, less the counts above the cores other processes leave free right
    now, ``free_cores``) and keeps the fastest: whether threads pay depends on the model,
    the batch and how busy the machine is, so it is measured, not guessed. The count is written in
    the history (``threads``) and a resumed run takes it again, since the count can change float
    rounding; set ``threads`` for runs that must match bit for bit across machines. Runs where
    OMP_NUM_THREADS is set (torchrun sets it to 1 per process), data-parallel, compiled and
    non-CPU runs keep torch's setting.
    """
    before = torch.get_num_threads()
    wanted = threads
    automatic = (
        threads == 0
        and run.device.type == "cpu"
        and "OMP_NUM_THREADS" not in os.environ
        and run.world_size == 1
        and not run.config.compile
    )
    try:
        if automatic:
            recorded = resume.history.last.get("threads") if resume is not None and resume.history else None
            if recorded:
                wanted = int(recorded)
            else:  # counts above the cores other work leaves free now are not worth a trial step
                free = free_cores()
                candidates = [n for n in thread_candidates() if n <= max(1, free)]
                wanted = _fastest_threads(run, candidates)
        if wanted > 0 and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class FitResult:
    """What ``fit`` returns: the per-epoch history, the trainer state (a complete resume point)
    and, for data-parallel runs, the sha256 digest of the weights every process ended with."""

    history: History
    state: TrainerState
    replica_digest: str | None = None
    threads: int | None = None  # the CPU intra-op threads the run used (CPU runs)


class EarlyStopping:
    """Callback: track the best validation ELBO and stop after ``patience`` epochs without an
    improvement of more than ``min_delta`` (``patience=None``: track only). With ``restore_best``
    it keeps a copy of the best weights, which ``fit`` loads back after stopping."""

    def __init__(self, patience: int | None = None, min_delta: float = 0.0, restore_best: bool = True) -> None:
        self.patience, self.min_delta, self.restore_best = patience, float(min_delta), bool(restore_best)

    def __call__(self, model: Model, state: TrainerState) -> None:
        val_elbo = state.history.last.get("val_elbo")
        if val_elbo is None:
            return
        if val_elbo > state.best_val + self.min_delta:
            state.best_val, state.best_epoch, state.bad_epochs = val_elbo, state.epoch, 0
            if self.patience and self.restore_best:
                state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        if self.patience and state.bad_epochs >= self.patience:
            state.stopped_early = True


def _check_data_parallel(config: TrainConfig, rank: int, world_size: int):
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the number of processes "
            f"({world_size}): each process takes batch_size / {world_size} examples per step"
        )
    ctx = distributed.current()
    if (ctx.rank, ctx.world_size) != (rank, world_size):
        raise ValueError(
            f"fit(rank={rank}, world_size={world_size}) needs an initialised process group of that "
            f"size (found rank {ctx.rank} of {ctx.world_size}); start it with torchrun"
        )
    return ctx


@dataclass
class _Run:
    """Everything the loop needs, made once by ``_setup``."""

    model: Model
    config: TrainConfig
    device: torch.device
    source: TensorSource
    x_val: Any
    n_val: int
    optimizer: Any  # vaekit.adam.Adam or a torch optimiser
    generator: torch.Generator
    state: TrainerState
    step: Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
    world_size: int
    params: list[torch.Tensor]
    good: _GoodCopy
    n_features: int = 0  # > 0: a conditional model's batches carry their conditions after this many columns
    val_condition: torch.Tensor | None = None

    def split(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch and its conditions (None for an unconditional model)."""
        if not self.n_features:
            return xb, None
        x, c = xb[:, : self.n_features].reshape(-1, *self.model.data_shape), xb[:, self.n_features :]
        return (torch.bernoulli(x) if self.config.dynamic_binarize else x), c


def _setup(
    model: Model,
    train,
    val,
    config: TrainConfig,
    resume: TrainerState | None,
    rank: int,
    world_size: int,
    condition=None,
    val_condition=None,
) -> _Run:
    """Check the settings and the data, put them on the device, build the optimiser and the loss
    step, and restore (or seed) the RNG streams. Nothing here trains."""
    if val is not None and is_dataset(val):  # validation data are read into memory once
        val = materialize(val) if _has_examples(val) else None
    if val is not None and len(val) == 0:
        val = None
    if config.early_stopping and val is None:
        raise ValueError("early stopping needs validation data")
    if config.lr_schedule == "plateau" and val is None:
        raise ValueError("lr_schedule 'plateau' follows the validation ELBO: give validation data or another schedule")
    ctx = _check_data_parallel(config, rank, world_size) if world_size > 1 else None
    device = resolve_device(config.device)
    if ctx is not None:
        device = distributed.device_for_rank(device, ctx)
    model.to(device)
    # a torch Dataset or DataLoader is checked on its first batch (its examples are only read while training)
    checked = materialize(train, config.batch_size) if is_dataset(train) else train
    if model.data_shape is not None and tuple(checked.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            f"data have shape {tuple(checked.shape[1:])} per example, the model expects {model.data_shape}"
        )
    if config.dynamic_binarize:  # the data are probabilities: only [0, 1] is needed
        likelihoods.check_unit_interval(checked, "dynamic binarisation")
    else:
        model.likelihood.validate(checked)
    n_features = 0
    if getattr(model, "condition_dim", 0) or condition is not None or val_condition is not None:
        # the conditions travel with the data, as extra columns split off again per batch
        train, val, val_condition, n_features = _with_conditions(model, train, val, condition, val_condition)
    source = make_source(
        train,
        config.batch_size // world_size,
        device,
        rank=rank,
        world_size=world_size,
        binarize=config.dynamic_binarize and not n_features,
    )
    if config.warmup > 0 and not getattr(source, "known_length", True):
        raise ValueError(
            "KL warm-up counts steps per epoch, which an iterable dataset without a length does not tell; "
            "give it __len__, use a map-style Dataset, or set warmup=0"
        )
    x_val, n_val = None, 0
    if val is not None:
        model.likelihood.validate(val)
        n_val = len(val)
        shard = val[rank::world_size] if world_size > 1 else val  # this process's share
        x_val = shard if is_streamed(val) else as_tensor(shard, device)

    optimizer = make_optimizer(model, config)
    generator = torch.Generator()
    state = resume or TrainerState()
    if resume is None:
        generator.manual_seed(config.seed)
        torch.manual_seed(config.seed + rank)  # reparameterisation noise differs per rank
        if device.type == "cuda":
            torch.cuda.manual_seed(config.seed + rank)
    else:
        if resume.optimizer is not None:
            _check_same_optimizer(resume.optimizer, config)
            optimizer.load_state_dict(resume.optimizer)
            for group in optimizer.param_groups:  # the settings given now, not the saved ones (a lower lr)
                group["lr"], group["weight_decay"] = config.lr, config.weight_decay
        _set_rng_state(resume.rng, generator, device, rank, world_size, config.seed, resume.epoch)
        state.history = History(resume.history)

    step: Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]] = LossStep(model, config, device.type)
    if world_size > 1:
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_SYNC
        )
    if config.compile:
        step = _compiled(step)
    params = [p for p in model.parameters() if p.requires_grad]
    v_c = None if val_condition is None else val_condition[rank::world_size].to(device)
    return _Run(
        model,
        config,
        device,
        source,
        x_val,
        n_val,
        optimizer,
        generator,
        state,
        step,
        world_size,
        params,
        _GoodCopy(model),
        n_features,
        v_c,
    )


class _GoodCopy:
    """A device-side copy of the weights at the end of the last epoch that passed the finiteness
    check: a diverged epoch is undone from it, so the model in memory is the last good one too."""

    def __init__(self, model: Model) -> None:
        self.tensors = [p.detach().clone() for p in model.parameters()]

    def keep(self, model: Model) -> None:
        torch._foreach_copy_(self.tensors, [p.detach() for p in model.parameters()])

    def restore(self, model: Model) -> None:
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), self.tensors)


# a gradient entry this large squares to inf in Adam's second moment (float32 max ~3.4e38)
_GRAD_LIMIT = 1e18


def _bad_step(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """1.0 (on the device, no host sync) when the loss or any gradient is non-finite, or a
    gradient is so large that Adam's squared moment would overflow; else 0.0."""
    grads = [p.grad for p in params if p.grad is not None]
    largest = torch.stack(torch._foreach_norm(grads, math.inf)).max() if grads else loss.new_zeros(())
    return (~((largest < _GRAD_LIMIT) & torch.isfinite(loss))).float()


def _masked_step(optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing (weights, moments, step counts) when ``bad`` is 1,
    decided on the device. The fused Adam kernel takes the flag itself (as it does from GradScaler);
    other optimisers step and are put back from a copy where the flag is set."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = bad  # type: ignore[attr-defined]
        optimizer.step()
        return
    tensors = [p for g in optimizer.param_groups for p in g["params"]]
    tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    before = [t.detach().clone() for t in tensors]
    optimizer.step()
    keep = bad.bool()
    with torch.no_grad():
        for t, b in zip(tensors, before):
            t.copy_(torch.where(keep, b.to(t.dtype), t))


def _all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool on the device: every entry of every tensor is finite."""
    floats = [t for t in tensors if t.is_floating_point() and t.numel()]
    if not floats:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(t).all() for t in floats]).all()


def _optimizer_tensors(optimizer) -> list[torch.Tensor]:
    return [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def _clone_state(obj):
    """A deep copy of an optimiser state dict's tensors: the trainer state must hold the state
    of the epoch it describes, not live tensors the next epoch changes."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone_state(v) for v in obj]
    return obj


def _diverged(run: _Run, epoch: int, batch: int | None) -> TrainingError:
    run.good.restore(run.model)
    where = f"at epoch {epoch + 1}, batch {batch + 1}" if batch is not None else f"in epoch {epoch + 1}"
    what = "the loss" if batch is not None else "the weights or the optimiser state"
    if run.state.saved_to:
        kept = f"the last good checkpoint, {run.state.saved_to}, is kept"
    else:
        kept = "no checkpoint was written before it"
    return TrainingError(
        f"{what} became non-finite {where}; {kept}. Try a lower learning rate (lr), gradient "
        "clipping (grad_clip) or another likelihood, or skip_nonfinite to skip such batches"
    )


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One pass over the training data. Per-batch sums stay on the device; the one host sync
    reads the epoch's totals, the first bad batch and the finiteness of weights and moments."""
    config, state, optimizer = run.config, run.state, run.optimizer
    started = time.perf_counter()
    run.model.train()
    warmup_steps = config.warmup * len(run.source)
    skip = config.skip_nonfinite
    batch_sums = []
    beta = config.beta
    for xb in run.source.batches(run.generator):
        if warmup_steps > 0:
            beta = config.beta * min(1.0, (state.step + 1) / warmup_steps)
        xb, cb = run.split(xb)
        loss, sums = run.step(xb, beta) if cb is None else run.step(xb, beta, cb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if skip:
            bad = _bad_step(loss, run.params)
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(run.params, config.grad_clip)
            _masked_step(optimizer, bad)
            # a skipped batch adds nothing to the sums; its flag and example count come along
            sums = torch.cat([torch.where(bad > 0, 0.0, sums), bad.reshape(1), (1 - bad).reshape(1) * xb.shape[0]])
        else:
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(run.params, config.grad_clip)
            optimizer.step()
        batch_sums.append(sums)  # stays on the device
        state.step += 1
    per_batch = distributed.all_reduce_sum(torch.stack(batch_sums))  # (batches, 4 or 6), over all processes
    finite = torch.isfinite(per_batch[:, 0])
    first_bad = torch.where(finite.all(), -1, (~finite).int().argmax())
    healthy = _all_finite(run.params + _optimizer_tensors(optimizer))
    head = torch.stack([first_bad.double(), healthy.double()])
    bad, ok, *totals = torch.cat([head, per_batch.double().sum(0)]).tolist()  # the one host sync
    if bad >= 0:
        raise _diverged(run, epoch, int(bad))
    if not ok:
        raise _diverged(run, epoch, None)
    n_used = run.source.n_examples * run.world_size
    row: dict[str, Any] = {"epoch": epoch + 1}
    if skip:
        skipped, n_used = int(totals[4]), totals[5]
        if n_used == 0:
            raise TrainingError(
                f"every batch of epoch {epoch + 1} was non-finite and skipped; the model cannot "
                "train at these settings. Try a lower learning rate (lr) or gradient clipping (grad_clip)"
            )
    objective, elbo, log_px_z, kl = (t / n_used for t in totals[:4])
    row.update(
        {"train_objective": objective, "train_elbo": elbo, "train_log_px_z": log_px_z, "train_kl": kl, "beta": beta}
    )
    if skip:
        row["skipped_batches"] = skipped
    if run.x_val is not None:
        v_sums = distributed.all_reduce_sum(
            _elbo_sums(run.model, run.x_val, config.eval_batch_size, c=run.val_condition)
        )
        v_elbo, v_log_px_z, v_kl = (v_sums / run.n_val).tolist()
        row.update({"val_elbo": v_elbo, "val_log_px_z": v_log_px_z, "val_kl": v_kl})
        if not math.isfinite(v_elbo):
            raise _diverged(run, epoch, None)
    row["seconds"] = time.perf_counter() - started
    return row


def fit(
    model: Model,
    train,
    val=None,
    config: TrainConfig | None = None,
    *,
    callbacks: Iterable[Callback] = (),
    resume: TrainerState | None = None,
    rank: int = 0,
    world_size: int = 1,
    condition=None,
    val_condition=None,
    **overrides: Any,
) -> FitResult:
    """Train ``model`` by maximising the (beta-)ELBO or the IWAE bound with Adam; returns a
    ``FitResult`` (``.history``, ``.state``, ``.replica_digest``).

    ``train`` / ``val`` are arrays or tensors of shape (N, *data_shape) (tensors on the device are
    the fastest path), or a ``torch.utils.data.Dataset`` / ``DataLoader``. A map-style Dataset
    (``__getitem__`` and ``__len__``; an item is an example or an (example, label, ...) tuple, as in
    torchvision) is batched by vaekit's seeded sampler, the same permutation as for arrays, so
    shuffling follows ``seed`` and resume is exact. An iterable Dataset or a DataLoader is taken
    in its own order: a warning says that such a run cannot be reproduced from ``seed`` nor
    resumed exactly. Validation data given as a Dataset are read into memory once. ``resume`` is a
    ``TrainerState`` from a checkpoint: training continues exactly as if never stopped.

    The optimiser is ``config.optimizer`` (Adam or AdamW) and its learning rate follows
    ``config.lr_schedule`` per epoch (``vaekit.schedules``; the rate is in the history's ``lr``).
    Callbacks run after every epoch with the model and the state (checkpointing); early
    stopping is one (``EarlyStopping``), run before the given ones.

    Divergence: an epoch in which the loss, the weights or Adam's moments become non-finite
    (checked on the device, read once per epoch) raises ``TrainingError`` naming the epoch and
    batch and the last good checkpoint if one was written; the model is put back to the weights
    of the last good epoch, and no callback sees the bad one. ``skip_nonfinite=True`` instead
    skips such batches (the optimiser step is masked on the device) and counts them in the
    history's ``skipped_batches``.

    Data-parallel: with ``world_size > 1`` (one call per process, inside an initialised
    ``torch.distributed`` process group, e.g. under torchrun) every process passes the same data;
    each trains on its own 1/world_size share with ``batch_size / world_size`` examples per step,
    so the effective batch stays ``batch_size``. DistributedDataParallel averages the gradients,
    the history holds totals over all processes (validation is sharded and summed too), and at the
    end the processes check that they hold bit-identical weights (``result.replica_digest``).

    A conditional model (``condition_dim`` > 0) takes ``condition`` (and ``val_condition`` with
    ``val``): one row per example, (N, condition_dim) floats or (N,) class labels; it is then trained
    on the bound on log p(x|c).
    """
    config = config or TrainConfig()
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    run = _setup(model, train, val, config, resume, rank, world_size, condition, val_condition)
    state = run.state
    callbacks = (
        [EarlyStopping(config.early_stopping, config.min_delta, config.restore_best)] if run.x_val is not None else []
    ) + list(callbacks)
    show = rank == 0 and (config.progress if config.progress is not None else sys.stderr.isatty())
    with cpu_threads(config.threads, run, resume) as threads:
        bar = tqdm(
            range(state.epoch, config.epochs),
            initial=state.epoch,
            total=config.epochs,
            disable=not show,
            unit="epoch",
            dynamic_ncols=True,
        )
        plateau = schedules.Plateau.from_dict(state.schedule) if config.lr_schedule == "plateau" else None
        for epoch in bar:
            lr = schedules.lr_at(config, epoch, plateau)
            _set_lr(run.optimizer, lr)
            row = _train_epoch(run, epoch)
            if config.lr_schedule != "constant":
                row["lr"] = lr
            if plateau is not None:
                plateau.update(row["val_elbo"], config.lr_patience, config.lr_factor)
                state.schedule = plateau.to_dict()
            if run.device.type == "cpu":
                row["threads"] = threads
            state.history.append(row)
            state.epoch = epoch + 1
            state.optimizer = _clone_state(run.optimizer.state_dict())
            state.rng = _rng_state(run.generator, run.device, world_size)
            run.good.keep(model)
            bar.set_postfix(
                elbo=f"{row['train_elbo']:.3f}", **({"val": f"{row['val_elbo']:.3f}"} if "val_elbo" in row else {})
            )
            for callback in callbacks:
                callback(model, state)
            if state.stopped_early:
                break
        bar.close()
    if state.stopped_early and config.restore_best and state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    digest = distributed.check_replicas(model) if world_size > 1 else None
    return FitResult(
        history=History(state.history),
        state=state,
        replica_digest=digest,
        threads=threads if run.device.type == "cpu" else None,
    )


def _with_conditions(model: Model, train, val, condition, val_condition):
    """Check the conditions of a conditional model; returns the training data with its conditions
    as extra columns, the validation conditions as a tensor and the number of data features."""
    if not getattr(model, "condition_dim", 0):
        raise ValueError("this model is not conditional (condition_dim=0); fit it without condition")
    if condition is None or (val is not None and val_condition is None):
        raise ValueError("a conditional model needs condition= for the training data (and val_condition= with val)")
    if is_streamed(train) or is_dataset(train):
        raise ValueError("a conditional model trains on data in memory; load the data before calling fit")
    x = as_tensor(train)
    c = model.condition(
        as_tensor(condition, dtype=torch.float32 if _floating(condition) else torch.long).cpu(), x.shape[0]
    ).to(x.device)
    vc = None
    if val is not None:
        vc = model.condition(
            as_tensor(val_condition, dtype=torch.float32 if _floating(val_condition) else torch.long).cpu(), len(val)
        )
    return torch.cat([x.reshape(x.shape[0], -1), c.to(x.dtype)], 1), val, vc, math.prod(x.shape[1:])


def _has_examples(data) -> bool:
    try:
        return len(data) > 0
    except TypeError:  # an iterable dataset without a length
        return next(iter(data), None) is not None


def _floating(a) -> bool:
    return a.is_floating_point() if isinstance(a, torch.Tensor) else np.issubdtype(np.asarray(a).dtype, np.floating)
