"""Saving and loading: safetensors for tensors, JSON for everything else, never pickle.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash leaves either the old file or the new one, never a torn one.

What is checksummed (SHA-256), so that corruption is reported, never loaded:
- tensor files (``model.safetensors``, ``trainer.safetensors``): from format 2 the digest covers the
  tensors *and* every metadata entry (spec, likelihood config, counters, history, optimiser
  structure, versions). Format 1 files (vaekit before the bump) covered the tensors only; they still
  load, with their metadata checked for shape and keys instead;
- ``config.json`` (it rebuilds the model on ``--resume`` and says how the data were split),
  ``preprocessing.json`` (a table's fitted column scales and categories) and ``covariates.json``
  (a conditional table run's encoding of its condition columns): they change what a loaded
  run computes, so they carry a ``sha256`` entry over the rest of their content;
- not ``metrics.json`` (an output, rewritten by ``vaekit evaluate``; nothing is loaded from it) nor
  ``history.jsonl`` (a copy for people and plots; the history that resume uses is inside
  ``trainer.safetensors``).
Loading is strict: unknown or missing keys in a spec, likelihood config or trainer record are
refused with the key named, and a trainer state whose counters disagree with its history is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import inspect
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as _st_save

from ._version import __version__
from .errors import CheckpointError
from .model import Model
from .spec import ModelSpec, build_model
from .train import History, TrainerState

FORMAT_VERSION = 2  # 2: the checksum covers the metadata too (1: tensors only)
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"


# -- atomic files ----------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``: readers and a
    crash of this process see the old file or the new one, never part of one. ``durable`` also
    fsyncs the data before the rename, so that it survives a crash of the machine."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                err.errno,
                f"no space left on the device to write {path} ({len(data)} bytes); "
                "free some space or write to another folder",
            ) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


CHECKSUMMED_JSON = (
    CONFIG_FILE,
    "preprocessing.json",
    "covariates.json",
)  # the JSON files that change what a loaded run computes
_DIGEST_KEY = "sha256"


def _json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically; ``config.json`` and ``preprocessing.json`` get a
    ``sha256`` entry over the rest of their content."""
    obj = _jsonable(obj)
    if Path(path).name in CHECKSUMMED_JSON and isinstance(obj, dict):
        body = {k: v for k, v in obj.items() if k != _DIGEST_KEY}
        obj = {_DIGEST_KEY: _json_digest(body), **body}
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; for the checksummed ones, verify and drop the ``sha256`` entry."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupted or truncated ({err.msg if hasattr(err, 'msg') else err})") from None
    if path.name not in CHECKSUMMED_JSON:
        return obj
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is corrupted: it must hold a JSON object")
    digest = obj.pop(_DIGEST_KEY, None)
    if digest is None:
        # written before checksums (format 1), unless a damaged entry still looks like one
        damaged = [k for k, v in obj.items() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)]
        version = obj.get("format_version", 1)
        if damaged or not isinstance(version, int) or version >= 2:
            raise CheckpointError(
                f"{path} is corrupted: its {_DIGEST_KEY} checksum entry is missing or damaged "
                f"{'(' + repr(damaged[0]) + ')' if damaged else ''}".rstrip()
            )
    elif digest != _json_digest(obj):
        raise CheckpointError(
            f"{path} is corrupted or was edited: its content does not match its {_DIGEST_KEY} "
            "checksum (restore it, or retrain)"
        )
    return obj


def write_history(path: str | os.PathLike, history: list[dict[str, Any]], *, durable: bool = True) -> None:
    atomic_write_text(path, "".join(json.dumps(_jsonable(row)) + "\n" for row in history), durable=durable)


def read_history(path: str | os.PathLike) -> History:
    path = Path(path)
    if not path.is_file():
        return History()
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupted ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is corrupted (not UTF-8 text)") from None
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise CheckpointError(f"{path} is corrupted: line {bad + 1} is not a record of one epoch")
    return History(rows)


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
_HEADER_KEYS = ("format_version", "vaekit_version", "sha256")  # header entries kept as plain strings


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and, from format 2, every metadata
    entry but the digest itself (format 1 digests passed ``metadata=None``)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if metadata is not None:
        for key in sorted(k for k in metadata if k != "sha256"):
            h.update(b"\0meta\0" + key.encode() + b"\0" + metadata[key].encode())
    return h.hexdigest()


def write_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], *, durable: bool = True
) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {k: json.dumps(_jsonable(v)) for k, v in metadata.items()}
    meta["format_version"] = str(FORMAT_VERSION)
    meta["vaekit_version"] = __version__
    meta["sha256"] = _digest(tensors, meta)
    atomic_write_bytes(path, _st_save(tensors, metadata=meta), durable=durable)


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a vaekit tensor file, verified against its checksum. The metadata's
    ``format_version`` says which checksum it had: from 2 on, the metadata are covered too."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(
            f"{path} is corrupted or truncated and cannot be read ({str(err).splitlines()[0]})"
        ) from None
    text = raw_meta.get("format_version", "0") or "0"
    if not text.isdigit():
        raise CheckpointError(f"{path} is corrupted: its format version {text!r} is not a number")
    version = int(text)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer vaekit ({raw_meta.get('vaekit_version', '?')}, format {version}); "
            f"this vaekit ({__version__}) reads formats up to {FORMAT_VERSION}: upgrade vaekit"
        )
    if version < 1:
        raise CheckpointError(f"{path} is not a vaekit checkpoint (no format version in its header)")
    expected = _digest(tensors, raw_meta if version >= 2 else None)
    if raw_meta.get("sha256") != expected:
        what = "its tensors or metadata do not" if version >= 2 else "its tensors do not"
        raise CheckpointError(f"{path} is corrupted: {what} match the checksum written with them")
    meta: dict[str, Any] = {"format_version": version}
    for key, value in raw_meta.items():
        if key in _HEADER_KEYS:
            meta.setdefault(key, value)
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path} has a corrupted header entry {key!r}") from None
    return tensors, meta


# -- strict checks of what a checkpoint holds ------------------------------------------
def _exact_keys(d: Any, required: set[str], optional: set[str], what: str, path: Path) -> dict:
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, found {type(d).__name__}")
    unknown = sorted(set(d) - required - optional)
    if unknown:
        raise CheckpointError(
            f"{path}: {what} has unknown key(s) {', '.join(map(repr, unknown))}; "
            "the file is corrupted or was not written by this vaekit"
        )
    missing = sorted(required - set(d))
    if missing:
        raise CheckpointError(f"{path}: {what} lacks key(s) {', '.join(map(repr, missing))}; the file is corrupted")
    return d


def check_spec_dict(d: Any, path: Path) -> dict:
    """A spec record's keys against ``ModelSpec``'s fields (every key known; the fields without a
    default present; fields added since the file was written take their defaults), and its
    likelihood config's keys against that likelihood's constructor."""
    from . import likelihoods

    fields = {f.name: f for f in dataclasses.fields(ModelSpec)}
    needed = {
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    needed.add("data_shape")  # optional in settings (decided from the data), always present in a saved spec
    _exact_keys(d, needed, set(fields) - needed, "the model spec", path)
    lik = d.get("likelihood")
    if isinstance(lik, dict):
        name = lik.get("name")
        key = getattr(likelihoods, "_ALIASES", {}).get(str(name).lower(), str(name).lower())
        if not isinstance(name, str) or key not in likelihoods.REGISTRY:
            raise CheckpointError(
                f"{path}: the likelihood config names an unknown likelihood {name!r}; "
                f"known: {', '.join(sorted(likelihoods.REGISTRY))}"
            )
        params = inspect.signature(likelihoods.REGISTRY[key].__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            accepted = {n for n in params if n != "self"}
            required = {
                n
                for n, p in params.items()
                if n != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
            _exact_keys(lik, {"name", *required}, accepted, f"the {key!r} likelihood config", path)
    elif lik is not None and not isinstance(lik, str):
        raise CheckpointError(f"{path}: the likelihood config must be a JSON object, found {type(lik).__name__}")
    return d


def _spec_from_record(d: Any, path: Path) -> ModelSpec:
    check_spec_dict(d, path)
    try:
        return ModelSpec.from_dict(d)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path} has a model spec this vaekit cannot build: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
def save(model: Model, path: str | os.PathLike, *, durable: bool = True) -> Path:
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
    write_tensors(path, model.state_dict(), {"spec": model.spec.to_dict()}, durable=durable)
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by ``save`` (a ``.safetensors`` file or a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    tensors, meta = read_tensors(path)
    if "skeleton" in meta:
        raise CheckpointError(f"{path} is a trainer state, not a model: load {MODEL_FILE} or the run folder")
    if "spec" not in meta:
        raise CheckpointError(f"{path} holds no model spec; it was not written by vaekit.save")
    _exact_keys(meta, {"spec", "format_version", "sha256"}, {"vaekit_version"}, "the header", path)
    spec = _spec_from_record(meta["spec"], path)
    try:
        model = build_model(spec)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path} has a model spec this vaekit cannot build: {_one_line(err)}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its own spec: {_one_line(err)}") from None
    return model.to(device)


# -- training state ----------------------------------------------------------------------
_COUNTERS = {"epoch", "step", "best_val", "best_epoch", "bad_epochs", "stopped_early"}
_SKELETON = {"model", "optimizer", "rng", "best_weights"}


def save_trainer(path: str | os.PathLike, model: Model, state: TrainerState) -> None:
    """Write everything needed to resume: weights, optimiser, RNG states, counters, history
    (and the model's spec, so that a resume into a different architecture is refused)."""
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
    if state.schedule is not None:  # the plateau schedule's tracker (files before it have no such key)
        counters["schedule"] = {k: _flatten(v, "", {}) for k, v in state.schedule.items()}
    meta = {"skeleton": skeleton, "counters": counters, "history": list(state.history)}
    if getattr(model, "spec", None) is not None:
        meta["spec"] = model.spec.to_dict()
    write_tensors(path, tensors, meta)


def _int(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{path}: {what} must be a non-negative integer, found {value!r}; the file is corrupted")
    return value


def _check_counters(counters: dict, history: Any, path: Path) -> None:
    """The counters must tell the same story as the history: one row per completed epoch,
    numbered 1..epoch, and the best / bad epochs within it."""
    epoch = _int(counters["epoch"], "the epoch counter", path)
    step = _int(counters["step"], "the step counter", path)
    best_epoch = _int(counters["best_epoch"], "best_epoch", path)
    bad_epochs = _int(counters["bad_epochs"], "bad_epochs", path)
    if not isinstance(counters["stopped_early"], bool):
        raise CheckpointError(f"{path}: stopped_early must be true or false, found {counters['stopped_early']!r}")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise CheckpointError(f"{path}: its history must be a list of records, one per epoch; the file is corrupted")
    if len(history) != epoch:
        raise CheckpointError(
            f"{path}: its epoch counter says {epoch} completed epochs but its history holds "
            f"{len(history)}; the file is corrupted"
        )
    numbers = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    if numbers != list(range(1, epoch + 1)):
        raise CheckpointError(
            f"{path}: its history's epochs are numbered {numbers[:5]}..., not 1..{epoch}; the file is corrupted"
        )
    if (step == 0) != (epoch == 0) or step < epoch:
        raise CheckpointError(
            f"{path}: its step counter ({step}) does not fit {epoch} completed epochs; the file is corrupted"
        )
    if best_epoch > epoch or bad_epochs > epoch:
        raise CheckpointError(
            f"{path}: best_epoch ({best_epoch}) and bad_epochs ({bad_epochs}) must not exceed the "
            f"{epoch} completed epochs; the file is corrupted"
        )


def _check_optimizer(opt: Any, model: Model, path: Path) -> None:
    """An optimiser record must fit the model: param groups over the model's trainable
    parameters (each once), per-parameter state tensors of the parameter's shape."""
    if opt is None:
        return
    bad = f"{path}: the optimiser state is corrupted"
    if not isinstance(opt, dict) or set(opt) != {"state", "param_groups"}:
        raise CheckpointError(f"{bad} (it must hold exactly 'state' and 'param_groups')")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = opt["param_groups"]
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise CheckpointError(f"{bad} (each param group needs a list of 'params')")
    ids = [i for g in groups for i in g["params"]]
    if sorted(ids) != list(range(len(params))) or not all(type(i) is int for i in ids):
        raise CheckpointError(
            f"{bad}: its param groups cover parameters {sorted(ids)[:6]}..., the model has "
            f"{len(params)} trainable parameters"
        )
    for g in groups:
        lr = g.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise CheckpointError(f"{bad}: a param group's learning rate is {lr!r}, not a finite number >= 0")
    state = opt["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{bad} ('state' must be a record per parameter)")
    for key, entry in state.items():
        if type(key) is not int or not 0 <= key < len(params) or not isinstance(entry, dict):
            raise CheckpointError(f"{bad}: state entry {key!r} names no parameter of the model")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[key].shape:
                raise CheckpointError(
                    f"{bad}: {name} of parameter {key} has shape {tuple(value.shape)}, the "
                    f"parameter {tuple(params[key].shape)}"
                )


def _schedule(record: Any, path: Path) -> dict[str, Any] | None:
    """The plateau schedule's tracker: best validation ELBO, bad epochs, scale (None: no tracker saved)."""
    if record is None:
        return None
    _exact_keys(record, {"best", "bad", "scale"}, set(), "the schedule state", path)
    best, bad, scale = _unflatten(record["best"], {}), record["bad"], record["scale"]
    if not isinstance(best, (int, float)) or isinstance(best, bool) or math.isnan(best):
        raise CheckpointError(f"{path}: the schedule's best validation ELBO is {best!r}; the file is corrupted")
    _int(bad, "the schedule's bad-epoch count", path)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= 1:
        raise CheckpointError(f"{path}: the schedule's scale is {scale!r}, not in [0, 1]; the file is corrupted")
    return {"best": float(best), "bad": bad, "scale": float(scale)}


def load_trainer(path: str | os.PathLike, model: Model) -> TrainerState:
    """Restore ``model``'s weights and return the ``TrainerState`` to pass to ``fit(resume=...)``."""
    path = Path(path)
    tensors, meta = read_tensors(path)
    _exact_keys(
        meta,
        {"skeleton", "counters", "history", "format_version", "sha256"},
        {"vaekit_version", "spec"},
        "the header",
        path,
    )
    skeleton = _exact_keys(meta["skeleton"], _SKELETON, set(), "the tensor skeleton", path)
    counters = _exact_keys(meta["counters"], _COUNTERS, {"schedule"}, "the counters", path)
    _check_counters(counters, meta["history"], path)
    if "spec" in meta and getattr(model, "spec", None) is not None:
        saved = _spec_from_record(meta["spec"], path)
        if saved != model.spec:
            diff = [k for k in saved.to_dict() if saved.to_dict()[k] != model.spec.to_dict().get(k)]
            raise CheckpointError(
                f"{path} was written for a different model (spec differs in {', '.join(diff)}); "
                "the run's config.json and its trainer state disagree"
            )
    try:
        weights = _unflatten(skeleton["model"], tensors)
        optimizer = _unflatten(skeleton["optimizer"], tensors)
        _check_optimizer(optimizer, model, path)
        rng = _unflatten(skeleton["rng"], tensors)
        if (
            not isinstance(rng, dict)
            or not {"torch", "shuffle"} <= set(rng)
            or not all(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 for v in rng.values())
        ):
            raise CheckpointError(
                f"{path}: the random-number state is corrupted (it needs 'torch' and 'shuffle' byte tensors)"
            )
        model.load_state_dict(weights)
        return TrainerState(
            epoch=counters["epoch"],
            step=counters["step"],
            history=History(meta["history"]),
            optimizer=optimizer,
            rng=rng,
            best_val=float(_unflatten(counters["best_val"], {})),
            best_epoch=counters["best_epoch"],
            bad_epochs=counters["bad_epochs"],
            best_weights=_unflatten(skeleton["best_weights"], tensors),
            stopped_early=counters["stopped_early"],
            schedule=_schedule(counters.get("schedule"), path),
            saved_to=f"{path} (epoch {int(counters['epoch'])})",
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a usable trainer checkpoint ({type(err).__name__}: {_one_line(err)})"
        ) from None


_clock = time.perf_counter  # the checkpoints' own clock (a test replaces it)


class RunCheckpointer:
    """Training callback: after every ``every`` epochs (and the last), write the run folder's
    model, trainer state and history. Each file is atomic; ``trainer.safetensors`` alone is a
    complete resume point, and it alone is fsynced before the last epoch: model.safetensors and
    history.jsonl survive a crash of the process as they are, and the next checkpoint or the end of
    the run (or of its resume) rewrites them. One fsync per epoch, not three: an fsync takes about 1 ms on an
    idle disk and 10 ms or more on a busy one, next to epochs of tens of milliseconds.

    ``share`` (e.g. 0.05) bounds the time spent writing to that share of the training time: a due
    checkpoint is skipped while less than ``last write's seconds / share`` has passed since the last
    one ended. Epochs much longer than a write are all checkpointed as before; a run of 50 ms epochs
    and 20 ms writes keeps one every ~0.4 s instead of every epoch, so a killed run loses at most
    that much more work (its resume is exact from whichever checkpoint it finds). The first and the
    last epoch are always written. ``None``: every due epoch."""

    def __init__(
        self, run_dir: str | os.PathLike, every: int = 1, total_epochs: int | None = None, share: float | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.every = max(1, int(every))
        self.total_epochs = total_epochs
        if share is not None and not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self.written = 0  # checkpoints written by this callback
        self._last_end: float | None = None
        self._last_cost = 0.0

    def __call__(self, model: Model, state: TrainerState) -> None:
        last = state.stopped_early or (self.total_epochs is not None and state.epoch >= self.total_epochs)
        if state.epoch % self.every and not last:
            return
        now = _clock()
        if not last and self.share is not None and self._last_end is not None:
            if now - self._last_end < self._last_cost / self.share:
                return
        save_trainer(self.run_dir / TRAINER_FILE, model, state)
        save(model, self.run_dir / MODEL_FILE, durable=last)
        write_history(self.run_dir / HISTORY_FILE, state.history, durable=last)
        self._last_end = _clock()
        self._last_cost = self._last_end - now
        self.written += 1
        state.saved_to = f"{self.run_dir / TRAINER_FILE} (epoch {state.epoch})"
