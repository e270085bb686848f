"""vaekit: variational autoencoders with the math exactly right.

``import vaekit`` is light: the names below are loaded from their modules on first use (PEP 562),
so the command line and scripts that need one piece do not pay for torch and scikit-learn up front.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__ as __version__

# public name -> (module, attribute); attribute None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "likelihoods": (".likelihoods", None),
    "nets": (".nets", None),
    "objectives": (".objectives", None),
    "priors": (".priors", None),
    "datasets": (".data", None),
    "Model": (".model", "Model"),
    "ELBOTerms": (".objectives", "ELBOTerms"),
    "elbo": (".objectives", "elbo"),
    "iwae_bound": (".objectives", "iwae_bound"),
    "log_marginal": (".objectives", "log_marginal"),
    "StandardNormal": (".priors", "StandardNormal"),
    "ModelSpec": (".config", "ModelSpec"),
    "DataConfig": (".config", "DataConfig"),
    "RunConfig": (".config", "RunConfig"),
    "TrainConfig": (".config", "TrainConfig"),
    "build_model": (".spec", "build_model"),
    "History": (".train", "History"),
    "fit": (".train", "fit"),
    "load": (".checkpoint", "load"),
    "save": (".checkpoint", "save"),
    "CheckpointError": (".errors", "CheckpointError"),
    "DataError": (".errors", "DataError"),
    "TrainingError": (".errors", "TrainingError"),
    "VaekitError": (".errors", "VaekitError"),
    "Evaluation": (".evaluation", "Evaluation"),
    "GapConfig": (".evaluation", "GapConfig"),
    "evaluate": (".evaluation", "evaluate"),
    "VAE": (".estimator", "VAE"),
    "VAEOutlierDetector": (".estimator", "VAEOutlierDetector"),
    "column_log_likelihoods": (".tabular", "column_log_likelihoods"),
    "impute": (".tabular", "impute"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
