"""Training: ``fit(model, train, val, config)`` -> History.

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
import copy
import inspect
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, likelihoods, objectives
from .config import TrainConfig  # the settings dataclass (torch-free, shared with the CLI); re-exported here
from .batches import as_tensor, is_streamed, iterate, make_source
from .errors import TrainingError
from .model import Model


AMP_DTYPES = {"bf16": torch.bfloat16}

# parameters x batch size below which training uses one CPU thread. A judgment, not a measured
# crossover: on the 2-core machine of bench/bench_step.py one thread won at every size (7x for small
# models); above this size torch's default is kept because idle multi-core machines gain from threads.
SMALL_STEP = 2**23


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


def make_optimizer(model: Model, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # the fused kernel is one launch per step instead of one per tensor
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


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


def _set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device,
                   rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0) -> None:
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


@torch.no_grad()
def _elbo_sums(model: Model, x, batch_size: int, n_samples: int = 1, c: torch.Tensor | None = None) -> torch.Tensor:
    """Sums over ``x`` of the ELBO, log p(x|z) and KL, (3,) float64 on the model's device (no host
    sync). ``x`` may be a tensor or an array (one on disk is read batch by batch); ``c`` the
    conditions of a conditional model."""
    was_training = model.training
    model.eval()
    device = x.device if isinstance(x, torch.Tensor) else next(model.parameters()).device
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    for i, xb in enumerate(iterate(x, batch_size, device)):
        cb = None if c is None else c[i * batch_size : (i + 1) * batch_size]
        t = objectives.elbo(model, xb, n_samples=n_samples, c=cb)
        sums += torch.stack([t.elbo.sum(), t.log_px_z.sum(), t.kl.sum()]).double()
    model.train(was_training)
    return sums


def evaluate_elbo(model: Model, x: torch.Tensor, batch_size: int = 4096, n_samples: int = 1) -> dict[str, float]:
    """Mean ELBO, reconstruction log-likelihood and KL over ``x`` (nats per example)."""
    elbo, log_px_z, kl = (_elbo_sums(model, x, batch_size, n_samples) / x.shape[0]).tolist()
    return {"elbo": elbo, "log_px_z": log_px_z, "kl": kl}


# buffers (the prior's constants) never change, so DDP need not re-send them before every step
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


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

    def forward(self, x: torch.Tensor, beta: float, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        autocast = (torch.autocast(self.device_type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:  # the networks run in bf16; Model casts their outputs to float32 for q, p(x|z), KL
            loss, t = objectives.loss(self.model, x, beta=beta, n_samples=self.n_samples,
                                      free_bits=self.free_bits, iw_samples=self.iw_samples, c=c)
        sums = torch.stack([t.objective, t.elbo, t.log_px_z, t.kl]).detach().sum(1)  # (4,)
        return loss, sums


def _compiled(step: nn.Module) -> Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]:
    """``torch.compile(step)``; if compiling fails (no C++ compiler, an unsupported operation),
    warn once and go on eagerly with the same module, so ``compile=True`` never stops a run."""
    try:
        compiled = torch.compile(step)
    except Exception as err:  # noqa: BLE001 - any failure of the optional compiler means: run eagerly
        warnings.warn(f"torch.compile is unavailable ({_first_line(err)}); training runs without it")
        return step
    current: list[Callable] = [compiled]

    def run(x: torch.Tensor, beta: float, c: torch.Tensor | None = None):
        if current[0] is step:
            return step(x, beta, c)
        try:
            return current[0](x, beta, c)
        except Exception as err:  # noqa: BLE001 - compilation happens lazily, at the first calls
            warnings.warn(f"torch.compile failed ({_first_line(err)}); training continues without it")
            current[0] = step
            return step(x, beta, c)

    return run


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def cpu_threads(threads: int, model: nn.Module, batch_size: int, device: torch.device) -> Iterator[int]:
    """Set torch's intra-op CPU threads for a training run and restore them afterwards.

    ``threads > 0`` is taken as given. ``0`` (automatic) uses one thread when a step is small
    (parameters x batch size < ``SMALL_STEP``): waking other threads costs more than they save,
    and far more on a busy machine. Larger steps keep torch's default, as do runs where
    OMP_NUM_THREADS is set (torchrun sets it to 1 per process when it starts several).
    """
    before = torch.get_num_threads()
    wanted = threads
    if threads == 0 and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        work = sum(p.numel() for p in model.parameters()) * batch_size
        wanted = 1 if work < SMALL_STEP else 0
    if wanted > 0 and wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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
) -> History:
    """Train ``model`` by maximising the (beta-)ELBO or the IWAE bound with Adam.

    ``train`` / ``val`` are arrays or tensors of shape (N, *data_shape). ``resume`` is a
    ``TrainerState`` from a checkpoint: training continues exactly as if never stopped.
    Callbacks run after every epoch with the model and the state (checkpointing).
    Raises ``TrainingError`` naming the epoch and batch when the loss becomes non-finite.

    Data-parallel: with ``world_size > 1`` (one call per process, inside an initialised
    ``torch.distributed`` process group, e.g. under torchrun) every process passes the same data;
    each trains on its own 1/world_size share with ``batch_size / world_size`` examples per step,
    so the effective batch stays ``batch_size``. DistributedDataParallel averages the gradients,
    the history holds totals over all processes (validation is sharded and summed too), and at the
    end the processes check that they hold bit-identical weights (``history.replica_digest``).

    A conditional model (``condition_dim`` > 0) takes ``condition`` (and ``val_condition`` with
    ``val``): one row per example, (N, condition_dim) floats or (N,) class labels; it is then trained
    on the bound on log p(x|c).
    """
    config = config or TrainConfig()
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    if val is not None and len(val) == 0:
        val = None
    if config.early_stopping and val is None:
        raise ValueError("early stopping needs validation data")
    if world_size > 1:
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of the number of processes "
                             f"({world_size}): each process takes batch_size / {world_size} examples per step")
        ctx = distributed.current()
        if (ctx.rank, ctx.world_size) != (rank, world_size):
            raise ValueError(f"fit(rank={rank}, world_size={world_size}) needs an initialised process group of that "
                             f"size (found rank {ctx.rank} of {ctx.world_size}); start it with torchrun")
    device = resolve_device(config.device)
    if world_size > 1:
        device = distributed.device_for_rank(device, ctx)
    model.to(device)
    if model.data_shape is not None and tuple(train.shape[1:]) != tuple(model.data_shape):
        raise ValueError(f"data have shape {tuple(train.shape[1:])} per example, the model expects {model.data_shape}")
    if config.dynamic_binarize:  # the data are probabilities: only [0, 1] is needed
        likelihoods.check_unit_interval(train, "dynamic binarisation")
    else:
        model.likelihood.validate(train)
    n_features = 0
    if getattr(model, "condition_dim", 0) or condition is not None or val_condition is not None:
        # the conditions travel with the data, as extra columns split off again per batch
        train, val, val_condition, n_features = _with_conditions(model, train, val, condition, val_condition)
    source = make_source(train, config.batch_size // world_size, device, rank=rank, world_size=world_size,
                         binarize=config.dynamic_binarize and not n_features)
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
            optimizer.load_state_dict(resume.optimizer)
        _set_rng_state(resume.rng, generator, device, rank, world_size, config.seed, resume.epoch)
        state.history = History(resume.history)

    step: Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]] = LossStep(model, config, device.type)
    if world_size > 1:
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_SYNC)
    if config.compile:
        step = _compiled(step)

    steps_per_epoch = len(source)
    warmup_steps = config.warmup * steps_per_epoch
    show = rank == 0 and (config.progress if config.progress is not None else sys.stderr.isatty())
    with cpu_threads(config.threads, model, config.batch_size // world_size, device):
        bar = tqdm(range(state.epoch, config.epochs), initial=state.epoch, total=config.epochs,
                   disable=not show, unit="epoch", dynamic_ncols=True)
        for epoch in bar:
            started = time.perf_counter()
            model.train()
            batch_sums = []
            beta = config.beta
            for xb in source.batches(generator):
                if warmup_steps > 0:
                    beta = config.beta * min(1.0, (state.step + 1) / warmup_steps)
                cb = None
                if n_features:
                    xb, cb = xb[:, :n_features].reshape(-1, *model.data_shape), xb[:, n_features:]
                    xb = torch.bernoulli(xb) if config.dynamic_binarize else xb
                loss, sums = step(xb, beta) if cb is None else step(xb, beta, cb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                batch_sums.append(sums)  # stays on the device
                state.step += 1
            per_batch = distributed.all_reduce_sum(torch.stack(batch_sums))  # (batches, 4), over all processes
            finite = torch.isfinite(per_batch[:, 0])
            first_bad = torch.where(finite.all(), -1, (~finite).int().argmax())
            *totals, bad = torch.cat([per_batch.double().sum(0), first_bad.double().reshape(1)]).tolist()  # the one host sync
            if bad >= 0:
                raise TrainingError(
                    f"the loss became non-finite at epoch {epoch + 1}, batch {int(bad) + 1}; weights from epoch "
                    f"{state.epoch} (the last good checkpoint) are kept. Try a lower --lr, --grad-clip or a "
                    "different likelihood"
                )
            objective, elbo, log_px_z, kl = (t / (source.n_examples * world_size) for t in totals)
            row: dict[str, Any] = {"epoch": epoch + 1, "train_objective": objective, "train_elbo": elbo,
                                   "train_log_px_z": log_px_z, "train_kl": kl, "beta": beta}
            if x_val is not None:
                v_c = None if val_condition is None else val_condition[rank::world_size].to(device)
                v_sums = distributed.all_reduce_sum(_elbo_sums(model, x_val, config.eval_batch_size, c=v_c))
                v_elbo, v_log_px_z, v_kl = (v_sums / n_val).tolist()
                row.update({"val_elbo": v_elbo, "val_log_px_z": v_log_px_z, "val_kl": v_kl})
                if not math.isfinite(v_elbo):
                    raise TrainingError(
                        f"the validation ELBO became non-finite at epoch {epoch + 1}; the last good checkpoint "
                        f"(epoch {state.epoch}) is kept. Try a lower --lr or --grad-clip"
                    )
            row["seconds"] = time.perf_counter() - started
            state.history.append(row)
            state.epoch = epoch + 1
            if x_val is not None:
                _track_best(model, state, row["val_elbo"], config)
            state.optimizer = optimizer.state_dict()
            state.rng = _rng_state(generator, device, world_size)
            bar.set_postfix(elbo=f"{elbo:.3f}", **({"val": f"{row['val_elbo']:.3f}"} if x_val is not None else {}))
            if config.early_stopping and state.bad_epochs >= config.early_stopping:
                state.stopped_early = True
            for callback in callbacks:
                callback(model, state)
            if state.stopped_early:
                break
        bar.close()
    if state.stopped_early and config.restore_best and state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    history = History(state.history)
    history.state = state  # type: ignore[attr-defined]
    if world_size > 1:
        history.replica_digest = distributed.check_replicas(model)  # type: ignore[attr-defined]
    return history


def _with_conditions(model: Model, train, val, condition, val_condition):
    """Check the conditions of a conditional model; returns the training data with its conditions
    as extra columns, the validation conditions as a tensor and the number of data features."""
    if not getattr(model, "condition_dim", 0):
        raise ValueError("this model is not conditional (condition_dim=0); fit it without condition")
    if condition is None or (val is not None and val_condition is None):
        raise ValueError("a conditional model needs condition= for the training data (and val_condition= with val)")
    if is_streamed(train):
        raise ValueError("a conditional model trains on data in memory; load the data before calling fit")
    x = as_tensor(train)
    c = model.condition(as_tensor(condition, dtype=torch.float32 if _floating(condition) else torch.long).cpu(),
                        x.shape[0]).to(x.device)
    vc = None
    if val is not None:
        vc = model.condition(as_tensor(val_condition, dtype=torch.float32 if _floating(val_condition) else torch.long)
                             .cpu(), len(val))
    return torch.cat([x.reshape(x.shape[0], -1), c.to(x.dtype)], 1), val, vc, math.prod(x.shape[1:])


def _floating(a) -> bool:
    return a.is_floating_point() if isinstance(a, torch.Tensor) else np.issubdtype(np.asarray(a).dtype, np.floating)


def _track_best(model: Model, state: TrainerState, val_elbo: float, config: TrainConfig) -> None:
    if val_elbo > state.best_val + config.min_delta:
        state.best_val, state.best_epoch, state.bad_epochs = val_elbo, state.epoch, 0
        if config.early_stopping and config.restore_best:
            state.best_weights = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})
    else:
        state.bad_epochs += 1
