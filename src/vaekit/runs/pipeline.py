"""Train a new run or resume a stopped one: settings -> validated data, likelihood and model ->
a claimed run folder -> ``fit`` -> weights, history and final metrics in the folder.

Nothing is written until every setting, the device and the data have been checked: a refusal
leaves no folder behind. Under torchrun (an initialised process group) every process calls these
with the same settings; rank 0 alone claims the folder, writes files and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import distributed, likelihoods
from ..config import DataConfig, ModelSpec, RunConfig, SettingError, TrainConfig
from ..data import Dataset
from ..data.tables import unknown_summary
from ..model import Model
from ..spec import build_model, resolved
from ..train import Callback, FitResult, History, fit, resolve_device
from .data import COVARIATE_ENCODING, class_labels, load_splits, part_conditions
from .folder import RunFolder
from .metrics import final_metrics


@dataclass
class TrainResult:
    run_dir: Path
    model: Model
    history: History
    metrics: dict[str, Any]
    # where this call's wall time went, in seconds: "train" (the epochs run by this call, as timed in
    # the history), "checkpoints" (writing them after epochs), "final_metrics", and "run" (all of it)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # torch's CPU threads the epochs ran with (None off the CPU or when torch's setting was kept): the
    # final metrics run with them, and so should what follows (``torch_threads``)
    threads: int | None = None


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op CPU threads (None: as they are), restored afterwards.
    The work after training (final metrics, figures) is small batches of the model training
    measured: the count that suited its steps suits them, where the default (all cores) can be
    many times slower on a busy machine."""
    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class Prepared:
    """A run checked and ready to train: settings with every ``auto`` decided, the data, the model."""

    config: RunConfig
    parts: dict[str, Dataset]
    likelihood: likelihoods.Likelihood
    model: Model


def prepare(config: RunConfig, data: dict[str, Dataset] | None = None) -> Prepared:
    """Check the device, load and split the data, resolve the likelihood and network, build the
    model (seeded): everything that can refuse a run, before anything is written."""
    resolve_device(config.train.device)
    parts = data or load_splits(config.data.to_dict())
    train_part = parts["train"]
    x_train, schema = train_part.x, train_part.schema
    spec = config.model
    if config.data.binarize == "dynamic":  # the training rows are probabilities, every batch a fresh draw
        if spec.likelihood not in ("auto", likelihoods.Bernoulli.name):
            raise SettingError(
                f"setting likelihood={spec.likelihood!r} is not allowed with binarize='dynamic': "
                "expected auto or bernoulli"
            )
        lik: likelihoods.Likelihood = likelihoods.Bernoulli()
    else:
        lik = likelihoods.resolve(spec.likelihood, x_train, scale=spec.scale, schema=schema)
    if len(parts["val"]):
        lik.validate(parts["val"].x)
    data_shape = tuple(x_train.shape[1:])
    image = train_part.image_shape
    image_shape = None if image is None or len(data_shape) > 1 else (tuple(image) if len(image) == 3 else (1, *image))
    if config.data.condition == "label":  # a conditional VAE on the class labels: c is one-hot of K classes
        n_classes = 1 + max(
            int(class_labels(p, f"the {name} rows of {train_part.name}").max(initial=-1)) for name, p in parts.items()
        )
        if n_classes < 2:
            raise SettingError(f"setting condition='label' needs at least two classes; {train_part.name} has one")
        spec = dataclasses.replace(
            spec,
            condition_dim=n_classes,
            conditional_prior=spec.conditional_prior or config.conditional_prior,
            network="mlp" if spec.network == "auto" else spec.network,
        )
    if config.data.condition_columns:  # a conditional VAE on table columns: c is their encoding
        covariates = train_part.info[COVARIATE_ENCODING]
        for name, part in parts.items():
            part_conditions(part, f"the {name} rows of {train_part.name}")  # complete, known values
        spec = dataclasses.replace(
            spec, condition_dim=covariates.width, conditional_prior=spec.conditional_prior or config.conditional_prior
        )
    spec = resolved(dataclasses.replace(spec, data_shape=data_shape, image_shape=image_shape), lik)
    train_cfg = dataclasses.replace(config.train, dynamic_binarize=config.data.binarize == "dynamic")
    torch.manual_seed(train_cfg.seed)
    model = build_model(spec)  # after seeding: the same seed gives the same initial weights
    return Prepared(dataclasses.replace(config, model=spec, train=train_cfg), parts, lik, model)


# makes extra ``fit`` callbacks for a run folder once it is claimed (e.g. a tracker logging into it)
CallbackFactory = Callable[[Path], Sequence[Callback]]


def train(
    settings: dict[str, Any] | RunConfig,
    *,
    log: Callable[[str], None] = print,
    data: dict[str, Dataset] | None = None,
    callbacks: CallbackFactory | None = None,
    saved: Callable[[Path], int | None] | None = None,
) -> TrainResult:
    """Train a new run from settings (a ``RunConfig``, or flat settings as in ``DEFAULTS``).
    ``callbacks(path)``, when given, makes ``fit`` callbacks that run after each epoch's checkpoint,
    on the main process only (called once the folder at ``path`` holds its config). ``saved(path)``
    runs on the main process once the final weights and history are in the folder, before the
    final metrics; it may return the thread count the final metrics should take instead of the
    training's (``vaekit train`` starts drawing there in a second process, and then takes 1)."""
    started = time.perf_counter()
    ctx = distributed.current()
    if not ctx.is_main:
        log = _silent
    config = settings if isinstance(settings, RunConfig) else RunConfig.from_settings(settings)
    prep = prepare(config, data)
    parts, lik, x_train = prep.parts, prep.likelihood, prep.parts["train"].x
    schema = parts["train"].schema
    folder = _claim_on_main(ctx, config.out, parts["train"].name)
    try:
        if ctx.is_main:
            facts = {
                "name": parts["train"].name,
                "sizes": {k: len(v) for k, v in parts.items()},
                "image_shape": parts["train"].image_shape,
            }
            folder.write_config(prep.config, facts)
            if schema is not None:
                folder.write_preprocessing(schema)
            if COVARIATE_ENCODING in parts["train"].info:
                folder.write_covariates(parts["train"].info[COVARIATE_ENCODING])
        log(f"run folder: {folder.path}")
        log(
            f"data: {parts['train'].name}, {len(parts['train'])} train / {len(parts['val'])} validation / "
            f"{len(parts['test'])} test examples of shape {tuple(x_train.shape[1:])}; likelihood: {lik.describe()}; "
            f"network: {prep.config.model.network}" + (" (streamed from disk)" if hasattr(x_train, "chunks") else "")
        )
        if schema is not None:
            log(f"columns: {schema.describe()}")
            if COVARIATE_ENCODING in parts["train"].info:
                log(f"conditioned on {parts['train'].info[COVARIATE_ENCODING].describe()}")
            for note in schema.notes:
                log(f"note: {note}")
            for part in ("val", "test"):
                note = unknown_summary(parts[part].info.get("transform_report") or {})
                if note:
                    log(f"note ({part} rows): {note}")
        return _fit_and_finish(folder, prep.config, prep.model, parts, None, log, started, callbacks, saved)
    finally:
        folder.release()


def resume(
    run_dir,
    *,
    epochs: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    lr: float | None = None,
    log: Callable[[str], None] = print,
    callbacks: CallbackFactory | None = None,
    saved: Callable[[Path], int | None] | None = None,
) -> TrainResult:
    """Continue a stopped run; the result equals an uninterrupted run with the same settings
    (also under torchrun with the same number of processes: every process restores its own RNG).
    Only ``epochs``, ``device``, ``progress`` and ``lr`` (lower it after a divergence) may change. The folder is locked while it runs.
    ``callbacks`` and ``saved`` as in ``train``."""
    started = time.perf_counter()
    ctx = distributed.current()
    if not ctx.is_main:
        log = _silent
    try:
        folder = RunFolder.open(run_dir)
    except ValueError as err:
        raise type(err)(f"{err}; nothing to resume") from None
    raw = folder.read_config()
    config = folder.run_config()
    changes = {
        k: v for k, v in (("epochs", epochs), ("device", device), ("progress", progress), ("lr", lr)) if v is not None
    }
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    resolve_device(config.train.device)
    with folder.lock() if ctx.is_main else contextlib.nullcontext():
        model = build_model(config.model)
        state = folder.load_trainer(model)
        if state is None:
            torch.manual_seed(config.train.seed)
            model = build_model(config.model)
            log(f"{folder.path} has no checkpoint yet: starting it from epoch 0")
        else:
            log(f"resuming {folder.path} from epoch {state.epoch} of {config.train.epochs}")
        parts = load_splits(
            raw["data"], folder.read_preprocessing(), folder.read_covariates()
        )  # before any write: a refusal changes nothing
        if ctx.is_main:
            facts = {k: raw["data"][k] for k in DataConfig.FACTS if k in raw["data"]}
            extra = {k: raw[k] for k in ("estimator",) if k in raw}
            folder.write_config(config, facts, extra, created=raw.get("created"))
        return _fit_and_finish(folder, config, model, parts, state, log, started, callbacks, saved)


def _fit_and_finish(
    folder: RunFolder,
    config: RunConfig,
    model: Model,
    parts: dict[str, Dataset],
    state,
    log,
    started: float,
    callbacks: CallbackFactory | None = None,
    saved: Callable[[Path], int | None] | None = None,
) -> TrainResult:
    ctx = distributed.current()
    extra = list(callbacks(folder.path)) if callbacks is not None and ctx.is_main else []
    train_cfg = config.train
    fitted = None
    seconds = {"checkpoints": 0.0}
    if state is not None and (state.epoch >= train_cfg.epochs or state.stopped_early):
        history = state.history
    else:
        fitted = _fit(folder, config, model, parts, state, ctx, seconds, extra)
        history = fitted.history
    seconds["train"] = sum(float(r.get("seconds") or 0) for r in history[state.epoch if state else 0 :])
    threads = fitted.threads if fitted is not None else history.last.get("threads")
    if ctx.active:
        digest = (fitted and fitted.replica_digest) or distributed.check_replicas(model)
        log(
            f"data-parallel: {ctx.world_size} processes, batches of {train_cfg.batch_size // ctx.world_size} each "
            f"(effective {train_cfg.batch_size}); weights identical on all processes (sha256 {digest})"
        )
    if not ctx.is_main:
        return TrainResult(run_dir=folder.path, model=model, history=history, metrics={})
    folder.save_model(model)  # the final (or best, after early stopping) weights
    folder.write_history(history)
    metric_threads = saved(folder.path) if saved is not None else None
    metrics_start = time.perf_counter()
    with torch_threads(metric_threads or threads):
        metrics = final_metrics(model, parts, train_cfg)
    seconds["final_metrics"] = time.perf_counter() - metrics_start
    folder.write_metrics(metrics)
    summary = f"final ELBO: train {metrics['train']['elbo']:.4f} nats"
    if "val" in metrics:
        summary += f", validation {metrics['val']['elbo']:.4f} nats"
    log(summary + f" per example ({metrics['estimator']})")
    if "columns" in metrics:
        cols = metrics["columns"]
        log(
            f"per column, {cols['split']} rows ({cols['estimator']}): "
            + ", ".join(f"{k} {v['log_lik']:.3f}" for k, v in cols["columns"].items())
        )
    seconds["run"] = time.perf_counter() - started
    return TrainResult(
        run_dir=folder.path, model=model, history=history, metrics=metrics, seconds=seconds, threads=threads
    )


def _fit(
    folder: RunFolder,
    config: RunConfig,
    model: Model,
    parts: dict[str, Dataset],
    state,
    ctx,
    seconds: dict[str, float],
    extra: Sequence[Callback] = (),
) -> FitResult:
    """The one call of ``vaekit.fit`` in the run layer; adds the time spent writing checkpoints to
    ``seconds["checkpoints"]``."""
    checkpointer = folder.checkpointer(
        every=config.checkpoint_every, total_epochs=config.train.epochs, share=config.checkpoint_share or None
    )

    def saver(model: Model, trainer_state) -> None:
        start = time.perf_counter()
        checkpointer(model, trainer_state)
        seconds["checkpoints"] += time.perf_counter() - start

    val = parts["val"].x if len(parts["val"]) else None
    conditional = {}
    if config.model.condition_dim:  # a conditional run: the labels or covariates of each split are its conditions
        conditional = {
            "condition": part_conditions(parts["train"]),
            "val_condition": part_conditions(parts["val"]) if val is not None else None,
        }
    return fit(
        model,
        parts["train"].x,
        val,
        config.train,
        callbacks=[saver, *extra] if ctx.is_main else [],
        resume=state,
        rank=ctx.rank,
        world_size=ctx.world_size,
        **conditional,
    )


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


def _claim_on_main(ctx: distributed.Context, out: str | None, name: str) -> RunFolder:
    """Rank 0 claims the folder (and holds its lock); every process gets its path (or the error)."""
    if not ctx.active:
        return RunFolder.create(out, name=name)
    result: tuple[str, Any] = ("ok", None)
    folder = None
    if ctx.is_main:
        try:
            folder = RunFolder.create(out, name=name)
            result = ("ok", str(folder.path))
        except (ValueError, TypeError, OSError) as err:
            result = ("error", str(err))
    kind, value = distributed.broadcast_object(result)
    if kind == "error":
        raise ValueError(value)
    return folder if folder is not None else RunFolder(value)


__all__ = ["ModelSpec", "Prepared", "TrainConfig", "TrainResult", "prepare", "resume", "torch_threads", "train"]
