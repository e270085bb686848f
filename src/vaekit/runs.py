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
from .data.builtin import BUILTIN
from .data.tables import Schema, unknown_summary
from .errors import CheckpointError, DataError
from .model import Model
from .spec import ModelSpec, build_model, default_network
from .tabular import column_log_likelihoods
from .train import History, TrainConfig, evaluate_elbo, fit

METRICS_FILE = "metrics.json"
PREPROCESSING_FILE = "preprocessing.json"  # a table's fitted column types, scales and categories

# settings a user may give (CLI flags, --config files, Python); None means "decide from the data"
DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "binarize": False,
    "likelihood": "auto",
    "scale": None,
    "latent_dim": 8,
    "hidden": (128, 128),
    "activation": "relu",
    "network": "auto",
    "channels": (32, 64),
    "label_column": None,
    "numeric": None,
    "binary": None,
    "categorical": None,
    "stream": "auto",
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
    channels = merged["channels"]
    if isinstance(channels, str):
        channels = parse_hidden(channels, flag="--channels")
    merged["channels"] = tuple(int(c) for c in channels)
    merged["binarize"] = binarize_mode(merged["binarize"])
    return merged


def binarize_mode(value: Any) -> str | None:
    """None (off), "static" (threshold once) or "dynamic" (a fresh Bernoulli draw every batch)."""
    if value in (None, False, "", "none", "off", "no", "false"):
        return None
    if value is True or value in ("static", "on", "yes", "true"):
        return "static"
    if value == "dynamic":
        return "dynamic"
    raise ValueError(f"--binarize takes static or dynamic, got {value!r}")


def parse_hidden(text: str, flag: str = "--hidden") -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "linear"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated layer sizes like 64,64 (or 'linear'), got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise ValueError(f"{flag} sizes must be positive, got {text!r}")
    return sizes


# -- data --------------------------------------------------------------------------------
_TABLE_SETTINGS = ("label_column", "numeric", "binary", "categorical")


def data_config(settings: dict[str, Any]) -> dict[str, Any]:
    source = str(settings["data"])
    binarize = binarize_mode(settings["binarize"])
    given = [k for k in _TABLE_SETTINGS if settings.get(k)]
    if source in BUILTIN:
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} applies to tables (.csv, .parquet), not {source}")
        if settings.get("stream") not in (None, "auto", False, "off"):
            raise ValueError(f"--stream applies to .npy files, not {source}")
        if source == "digits":
            options: dict[str, Any] = {"unit": True} if binarize == "dynamic" else {"binarize": binarize == "static"}
        elif binarize:
            raise ValueError(f"--binarize applies to images and pixel arrays in [0, 1], not {source}")
        else:
            options = {}
    else:
        source = str(Path(source).resolve()) if Path(source).exists() else source
        options = {k: settings[k] for k in _TABLE_SETTINGS if settings.get(k)}
        for k in ("numeric", "binary", "categorical"):
            if k in options and isinstance(options[k], str):
                options[k] = [n.strip() for n in options[k].split(",") if n.strip()]
        if binarize == "static":
            options["binarize"] = True
        stream = settings.get("stream", "auto")
        if stream not in (None, "auto"):
            options["stream"] = stream
    val, test = float(settings["val_fraction"]), float(settings["test_fraction"])
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val-fraction and --test-fraction must be in [0, 1) and sum below 1, got {val} and {test}")
    cfg = {"source": source, "options": options, "split": {"fractions": [1 - val - test, val, test], "seed": int(settings["split_seed"])}}
    if binarize == "dynamic":
        cfg["dynamic_binarize"] = True
    return cfg


def load_splits(data_cfg: dict[str, Any], schema: Schema | None = None) -> dict[str, Dataset]:
    """The run's data, split exactly as when it was trained. A table's preprocessing (column
    types, scales, categories) is fitted on the training rows only, or ``schema`` is applied.
    With dynamic binarisation the validation and test rows are binarised once (seeded), the
    training rows stay probabilities."""
    if data_cfg.get("source") == "array":  # written by vaekit.VAE.save: the rows were never stored
        raise DataError("this run was trained on in-memory arrays (vaekit.VAE.save), so its data are not stored; "
                        "give the data to use with --data FILE")
    full = load_data(data_cfg["source"], **data_cfg.get("options", {}))
    idx = split_indices(len(full), tuple(data_cfg["split"]["fractions"]), data_cfg["split"]["seed"])
    parts = dict(zip(("train", "val", "test"), (full.subset(i) for i in idx)))
    if len(parts["train"]) == 0:
        raise DataError(f"{data_cfg['source']} leaves no training examples after the split")
    if full.schema is not None:
        if schema is None:
            opts = data_cfg.get("options", {})
            schema = Schema.fit(parts["train"].frame, numeric=opts.get("numeric", ()), binary=opts.get("binary", ()),
                                categorical=opts.get("categorical", ()), label_column=opts.get("label_column"))
        for name, part in parts.items():
            part.x, part.info["transform_report"] = schema.transform(part.frame, f"the {name} rows")
            part.schema = schema
    if data_cfg.get("dynamic_binarize"):
        x = parts["train"].x
        if hasattr(x, "chunks"):
            raise DataError("--binarize dynamic needs the data in memory; use --stream off, or binarise the file first")
        likelihoods.check_unit_interval(x, "--binarize dynamic")
        for k, name in enumerate(("val", "test"), start=1):
            parts[name].x = bernoulli_draw(parts[name].x, data_cfg["split"]["seed"] + k)
    return parts


def bernoulli_draw(p: np.ndarray, seed: int) -> np.ndarray:
    """A fixed (seeded) binarisation x ~ Bernoulli(p) of data holding probabilities."""
    p = np.asarray(p, dtype=np.float32)
    return (np.random.default_rng(seed).random(p.shape, dtype=np.float32) < p).astype(np.float32)


def choose_likelihood(name: str, scale: float | None, x: np.ndarray, schema: Schema | None = None) -> likelihoods.Likelihood:
    """``auto`` looks at the data; ``--scale`` fixes a Gaussian's standard deviation. A table
    (``schema``) gets the mixed likelihood its columns call for."""
    if scale is not None and name not in ("auto", "gaussian", "normal"):
        raise ValueError(f"--scale applies to the Gaussian likelihood, not {name!r}")
    mixed = likelihoods.Mixed.name
    if schema is not None:
        if name not in ("auto", mixed):
            raise ValueError(f"a table is modelled column by column (likelihood '{mixed}': Gaussian, Bernoulli, "
                             f"categorical); --likelihood {name} applies to arrays and images")
        lik = schema.likelihood()
    elif name == mixed:
        raise ValueError("the mixed likelihood models tables (.csv, .tsv, .parquet files)")
    elif name == "auto":
        lik = likelihoods.Gaussian(scale) if scale is not None else likelihoods.auto(x)
    elif name in ("gaussian", "normal"):
        lik = likelihoods.Gaussian(scale if scale is not None else "learned")
    elif name == "categorical":
        s = likelihoods.value_summary(x)
        levels = int(s["max"]) + 1 if s["integer"] and s["min"] >= 0 and s["size"] else 0
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
    schema: Schema | None = None  # a table's fitted preprocessing (preprocessing.json)

    def data(self, which: str = "test") -> Dataset:
        return load_splits(self.config["data"], self.schema)[which]


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
    return Run(path=path, config=config, model=model, history=checkpoint.read_history(path / checkpoint.HISTORY_FILE),
               schema=read_schema(path))


def read_schema(run_dir: str | os.PathLike) -> Schema | None:
    """The fitted table preprocessing saved with a run, or None for other data."""
    p = Path(run_dir) / PREPROCESSING_FILE
    return Schema.from_dict(checkpoint.read_json(p)) if p.is_file() else None


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def read_input(run: Run, source: str | None = None, which: str = "test",
               log: Callable[[str], None] | None = _stderr) -> Dataset:
    """Data to feed a trained run's model (evaluate, encode, reconstruct, score): a built-in
    name or a file, or the run's own split ``which`` when ``source`` is None. The data pass
    through the run's fitted preprocessing (a table's column scales and categories, static
    or dynamic binarisation) and are checked against the model. Values of a table never seen
    in training are treated as missing and reported through ``log`` (not an error)."""
    data_cfg = run.config["data"]
    if source is None:
        data = run.data(which)
        if which == "train" and data_cfg.get("dynamic_binarize") and not hasattr(data.x, "chunks"):
            # training saw fresh Bernoulli draws of these probabilities; outside training use one fixed draw
            data.x = bernoulli_draw(data.x, data_cfg["split"]["seed"])
    elif source in BUILTIN:
        data = load_data(source, **(data_cfg.get("options", {}) if source == data_cfg["source"] else {}))
    else:
        options = {k: v for k, v in data_cfg.get("options", {}).items() if k != "stream"}
        if run.schema is not None:
            options["schema"] = run.schema
            options["label_column"] = run.schema.label_column
        if not Path(source).exists():
            raise DataError(f"no data set or file named {source!r}")
        data = load_data(source, strict=False, **options)
        if run.schema is not None and data.schema is None:
            raise DataError(f"this run was trained on a table; {Path(source).name} is not one (use .csv, .tsv or .parquet)")
        if run.schema is None and data.schema is not None:
            raise DataError(f"this run was not trained on a table; {Path(source).name} is one")
        if data_cfg.get("dynamic_binarize") and not hasattr(data.x, "chunks"):
            likelihoods.check_unit_interval(data.x, "this run's dynamic binarisation")
            data.x = bernoulli_draw(data.x, data_cfg["split"]["seed"])
    report = data.info.get("transform_report") or {}
    note = unknown_summary(report)
    if note and log is not None:
        log(f"vaekit: note: {note}")
    shape = tuple(run.model.data_shape or ())
    if tuple(data.x.shape[1:]) != shape:
        raise DataError(f"the data have shape {tuple(data.x.shape[1:])} per example, but this run's model takes {shape}")
    run.model.likelihood.validate(data.x)
    return data


def format_output(run: Run, x):
    """Model-space arrays (samples, reconstructions, imputations) back in the data's own form:
    for a table, a pandas DataFrame with the original column names, values and categories;
    otherwise the array itself."""
    if run.schema is not None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return run.schema.inverse(np.asarray(x))
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
    schema = parts["train"].schema
    name = str(settings["likelihood"]).lower()
    if data_cfg.get("dynamic_binarize"):  # the training rows are probabilities, every batch a fresh draw
        if name not in ("auto", likelihoods.Bernoulli.name):
            raise ValueError(f"--binarize dynamic trains a Bernoulli likelihood, not {name!r}")
        lik = likelihoods.Bernoulli()
    else:
        lik = choose_likelihood(name, settings["scale"], x_train, schema)
    if len(parts["val"]):
        lik.validate(parts["val"].x)
    data_shape = tuple(x_train.shape[1:])
    network = settings["network"] if settings["network"] != "auto" else default_network(data_shape, lik)
    image_shape = parts["train"].image_shape
    spec = ModelSpec(
        data_shape=data_shape,
        latent_dim=settings["latent_dim"],
        hidden=settings["hidden"],
        activation=settings["activation"],
        likelihood=lik.config(),
        network=network,
        channels=settings["channels"],
        image_shape=None if image_shape is None or len(data_shape) > 1 else (image_shape if len(image_shape) == 3 else (1, *image_shape)),
    )
    train_cfg = TrainConfig(**{k: settings[k] for k in _TRAIN_KEYS}, dynamic_binarize=bool(data_cfg.get("dynamic_binarize")))
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
        if schema is not None:
            checkpoint.write_json(run_dir / PREPROCESSING_FILE, schema.to_dict())
    log(f"run folder: {run_dir}")
    log(f"data: {parts['train'].name}, {len(parts['train'])} train / {len(parts['val'])} validation / "
        f"{len(parts['test'])} test examples of shape {tuple(x_train.shape[1:])}; likelihood: {describe(lik)}; "
        f"network: {network}" + (" (streamed from disk)" if hasattr(x_train, "chunks") else ""))
    if schema is not None:
        log(f"columns: {schema.describe()}")
        for note in schema.notes:
            log(f"note: {note}")
        for part in ("val", "test"):
            note = unknown_summary(parts[part].info.get("transform_report") or {})
            if note:
                log(f"note ({part} rows): {note}")
    return _fit_and_finish(run_dir, config, model, parts, train_cfg, None, log)


def resume(run_dir: str | os.PathLike, *, epochs: int | None = None, device: str | None = None,
           progress: bool | None = None, lr: float | None = None, log: Callable[[str], None] = print) -> TrainResult:
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
    if lr is not None:
        train_dict["lr"] = float(lr)
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
    parts = load_splits(config["data"], read_schema(run_dir))  # before any write: a refusal changes nothing
    if ctx.is_main:
        checkpoint.write_json(run_dir / checkpoint.CONFIG_FILE, config)
    return _fit_and_finish(run_dir, config, model, parts, train_cfg, state, log)


def _fit_and_finish(run_dir, config, model, parts, train_cfg, state, log) -> TrainResult:
    ctx = distributed.current()
    saver = checkpoint.RunCheckpointer(run_dir, every=config.get("checkpoint_every", 1), total_epochs=train_cfg.epochs)
    val = parts["val"].x if len(parts["val"]) else None
    fitted = None
    if state is not None and (state.epoch >= train_cfg.epochs or state.stopped_early):
        history = state.history
    else:
        fitted = fit(model, parts["train"].x, val, train_cfg, callbacks=[saver] if ctx.is_main else [],
                     resume=state, rank=ctx.rank, world_size=ctx.world_size)
        history = fitted.history
    if ctx.active:
        digest = (fitted and fitted.replica_digest) or distributed.check_replicas(model)
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
    if "columns" in metrics:
        cols = metrics["columns"]
        log(f"per column, {cols['split']} rows ({cols['estimator']}): " + ", ".join(
            f"{k} {v['log_lik']:.3f}" for k, v in cols["columns"].items()))
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
            x = parts[name].x
            if name == "train" and train_cfg.dynamic_binarize:  # score a fixed draw, not the probabilities
                x = bernoulli_draw(x, train_cfg.seed)
            x = x if hasattr(x, "chunks") else torch.as_tensor(x, device=device)
            out[name] = evaluate_elbo(model, x, train_cfg.eval_batch_size, n_samples=FINAL_SAMPLES)
            out[name]["n"] = len(parts[name])
    if hasattr(model.likelihood, "column_names"):  # a table: each column's share of log p(x|z)
        split = "val" if len(parts["val"]) else "train"
        out["columns"] = {"split": split, **column_log_likelihoods(model, parts[split].x, FINAL_SAMPLES,
                                                                   seed=train_cfg.seed)}
    torch.set_rng_state(gen_state)
    return out


def describe(lik: likelihoods.Likelihood) -> str:
    return lik.describe()
