"""Saving and loading: safetensors for tensors, JSON for everything else, never pickle.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash leaves either the old file or the new one, never a torn one. Tensor files carry
``format_version`` and a SHA-256 of their tensor bytes, so corruption is reported, not loaded.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as _st_save

from . import __version__
from .errors import CheckpointError
from .model import Model
from .spec import ModelSpec, build_model
from .train import History, TrainerState

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"


# -- atomic files ----------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupted or truncated ({err.msg if hasattr(err, 'msg') else err})") from None


def write_history(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(_jsonable(row)) + "\n" for row in history))


def read_history(path: str | os.PathLike) -> History:
    path = Path(path)
    if not path.is_file():
        return History()
    try:
        return History(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupted ({err.msg} at line {err.lineno})") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


# -- tensor files ----------------------------------------------------------------------
def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {k: json.dumps(_jsonable(v)) for k, v in metadata.items()}
    meta["format_version"] = str(FORMAT_VERSION)
    meta["vaekit_version"] = __version__
    meta["sha256"] = _digest(tensors)
    atomic_write_bytes(path, _st_save(tensors, metadata=meta))


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"{path} is corrupted or truncated and cannot be read ({err})") from None
    version = int(raw_meta.get("format_version", "0") or 0)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer vaekit ({raw_meta.get('vaekit_version', '?')}, format {version}); "
            f"this vaekit ({__version__}) reads formats up to {FORMAT_VERSION}: upgrade vaekit"
        )
    if version < 1:
        raise CheckpointError(f"{path} is not a vaekit checkpoint (no format version in its header)")
    if raw_meta.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path} is corrupted: its tensors do not match the checksum written with them")
    meta = {}
    for key, value in raw_meta.items():
        if key in ("format_version", "vaekit_version", "sha256"):
            meta[key] = value
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path} has a corrupted header entry {key!r}") from None
    return tensors, meta


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested dicts/lists with tensors -> a JSON skeleton plus a flat name -> tensor dict."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: _unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(_unflatten(v, tensors) for v in skeleton["__tuple__"])
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


# -- models ------------------------------------------------------------------------------
def save(model: Model, path: str | os.PathLike) -> Path:
    """Save a model built by ``vaekit.build_model`` to one ``.safetensors`` file (weights plus
    the spec needed to rebuild it). ``path`` may be a run folder; the file is then
    ``path/model.safetensors``."""
    if getattr(model, "spec", None) is None:
        raise TypeError(
            "vaekit.save needs a model built by vaekit.build_model (it records the architecture); "
            "for your own networks save model.state_dict() with safetensors and load it into a rebuilt model"
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / MODEL_FILE
    write_tensors(path, model.state_dict(), {"spec": model.spec.to_dict()})
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by ``save`` (a ``.safetensors`` file or a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    tensors, meta = read_tensors(path)
    if "spec" not in meta:
        raise CheckpointError(f"{path} holds no model spec; it was not written by vaekit.save")
    try:
        model = build_model(ModelSpec.from_dict(meta["spec"]))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has a model spec this vaekit cannot build: {err}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its own spec: {str(err).splitlines()[0]}") from None
    return model.to(device)


# -- training state ----------------------------------------------------------------------
def save_trainer(path: str | os.PathLike, model: Model, state: TrainerState) -> None:
    """Write everything needed to resume: weights, optimiser, RNG states, counters, history."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "model": _flatten(dict(model.state_dict()), "model", tensors),
        "optimizer": _flatten(state.optimizer, "optimizer", tensors),
        "rng": _flatten(state.rng, "rng", tensors),
        "best_weights": _flatten(state.best_weights, "best", tensors),
    }
    counters = {
        "epoch": state.epoch,
        "step": state.step,
        "best_val": _flatten(state.best_val, "", {}),
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
    }
    write_tensors(path, tensors, {"skeleton": skeleton, "counters": counters, "history": list(state.history)})


def load_trainer(path: str | os.PathLike, model: Model) -> TrainerState:
    """Restore ``model``'s weights and return the ``TrainerState`` to pass to ``fit(resume=...)``."""
    tensors, meta = read_tensors(path)
    try:
        skeleton, counters = meta["skeleton"], meta["counters"]
        model.load_state_dict(_unflatten(skeleton["model"], tensors))
        return TrainerState(
            epoch=int(counters["epoch"]),
            step=int(counters["step"]),
            history=History(meta["history"]),
            optimizer=_unflatten(skeleton["optimizer"], tensors),
            rng=_unflatten(skeleton["rng"], tensors),
            best_val=float(_unflatten(counters["best_val"], {})),
            best_epoch=int(counters["best_epoch"]),
            bad_epochs=int(counters["bad_epochs"]),
            best_weights=_unflatten(skeleton["best_weights"], tensors),
            stopped_early=bool(counters["stopped_early"]),
            saved_to=f"{path} (epoch {int(counters['epoch'])})",
        )
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a usable trainer checkpoint ({err})") from None


class RunCheckpointer:
    """Training callback: after every ``every`` epochs (and the last), write the run folder's
    model, trainer state and history. Each file is atomic; ``trainer.safetensors`` alone is a
    complete resume point."""

    def __init__(self, run_dir: str | os.PathLike, every: int = 1, total_epochs: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.every = max(1, int(every))
        self.total_epochs = total_epochs

    def __call__(self, model: Model, state: TrainerState) -> None:
        last = state.stopped_early or (self.total_epochs is not None and state.epoch >= self.total_epochs)
        if state.epoch % self.every and not last:
            return
        save_trainer(self.run_dir / TRAINER_FILE, model, state)
        save(model, self.run_dir / MODEL_FILE)
        write_history(self.run_dir / HISTORY_FILE, state.history)
        state.saved_to = f"{self.run_dir / TRAINER_FILE} (epoch {state.epoch})"
