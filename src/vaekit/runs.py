"""Run folders: train a model from plain settings and write/read everything it produces.

A run folder holds ``config.json`` (model spec, training settings, data source and split),
``model.safetensors``, ``trainer.safetensors``, ``history.jsonl`` and ``metrics.json``. The
CLI and the scikit-learn estimator both use this module, so their folders are the same.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__, checkpoint, distributed, likelihoods
from .data import Dataset, load as load_data, split as split_indices
from .errors import CheckpointError, DataError
from .model import Model
from .spec import ModelSpec, build_model
from .train import History, TrainConfig, evaluate_elbo, fit

METRICS_FILE = "metrics.json"

# settings a user may give (CLI flags, --config files, Python); None means "decide from the data"
DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "binarize": False,
    "likelihood": "auto",
    "scale": None,
    "latent_dim": 8,
    "hidden": (128, 128),
    "activation": "relu",
    "network": "mlp",
    "epochs": 100,
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "beta": 1.0,
    "warmup": 0.0,
    "free_bits": 0.0,
    "n_samples": 1,
    "iw_samples": 0,
    "grad_clip": None,
    "early_stopping": None,
    "seed": 0,
    "device": "auto",
    "val_fraction": 0.1,
    "test_fraction": 0.1,
    "split_seed": 0,
    "checkpoint_every": 1,
    "progress": None,
    "out": None,
    "threads": 0,
    "compile": False,
    "amp": None,
}
_TRAIN_KEYS = [
    "epochs", "batch_size", "lr", "weight_decay", "beta", "warmup", "free_bits", "n_samples",
    "iw_samples", "grad_clip", "early_stopping", "seed", "device", "progress", "threads", "compile", "amp",
]


def normalise_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, accept dashed names, reject unknown keys."""
    clean = {str(k).replace("-", "_"): v for k, v in settings.items()}
    unknown = set(clean) - set(DEFAULTS) - {"config", "resume"}
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}; see 'vaekit train --help'")
    merged = {**DEFAULTS, **{k: v for k, v in clean.items() if k in DEFAULTS}}
    hidden = merged["hidden"]
    if isinstance(hidden, str):
        hidden = parse_hidden(hidden)
    merged["hidden"] = tuple(int(h) for h in hidden)
    return merged


def parse_hidden(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "linear"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--hidden takes comma-separated layer sizes like 64,64 (or 'linear'), got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise ValueError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


# -- data --------------------------------------------------------------------------------
def data_config(settings: dict[str, Any]) -> dict[str, Any]:
    source = str(settings["data"])
    options = {"binarize": bool(settings["binarize"])} if source == "digits" else {}
    if source not in ("sine", "pinwheel", "digits"):
        source = str(Path(source).resolve()) if Path(source).exists() else source
    val, test = float(settings["val_fraction"]), float(settings["test_fraction"])
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val-fraction and --test-fraction must be in [0, 1) and sum below 1, got {val} and {test}")
    return {"source": source, "options": options, "split": {"fractions": [1 - val - test, val, test], "seed": int(settings["split_seed"])}}


def load_splits(data_cfg: dict[str, Any]) -> dict[str, Dataset]:
    """The run's data, split exactly as when it was trained."""
    if data_cfg.get("source") == "array":  # written by vaekit.VAE.save: the rows were never stored
        raise DataError("this run was trained on in-memory arrays (vaekit.VAE.save), so its data are not stored; "
                        "give the data to use with --data FILE")
    full = load_data(data_cfg["source"], **data_cfg.get("options", {}))
    idx = split_indices(len(full), tuple(data_cfg["split"]["fractions"]), data_cfg["split"]["seed"])
    parts = dict(zip(("train", "val", "test"), (full.subset(i) for i in idx)))
    if len(parts["train"]) == 0:
        raise DataError(f"{data_cfg['source']} leaves no training examples after the split")
    return parts


def choose_likelihood(name: str, scale: float | None, x: np.ndarray) -> likelihoods.Likelihood:
    """``auto`` looks at the data; ``--scale`` fixes a Gaussian's standard deviation."""
    if scale is not None and name not in ("auto", "gaussian", "normal"):
        raise ValueError(f"--scale applies to the Gaussian likelihood, not {name!r}")
    if name == "auto":
        lik = likelihoods.Gaussian(scale) if scale is not None else likelihoods.auto(x)
    elif name in ("gaussian", "normal"):
        lik = likelihoods.Gaussian(scale if scale is not None else "learned")
    elif name == "categorical":
        levels = int(np.max(x)) + 1 if np.all(x == np.round(x)) and np.min(x) >= 0 else 0
        if levels < 2:
            raise ValueError("a categorical likelihood needs non-negative integer data with at least 2 levels")
        lik = likelihoods.Categorical(levels)
    else:
        lik = likelihoods.create(name)
    lik.validate(x)
    return lik


# -- runs --------------------------------------------------------------------------------
@dataclass
class Run:
    """An opened run folder."""

    path: Path
    config: dict[str, Any]
    model: Model
    history: History = field(default_factory=History)

    def data(self, which: str = "test") -> Dataset:
        return load_splits(self.config["data"])[which]


def new_run_dir(settings: dict[str, Any], data_name: str) -> Path:
    if settings.get("out"):
        path = Path(settings["out"])
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"output folder {path} exists and is not empty; choose another --out or delete it")
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{data_name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def open_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    path = Path(path)
    if not (path / checkpoint.CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not a vaekit run folder (no {checkpoint.CONFIG_FILE})")
    config = checkpoint.read_json(path / checkpoint.CONFIG_FILE)
    if not (path / checkpoint.MODEL_FILE).is_file():
        raise CheckpointError(f"{path} holds no trained model yet ({checkpoint.MODEL_FILE} is missing)")
    model = checkpoint.load(path, device=device)
    return Run(path=path, config=config, model=model, history=checkpoint.read_history(path / checkpoint.HISTORY_FILE))


def read_input(run: Run, source: str | None = None, which: str = "test") -> Dataset:
    """Data to feed a trained run's model (evaluate, encode, reconstruct, score): a built-in
    name or a file, or the run's own split ``which`` when ``source`` is None. The data pass
    through the run's fitted preprocessing (if any) and are checked against the model."""
    data = run.data(which) if source is None else load_data(source, **(run.config["data"].get("options", {}) if source == run.config["data"]["source"] else {}))
    shape = tuple(run.model.data_shape or ())
    if tuple(data.x.shape[1:]) != shape:
        raise DataError(f"the data have shape {tuple(data.x.shape[1:])} per example, but this run's model takes {shape}")
    run.model.likelihood.validate(data.x)
    return data


def format_output(run: Run, x: np.ndarray) -> np.ndarray:
    """Model-space arrays (samples, reconstructions) back in the data's own form. With no fitted
    preprocessing this is the identity."""
    return x


@dataclass
class TrainResult:
    run_dir: Path
    model: Model
    history: History
    metrics: dict[str, Any]


def train(
    settings: dict[str, Any],
    *,
    log: Callable[[str], None] = print,
    data: dict[str, Dataset] | None = None,
) -> TrainResult:
    """Train a new run from settings (see ``DEFAULTS``); write its folder as it goes.

    Under torchrun (an initialised process group) every process calls this with the same
    settings; rank 0 alone chooses the folder, writes files and logs."""
    ctx = distributed.current()
    if not ctx.is_main:
        log = _silent
    settings = normalise_settings(settings)
    data_cfg = data_config(settings)
    parts = data or load_splits(data_cfg)
    x_train = parts["train"].x
    lik = choose_likelihood(str(settings["likelihood"]).lower(), settings["scale"], x_train)
    if len(parts["val"]):
        lik.validate(parts["val"].x)
    spec = ModelSpec(
        data_shape=x_train.shape[1:],
        latent_dim=settings["latent_dim"],
        hidden=settings["hidden"],
        activation=settings["activation"],
        likelihood=lik.config(),
        network=settings["network"],
    )
    train_cfg = TrainConfig(**{k: settings[k] for k in _TRAIN_KEYS})
    torch.manual_seed(train_cfg.seed)
    model = build_model(spec)  # after seeding: the same seed gives the same initial weights
    run_dir = _on_main(ctx, lambda: new_run_dir(settings, parts["train"].name))
    config = {
        "format_version": checkpoint.FORMAT_VERSION,
        "vaekit_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "model": spec.to_dict(),
        "train": train_cfg.to_dict(),
        "data": {**data_cfg, "name": parts["train"].name, "sizes": {k: len(v) for k, v in parts.items()},
                 "image_shape": parts["train"].image_shape},
        "checkpoint_every": int(settings["checkpoint_every"]),
    }
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(run_dir / checkpoint.CONFIG_FILE, config)
    log(f"run folder: {run_dir}")
    log(f"data: {parts['train'].name}, {len(parts['train'])} train / {len(parts['val'])} validation / "
        f"{len(parts['test'])} test examples of shape {tuple(x_train.shape[1:])}; likelihood: {describe(lik)}")
    return _fit_and_finish(run_dir, config, model, parts, train_cfg, None, log)


def resume(run_dir: str | os.PathLike, *, epochs: int | None = None, device: str | None = None,
           progress: bool | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Continue a stopped run; the result equals an uninterrupted run with the same settings
    (also under torchrun with the same number of processes: every process restores its own RNG)."""
    ctx = distributed.current()
    if not ctx.is_main:
        log = _silent
    run_dir = Path(run_dir)
    config = checkpoint.read_json(run_dir / checkpoint.CONFIG_FILE) if (run_dir / checkpoint.CONFIG_FILE).is_file() else None
    if config is None:
        raise CheckpointError(f"{run_dir} is not a vaekit run folder (no {checkpoint.CONFIG_FILE}); nothing to resume")
    train_dict = dict(config["train"])
    if epochs is not None:
        train_dict["epochs"] = int(epochs)
    if device is not None:
        train_dict["device"] = device
    if progress is not None:
        train_dict["progress"] = progress
    train_cfg = TrainConfig.from_dict(train_dict)
    model = build_model(ModelSpec.from_dict(config["model"]))
    trainer_file = run_dir / checkpoint.TRAINER_FILE
    state = checkpoint.load_trainer(trainer_file, model) if trainer_file.is_file() else None
    if state is None:
        torch.manual_seed(train_cfg.seed)
        model = build_model(ModelSpec.from_dict(config["model"]))
        log(f"{run_dir} has no checkpoint yet: starting it from epoch 0")
    else:
        log(f"resuming {run_dir} from epoch {state.epoch} of {train_cfg.epochs}")
    config["train"] = train_cfg.to_dict()
    if ctx.is_main:
        checkpoint.write_json(run_dir / checkpoint.CONFIG_FILE, config)
    parts = load_splits(config["data"])
    return _fit_and_finish(run_dir, config, model, parts, train_cfg, state, log)


def _fit_and_finish(run_dir, config, model, parts, train_cfg, state, log) -> TrainResult:
    ctx = distributed.current()
    saver = checkpoint.RunCheckpointer(run_dir, every=config.get("checkpoint_every", 1), total_epochs=train_cfg.epochs)
    val = parts["val"].x if len(parts["val"]) else None
    if state is not None and (state.epoch >= train_cfg.epochs or state.stopped_early):
        history = state.history
    else:
        history = fit(model, parts["train"].x, val, train_cfg, callbacks=[saver] if ctx.is_main else [],
                      resume=state, rank=ctx.rank, world_size=ctx.world_size)
    if ctx.active:
        digest = getattr(history, "replica_digest", None) or distributed.check_replicas(model)
        log(f"data-parallel: {ctx.world_size} processes, batches of {train_cfg.batch_size // ctx.world_size} each "
            f"(effective {train_cfg.batch_size}); weights identical on all processes (sha256 {digest})")
    if not ctx.is_main:
        return TrainResult(run_dir=run_dir, model=model, history=history, metrics={})
    checkpoint.save(model, run_dir / checkpoint.MODEL_FILE)  # the final (or best, after early stopping) weights
    checkpoint.write_history(run_dir / checkpoint.HISTORY_FILE, history)
    metrics = final_metrics(model, parts, train_cfg)
    checkpoint.write_json(run_dir / METRICS_FILE, metrics)
    summary = f"final ELBO: train {metrics['train']['elbo']:.4f} nats"
    if "val" in metrics:
        summary += f", validation {metrics['val']['elbo']:.4f} nats"
    log(summary + f" per example ({metrics['estimator']})")
    return TrainResult(run_dir=run_dir, model=model, history=history, metrics=metrics)


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


def _on_main(ctx: distributed.Context, make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0, its result (or its error) on every process."""
    if not ctx.active:
        return make()
    result: tuple[str, Any] = ("ok", None)
    if ctx.is_main:
        try:
            result = ("ok", make())
        except (ValueError, TypeError, OSError) as err:
            result = ("error", str(err))
    kind, value = distributed.broadcast_object(result)
    if kind == "error":
        raise ValueError(value)
    return value


FINAL_SAMPLES = 10


def final_metrics(model: Model, parts: dict[str, Dataset], train_cfg: TrainConfig) -> dict[str, Any]:
    device = next(model.parameters()).device
    gen_state = torch.get_rng_state()
    torch.manual_seed(train_cfg.seed)  # the same run always reports the same numbers
    out: dict[str, Any] = {"estimator": f"ELBO, {FINAL_SAMPLES}-sample Monte Carlo average, closed-form KL", "units": "nats per example"}
    for name in ("train", "val"):
        if len(parts[name]):
            x = torch.as_tensor(parts[name].x, device=device)
            out[name] = evaluate_elbo(model, x, train_cfg.eval_batch_size, n_samples=FINAL_SAMPLES)
            out[name]["n"] = len(parts[name])
    torch.set_rng_state(gen_state)
    return out


def describe(lik: likelihoods.Likelihood) -> str:
    cfg = lik.config()
    extra = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    return f"{cfg['name']}({extra})" if extra else cfg["name"]
