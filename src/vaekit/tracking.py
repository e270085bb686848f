"""Experiment tracking: TensorBoard and MLflow, as ``fit`` callbacks and for whole run folders.

Both are optional extras (``pip install 'vaekit[tracking]'``), imported only when used.

- ``TensorBoard(log_dir)``: every history column as a scalar (step = epoch), the figures as
  images and the hyper-parameters in the HParams tab, written with ``torch.utils.tensorboard``.
- ``MLflow(uri)``: parameters, every history column as a metric per epoch and (for a run
  folder) the folder as artifacts, to an MLflow tracking URI; default a local ``./mlruns``
  file store.

A logger is a ``fit`` callback: ``fit(model, x, callbacks=[TensorBoard("tb")])`` logs each epoch
as it ends; ``logger.finish(params=..., figures=..., artifacts=...)`` adds the rest and closes it.
``log_run(run_dir, "tensorboard")`` logs a finished run folder: its history.jsonl epoch by epoch,
config.json as parameters, figures/ and, for MLflow, the folder. ``vaekit train --log`` logs live
instead: ``run_logger`` is one of the run's ``fit`` callbacks, so each epoch is logged as it ends,
and ``finish_run`` adds the rest once the figures are drawn.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("tensorboard", "mlflow")
STEP = "epoch"  # the history column used as the step; every other numeric column is logged


def _need(module: str, extra_hint: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"--log {extra_hint} needs the {extra_hint} package: pip install 'vaekit[tracking]' "
            f"(or pip install {extra_hint})"
        ) from None


def check_available(kind: str) -> None:
    """ValueError (one line, with the install command) unless tracker ``kind`` can be used."""
    if kind not in KINDS:
        raise ValueError(f"unknown tracker {kind!r}; choose one of: {', '.join(KINDS)}")
    try:
        _need(kind, kind)
    except ImportError as err:
        raise ValueError(str(err)) from None


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The loggable columns of a history row: numbers (not the epoch), as floats."""
    out = {}
    for key, value in row.items():
        if key == STEP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as flat ``a.b`` keys; lists and None as text (what trackers accept)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class _Logger:
    """What both trackers share: a ``fit`` callback logging the newest history row."""

    def __call__(self, model, state) -> None:
        if state.history:
            row = state.history[-1]
            self.log_row(row, int(row.get(STEP, len(state.history))))

    def log_history(self, history: Iterable[dict[str, Any]]) -> None:
        for i, row in enumerate(history, start=1):
            self.log_row(row, int(row.get(STEP, i)))

    def log_row(self, row: dict[str, Any], step: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        figures: Iterable[Path] = (),
        artifacts: Path | None = None,
    ) -> None:  # pragma: no cover
        raise NotImplementedError


class TensorBoard(_Logger):
    """Writes TensorBoard event files under ``log_dir`` (default: torch's ./runs/DATE_HOST).
    ``purge_step``: TensorBoard then drops the events of earlier writers in that folder from this
    step on (a resumed run that logs its whole history again)."""

    def __init__(self, log_dir: str | Path | None = None, purge_step: int | None = None) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)
        self.purge_step = purge_step
        self._writer = None

    def __deepcopy__(self, memo):  # scikit-learn's clone copies parameters: a fresh, unopened logger
        return TensorBoard(self.log_dir, self.purge_step)

    @property
    def writer(self):
        if self._writer is None:
            _need("tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=self.purge_step)
            self.log_dir = self._writer.log_dir
        return self._writer

    def log_row(self, row: dict[str, Any], step: int) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, step)

    def finish(self, params=None, metrics=None, figures=(), artifacts=None) -> None:
        writer = self.writer
        for path in figures:
            writer.add_image(f"figures/{Path(path).stem}", _read_png(path), dataformats="HWC")
        if params:
            from torch.utils.tensorboard.summary import hparams

            finals = {f"final/{k}": v for k, v in (metrics or {}).items() if math.isfinite(v)}
            # written into this run (not a sub-run as SummaryWriter.add_hparams does)
            for summary in hparams(flatten(params), finals):
                writer.file_writer.add_summary(summary)
            for key, value in finals.items():
                writer.add_scalar(key, value)
        writer.flush()
        writer.close()
        self._writer = None


class MLflow(_Logger):
    """Logs to an MLflow tracking server or store (default: the file store ./mlruns) through
    ``mlflow.tracking.MlflowClient``, in experiment ``experiment``, one MLflow run per logger."""

    def __init__(self, uri: str | Path | None = None, experiment: str = "vaekit", run_name: str | None = None) -> None:
        self.uri = str(uri) if uri is not None else None
        self.experiment = experiment
        self.run_name = run_name
        self.run_id: str | None = None
        self._client = None

    def __deepcopy__(self, memo):
        return MLflow(self.uri, self.experiment, self.run_name)

    @property
    def tracking_uri(self) -> str:
        uri = self.uri or "mlruns"
        if "://" in uri or uri.startswith(("databricks", "sqlite:")):
            return uri
        return Path(uri).resolve().as_uri()  # a local folder: MLflow's file store

    @property
    def client(self):
        if self._client is None:
            _need("mlflow", "mlflow")
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("file:"):
                # recent MLflow refuses a file store unless told it is wanted; a local folder means it is
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            found = self._client.get_experiment_by_name(self.experiment)
            exp_id = found.experiment_id if found is not None else self._client.create_experiment(self.experiment)
            name = self.run_name or f"vaekit-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
            self.run_id = self._client.create_run(exp_id, run_name=name).info.run_id
        return self._client

    def log_row(self, row: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(_dt.datetime.now().timestamp() * 1000)
        values = [Metric(key, value, stamp, step) for key, value in scalars(row).items()]
        if values:
            self.client.log_batch(self.run_id, metrics=values)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def finish(self, params=None, metrics=None, figures=(), artifacts=None) -> None:
        client = self.client
        if params:
            self.log_params(params)
        for key, value in (metrics or {}).items():
            if math.isfinite(value):
                client.log_metric(self.run_id, f"final/{key}", float(value))
        for path in figures:
            client.log_artifact(self.run_id, str(path), artifact_path="figures")
        if artifacts is not None:
            client.log_artifacts(self.run_id, str(artifacts), artifact_path="run")
        client.set_terminated(self.run_id)
        self._client = None  # a later fit with this logger starts a new MLflow run; run_id names the last one


def create(kind: str, uri: str | Path | None = None) -> _Logger:
    """A logger by name: ``"tensorboard"`` (``uri``: the log folder) or ``"mlflow"`` (``uri``: the
    tracking URI)."""
    if kind == "tensorboard":
        return TensorBoard(uri)
    if kind == "mlflow":
        return MLflow(uri)
    raise ValueError(f"unknown tracker {kind!r}; choose one of: {', '.join(KINDS)}")


def callbacks(log) -> list:
    """The ``fit`` callbacks for an estimator's ``log`` option: None, a tracker name, a logger
    (any callable ``(model, state)``), or a list of those."""
    if log is None:
        return []
    items = log if isinstance(log, (list, tuple)) else [log]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(create(item))
        elif callable(item):
            out.append(item)
        else:
            raise TypeError(f"log takes None, 'tensorboard', 'mlflow', a fit callback or a list of them, got {item!r}")
    return out


def finish(loggers: Iterable, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None) -> None:
    """Close the trackers among ``loggers`` (other callbacks are left alone)."""
    for logger in loggers:
        if isinstance(logger, _Logger):
            logger.finish(params=params, metrics=metrics)


def log_run(run_dir: str | Path, kind: str, uri: str | Path | None = None) -> str:
    """Log a finished run folder: history.jsonl epoch by epoch, config.json as parameters, the final
    metrics, figures/*.png and (MLflow) the folder as artifacts. TensorBoard writes to RUN/tensorboard
    unless ``uri`` names a folder. Returns where it went."""
    from .runs import RunFolder

    logger = run_logger(run_dir, kind, uri)
    logger.log_history(RunFolder.open(run_dir).read_history())
    return finish_run(logger, run_dir)


def run_logger(run_dir: str | Path, kind: str, uri: str | Path | None = None) -> _Logger:
    """The logger of run folder ``run_dir``, not yet opened: TensorBoard into RUN/tensorboard unless
    ``uri`` names a folder, replacing the events an earlier logger left there; MLflow at ``uri``
    (default ./mlruns), a new MLflow run named after the folder. As a ``fit`` callback it logs each
    epoch as it ends; ``finish_run`` closes it."""
    if kind not in KINDS:
        raise ValueError(f"unknown tracker {kind!r}; choose one of: {', '.join(KINDS)}")
    run_dir = Path(run_dir)
    logger = create(kind, uri if uri is not None or kind == "mlflow" else run_dir / "tensorboard")
    if isinstance(logger, MLflow):
        logger.run_name = run_dir.name
    else:  # it logs the whole history: what an earlier run (or a stopped one) left there is replaced
        logger.purge_step = 1
    return logger


def finish_run(logger: _Logger, run_dir: str | Path) -> str:
    """Close ``logger`` with what a run folder holds beside its history: config.json as parameters,
    the final metrics, figures/*.png and (MLflow) the folder as artifacts. Returns where it went."""
    from .runs import RunFolder

    folder = RunFolder.open(run_dir)
    run_dir = Path(run_dir)
    config = folder.read_config()
    params = {k: config[k] for k in ("model", "train", "data") if k in config}
    metrics = {}
    if folder.metrics_path.is_file():
        for split, values in folder.read_metrics().items():
            if isinstance(values, dict) and isinstance(values.get("elbo"), (int, float)):
                metrics[f"{split}_elbo"] = float(values["elbo"])
    figures = sorted(folder.figures_dir.glob("*.png")) if folder.figures_dir.is_dir() else []
    logger.finish(
        params=params, metrics=metrics, figures=figures, artifacts=run_dir if isinstance(logger, MLflow) else None
    )
    if isinstance(logger, MLflow):
        return f"MLflow run {logger.run_id} in experiment {logger.experiment!r} at {logger.tracking_uri}"
    return f"TensorBoard events in {logger.log_dir} (tensorboard --logdir {logger.log_dir})"


def _read_png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
