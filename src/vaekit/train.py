"""Training: ``fit(model, train, val, config)`` -> History.

The loop is deliberately lean: the data sit on the device, an epoch is a shuffled index
permutation, per-batch metrics are summed on the device and read back once per epoch.
Schedules (KL warm-up) live here; the model never sees the epoch.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from . import likelihoods, objectives
from .batches import as_tensor, is_streamed, iterate, make_source
from .errors import TrainingError
from .model import Model


@dataclass
class TrainConfig:
    """Training settings. Defaults follow common practice (Adam 1e-3, batch 128)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    warmup: float = 0.0  # epochs over which the KL weight rises linearly from 0 to beta
    free_bits: float = 0.0  # nats per latent unit (Kingma et al. 2016)
    n_samples: int = 1  # z draws per example for the ELBO
    iw_samples: int = 0  # >= 2: train on the IWAE_k bound instead
    grad_clip: float | None = None  # max global gradient norm
    early_stopping: int | None = None  # patience in epochs on the validation ELBO
    min_delta: float = 0.0
    restore_best: bool = True  # after early stopping, go back to the best validation weights
    seed: int = 0
    device: str = "auto"
    progress: bool | None = None  # None: a bar only when stderr is a terminal
    eval_batch_size: int = 4096
    dynamic_binarize: bool = False  # the training data hold probabilities; each batch is a fresh Bernoulli draw

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "beta": self.beta >= 0,
            "warmup": self.warmup >= 0,
            "free_bits": self.free_bits >= 0,
            "n_samples": self.n_samples >= 1,
            "iw_samples": self.iw_samples >= 0,
            "eval_batch_size": self.eval_batch_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(f"early_stopping patience must be >= 1, got {self.early_stopping}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


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


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["shuffle"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@torch.no_grad()
def evaluate_elbo(model: Model, x, batch_size: int = 4096, n_samples: int = 1) -> dict[str, float]:
    """Mean ELBO, reconstruction log-likelihood and KL over ``x`` (nats per example); ``x`` may be
    a tensor or an array (one on disk is read batch by batch)."""
    was_training = model.training
    model.eval()
    device = x.device if isinstance(x, torch.Tensor) else next(model.parameters()).device
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    for xb in iterate(x, batch_size, device):
        t = objectives.elbo(model, xb, n_samples=n_samples)
        sums += torch.stack([t.elbo.sum(), t.log_px_z.sum(), t.kl.sum()]).double()
    model.train(was_training)
    elbo, log_px_z, kl = (sums / x.shape[0]).tolist()
    return {"elbo": elbo, "log_px_z": log_px_z, "kl": kl}


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
    **overrides: Any,
) -> History:
    """Train ``model`` by maximising the (beta-)ELBO or the IWAE bound with Adam.

    ``train`` / ``val`` are arrays or tensors of shape (N, *data_shape). ``resume`` is a
    ``TrainerState`` from a checkpoint: training continues exactly as if never stopped.
    Callbacks run after every epoch with the model and the state (checkpointing).
    Raises ``TrainingError`` naming the epoch and batch when the loss becomes non-finite.
    """
    config = config or TrainConfig()
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    if val is not None and len(val) == 0:
        val = None
    if config.early_stopping and val is None:
        raise ValueError("early stopping needs validation data")
    device = resolve_device(config.device)
    model.to(device)
    if model.data_shape is not None and tuple(train.shape[1:]) != tuple(model.data_shape):
        raise ValueError(f"data have shape {tuple(train.shape[1:])} per example, the model expects {model.data_shape}")
    if config.dynamic_binarize:  # the data are probabilities: only [0, 1] is needed
        likelihoods.check_unit_interval(train, "dynamic binarisation")
    else:
        model.likelihood.validate(train)
    source = make_source(train, config.batch_size, device, rank=rank, world_size=world_size,
                         binarize=config.dynamic_binarize)
    x_val = None
    if val is not None:
        model.likelihood.validate(val)
        x_val = val if is_streamed(val) else as_tensor(val, device)

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
        _set_rng_state(resume.rng, generator, device)
        state.history = History(resume.history)

    steps_per_epoch = len(source)
    warmup_steps = config.warmup * steps_per_epoch
    show = config.progress if config.progress is not None else (rank == 0 and sys.stderr.isatty())
    bar = tqdm(range(state.epoch, config.epochs), initial=state.epoch, total=config.epochs,
               disable=not show, unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        started = time.perf_counter()
        model.train()
        sums = torch.zeros(4, device=device, dtype=torch.float64)
        first_bad = torch.tensor(-1, device=device)
        beta = config.beta
        for batch, xb in enumerate(source.batches(generator)):
            if warmup_steps > 0:
                beta = config.beta * min(1.0, (state.step + 1) / warmup_steps)
            loss, terms = objectives.loss(model, xb, beta=beta, n_samples=config.n_samples,
                                          free_bits=config.free_bits, iw_samples=config.iw_samples)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack([terms.objective.sum(), terms.elbo.sum(),
                                     terms.log_px_z.sum(), terms.kl.sum()]).double()
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), batch, first_bad)
            state.step += 1
        bad = int(first_bad)  # the one host sync of the epoch
        if bad >= 0:
            raise TrainingError(
                f"the loss became non-finite at epoch {epoch + 1}, batch {bad + 1}; weights from epoch "
                f"{state.epoch} (the last good checkpoint) are kept. Try a lower --lr, --grad-clip or a "
                "different likelihood"
            )
        objective, elbo, log_px_z, kl = (sums / source.n_examples).tolist()
        row: dict[str, Any] = {"epoch": epoch + 1, "train_objective": objective, "train_elbo": elbo,
                               "train_log_px_z": log_px_z, "train_kl": kl, "beta": beta}
        if x_val is not None:
            v = evaluate_elbo(model, x_val, config.eval_batch_size)
            row.update({"val_elbo": v["elbo"], "val_log_px_z": v["log_px_z"], "val_kl": v["kl"]})
            if not math.isfinite(v["elbo"]):
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
        state.rng = _rng_state(generator, device)
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
    return history


def _track_best(model: Model, state: TrainerState, val_elbo: float, config: TrainConfig) -> None:
    if val_elbo > state.best_val + config.min_delta:
        state.best_val, state.best_epoch, state.bad_epochs = val_elbo, state.epoch, 0
        if config.early_stopping and config.restore_best:
            state.best_weights = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})
    else:
        state.bad_epochs += 1
