"""``RunFolder``: the only code that creates, reads and writes a run folder.

A run folder holds ``config.json`` (the ``RunConfig`` plus metadata), ``model.safetensors``,
``trainer.safetensors``, ``history.jsonl``, ``metrics.json``, ``preprocessing.json`` (a table's
fitted columns), ``covariates.json`` (a table's condition columns, for ``--condition-columns``), ``figures/`` and ``report.html``.

A new folder is claimed exclusively: the folder is made with ``mkdir`` (never ``exist_ok``) and a
lock file is made with ``O_EXCL`` inside it; the process holding the lock is the only writer until it
lets go. A second writer on the same folder gets a clear refusal. ``vaekit train --resume`` takes the
same lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import checkpoint
from .._version import __version__
from ..config import RunConfig
from ..errors import CheckpointError

LOCK_FILE = ".vaekit.lock"
METRICS_FILE = "metrics.json"
PREPROCESSING_FILE = "preprocessing.json"  # a table's fitted column types, scales and categories
FIGURES_DIR = "figures"
REPORT_FILE = "report.html"


class RunFolderBusy(CheckpointError):
    """Another process is writing this run folder."""


class RunFolder:
    """One run folder: its paths and its files. Make one with ``create`` (a new run) or ``open``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._locked = False

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- paths ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / checkpoint.CONFIG_FILE

    @property
    def model_path(self) -> Path:
        return self.path / checkpoint.MODEL_FILE

    @property
    def trainer_path(self) -> Path:
        return self.path / checkpoint.TRAINER_FILE

    @property
    def history_path(self) -> Path:
        return self.path / checkpoint.HISTORY_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def preprocessing_path(self) -> Path:
        return self.path / PREPROCESSING_FILE

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES_DIR

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    # -- making and opening --------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | os.PathLike | None = None, *, name: str = "run", root: str | os.PathLike = "runs"
    ) -> RunFolder:
        """Claim a new folder and hold its lock (``release`` or ``with folder.lock()`` lets go).

        ``path``: that folder, which must not exist or be empty. None: ``root/NAME-TIME``, with a
        ``-2``, ``-3``, ... suffix when another run took the name first."""
        if path is not None:
            folder = cls(path)
            try:
                folder.path.mkdir(parents=True)
            except FileExistsError:
                if not folder.path.is_dir():
                    raise ValueError(
                        f"output folder {folder.path} exists and is not a folder; choose another"
                    ) from None
            folder._claim()
            return folder
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}"
        for i in range(1, 1000):
            folder = cls(base if i == 1 else base.with_name(f"{base.name}-{i}"))
            try:
                folder.path.mkdir(parents=True)
            except FileExistsError:
                continue
            folder._claim()
            return folder
        raise OSError(f"could not find a free run folder name next to {base}")  # pragma: no cover

    def _claim(self) -> None:
        """Take the lock of a folder that must hold nothing else; refuse otherwise."""
        self.acquire()
        others = [p.name for p in self.path.iterdir() if p.name != LOCK_FILE]
        if others:
            self.release()
            raise ValueError(
                f"output folder {self.path} exists and is not empty; choose another output folder or delete it"
            )

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunFolder:
        folder = cls(path)
        if not folder.config_path.is_file():
            raise CheckpointError(f"{folder.path} is not a vaekit run folder (no {checkpoint.CONFIG_FILE})")
        return folder

    # -- the writer's lock -----------------------------------------------------------------
    def acquire(self) -> None:
        """Become this folder's only writer (a lock file made with O_EXCL), or ``RunFolderBusy``."""
        for attempt in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if attempt == 0 and self._stale_lock():
                    with contextlib.suppress(FileNotFoundError):
                        self.lock_path.unlink()
                    continue
                raise RunFolderBusy(
                    f"run folder {self.path} is in use by another vaekit process "
                    f"({self._lock_owner()}); wait for it to finish, or delete {self.lock_path} "
                    "if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self._locked = True
            return

    def release(self) -> None:
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            self._locked = False

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold the writer's lock inside the block (a no-op when this object already holds it)."""
        held = self._locked
        if not held:
            self.acquire()
        try:
            yield self
        finally:
            if not held or self._locked:
                self.release()

    def _lock_text(self) -> str:
        try:
            return self.lock_path.read_text().strip()
        except OSError:
            return ""

    def _lock_owner(self) -> str:
        parts = self._lock_text().split()
        return f"pid {parts[0]} on {parts[1]}" if len(parts) == 2 else "a lock file is present"

    def _stale_lock(self) -> bool:
        """The lock's process is gone (same host, no such pid)."""
        parts = self._lock_text().split()
        if len(parts) != 2 or parts[1] != socket.gethostname() or not parts[0].isdigit():
            return False
        try:
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    # -- config.json: written one way, read one way -----------------------------------------
    def write_config(
        self,
        config: RunConfig,
        data_facts: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        created: str | None = None,
    ) -> dict[str, Any]:
        """``config`` as ``RunConfig.to_dict`` plus metadata; ``data_facts`` (name, sizes, ...) go
        next to the data settings, ``extra`` (e.g. the estimator's parameters) at the top."""
        d = {
            "format_version": checkpoint.FORMAT_VERSION,
            "vaekit_version": __version__,
            "created": created or _dt.datetime.now().isoformat(timespec="seconds"),
            **config.to_dict(),
        }
        d["data"].update(data_facts or {})
        d.update(extra or {})
        RunConfig.from_dict(d)  # what is written must read back
        checkpoint.write_json(self.config_path, d)
        return d

    def read_config(self) -> dict[str, Any]:
        """config.json as written (a dict; ``run_config`` gives the checked ``RunConfig``)."""
        if not self.config_path.is_file():
            raise CheckpointError(f"{self.path} is not a vaekit run folder (no {checkpoint.CONFIG_FILE})")
        d = checkpoint.read_json(self.config_path)
        if not isinstance(d, dict):
            raise CheckpointError(f"{self.config_path} does not hold a table of settings")
        return d

    def run_config(self) -> RunConfig:
        try:
            return RunConfig.from_dict(self.read_config())
        except ValueError as err:
            raise CheckpointError(f"{self.config_path}: {err}") from None

    # -- metrics, preprocessing, history, weights ----------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        checkpoint.write_json(self.metrics_path, metrics)

    def read_metrics(self) -> dict[str, Any]:
        return checkpoint.read_json(self.metrics_path) if self.metrics_path.is_file() else {}

    def merge_metrics(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Replace one section (e.g. ``"evaluate"``) of metrics.json, keeping the others."""
        metrics = self.read_metrics()
        metrics[section] = values
        self.write_metrics(metrics)
        return metrics

    def write_preprocessing(self, schema) -> None:
        checkpoint.write_json(self.preprocessing_path, schema.to_dict())

    @property
    def covariates_path(self) -> Path:
        from .covariates import COVARIATES_FILE

        return self.path / COVARIATES_FILE

    def write_covariates(self, covariates) -> None:
        """The fitted encoding of a conditional table run's condition columns (``Covariates``)."""
        checkpoint.write_json(self.covariates_path, covariates.to_dict())

    def read_covariates(self):
        """The run's ``Covariates`` (trained with --condition-columns), or None."""
        if not self.covariates_path.is_file():
            return None
        from .covariates import Covariates

        return Covariates.from_dict(checkpoint.read_json(self.covariates_path))

    def read_preprocessing(self):
        """The fitted table preprocessing (``vaekit.data.Schema``), or None for other data."""
        if not self.preprocessing_path.is_file():
            return None
        from ..data.tables import Schema

        return Schema.from_dict(checkpoint.read_json(self.preprocessing_path))

    def write_history(self, history) -> None:
        checkpoint.write_history(self.history_path, history)

    def read_history(self):
        return checkpoint.read_history(self.history_path)

    def save_model(self, model) -> None:
        checkpoint.save(model, self.model_path)

    def load_model(self, device="cpu"):
        if not self.model_path.is_file():
            raise CheckpointError(f"{self.path} holds no trained model yet ({checkpoint.MODEL_FILE} is missing)")
        return checkpoint.load(self.path, device=device)

    def checkpointer(self, every: int, total_epochs: int, share: float | None = None):
        """The training callback that writes ``model``/``trainer`` checkpoints into this folder, taking
        at most ``share`` of the training time (see ``checkpoint.RunCheckpointer``)."""
        return checkpoint.RunCheckpointer(self.path, every=every, total_epochs=total_epochs, share=share)

    def load_trainer(self, model):
        return checkpoint.load_trainer(self.trainer_path, model) if self.trainer_path.is_file() else None

    # -- figures and the report ------------------------------------------------------------------
    def write_figures(self, pngs: dict[str, bytes]) -> list[Path]:
        """``figures/NAME.png`` for each rendered figure (name -> PNG bytes), each written atomically."""
        self.figures_dir.mkdir(exist_ok=True)
        paths = []
        for name, data in pngs.items():
            path = self.figures_dir / f"{name}.png"
            checkpoint.atomic_write_bytes(path, data)
            paths.append(path)
        return paths

    def write_report(self, html: str, out: str | os.PathLike | None = None) -> Path:
        """The report's HTML, atomically, at ``report.html`` or ``out``."""
        path = Path(out) if out is not None else self.report_path
        checkpoint.atomic_write_text(path, html)
        return path
