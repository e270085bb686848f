"""The run layer: ``RunConfig`` settings -> a run folder (``RunFolder``), the train/resume
pipeline, and opening a trained run for the other commands.

``folder`` creates, reads and writes run folders (nothing else does); ``pipeline`` trains and
resumes; ``data`` loads a run's split and feeds new data through its preprocessing; ``metrics``
computes the final numbers.
"""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from .covariates import COVARIATES_FILE, Covariates
from .data import (
    Run,
    bernoulli_draw,
    check_condition_file,
    class_labels,
    conditions,
    format_output,
    load_splits,
    open_run,
    part_conditions,
    read_input,
    read_schema,
    training_covariates,
)
from .folder import METRICS_FILE, PREPROCESSING_FILE, RunFolder, RunFolderBusy
from .metrics import FINAL_SAMPLES, final_metrics
from .pipeline import TrainResult, prepare, resume, torch_threads, train

# every user setting's default, by its settings name (from the RunConfig fields)
DEFAULTS: dict[str, Any] = RunConfig.flat_defaults()


def normalise_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Flat settings checked and completed with defaults (a ``RunConfig`` keeps them typed)."""
    config = RunConfig.from_settings(settings)
    flat = {**DEFAULTS, **{str(k).replace("-", "_"): v for k, v in settings.items()}}
    flat.update(
        {
            "data": config.data.source,
            "hidden": config.model.hidden,
            "channels": config.model.channels,
            "binarize": config.data.binarize,
        }
    )
    return flat


def data_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The data section of config.json for flat settings."""
    return RunConfig.from_settings({k: v for k, v in settings.items() if k in DEFAULTS}).data.to_dict()


__all__ = [
    "DEFAULTS",
    "FINAL_SAMPLES",
    "COVARIATES_FILE",
    "Covariates",
    "check_condition_file",
    "class_labels",
    "conditions",
    "part_conditions",
    "training_covariates",
    "METRICS_FILE",
    "PREPROCESSING_FILE",
    "Run",
    "RunConfig",
    "RunFolder",
    "RunFolderBusy",
    "TrainResult",
    "bernoulli_draw",
    "data_config",
    "final_metrics",
    "format_output",
    "load_splits",
    "normalise_settings",
    "open_run",
    "prepare",
    "read_input",
    "read_schema",
    "resume",
    "torch_threads",
    "train",
]
