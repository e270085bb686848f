"""vaekit: variational autoencoders with the math exactly right."""
__version__ = "0.1.0"

from . import likelihoods, nets, objectives, priors  # noqa: E402
from .model import Model  # noqa: E402
from .objectives import ELBOTerms, elbo, iwae_bound, log_marginal  # noqa: E402
from .priors import StandardNormal  # noqa: E402
from .spec import ModelSpec, build_model  # noqa: E402
from .train import History, TrainConfig, fit  # noqa: E402
from .checkpoint import load, save  # noqa: E402
from . import data as datasets  # noqa: E402
from .errors import CheckpointError, DataError, TrainingError, VaekitError  # noqa: E402
from .evaluate import Evaluation, GapConfig, evaluate  # noqa: E402
from .estimator import VAE, VAEOutlierDetector  # noqa: E402
from .tabular import column_log_likelihoods, impute  # noqa: E402

__all__ = [
    "CheckpointError",
    "DataError",
    "ELBOTerms",
    "Evaluation",
    "GapConfig",
    "History",
    "Model",
    "ModelSpec",
    "StandardNormal",
    "TrainConfig",
    "TrainingError",
    "VAE",
    "VAEOutlierDetector",
    "VaekitError",
    "build_model",
    "column_log_likelihoods",
    "datasets",
    "elbo",
    "evaluate",
    "fit",
    "impute",
    "iwae_bound",
    "likelihoods",
    "load",
    "log_marginal",
    "nets",
    "objectives",
    "priors",
    "save",
]
