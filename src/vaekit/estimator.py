"""scikit-learn estimators: ``VAE`` (a transformer) and ``VAEOutlierDetector``.

They follow scikit-learn's conventions: ``__init__`` only stores hyper-parameters, ``fit``
validates the data, builds ``model_`` (a ``vaekit.Model``) and trains it with ``vaekit.fit``,
fitted state ends in ``_``, and ``clone``, ``Pipeline``, ``GridSearchCV`` and pickling work.

Numerics: training runs in float32; after ``fit`` the model is kept in float64, so
``transform`` and the scores of one example do not depend on which other examples share its
batch (float32 matrix products differ in the last bits with the batch size). The Monte Carlo
scores use common random numbers fixed at fit time (see ``vaekit.anomaly``), so they are
deterministic for a fitted estimator.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from . import anomaly, likelihoods, tracking
from .batches import is_dataset, materialize
from .config import DataConfig, ModelSpec, RunConfig, SettingError, TrainConfig
from .runs import RunFolder, open_run
from .spec import build_model, resolved
from .train import History, resolve_device
from .train import fit as train_model

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6

    def _validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


_FLOATS = [np.float64, np.float32]
_INFERENCE_BATCH = 4096


def _seed(random_state) -> int:
    """An int seed for torch from scikit-learn's ``random_state`` (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


class VAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A variational autoencoder as a scikit-learn transformer.

    ``transform`` gives the posterior means E[z|x] (the learned representation),
    ``inverse_transform`` the decoded means E[x|z], ``sample`` new examples,
    ``score_samples`` the importance-sampled log p(x) of each example in nats (like
    ``PCA.score_samples``) and ``score`` their mean.

    Parameters
    ----------
    latent_dim : int, size of z.
    hidden : tuple of int, hidden layer sizes of the encoder; the decoder mirrors them.
        ``()`` gives linear maps.
    activation : str, hidden-layer activation (``vaekit.nets.ACTIVATIONS``).
    likelihood : str or dict, the observation model p(x|z): ``"auto"`` chooses from the
        training data (binary -> bernoulli, a few non-negative integer levels ->
        categorical, values in [0, 1] -> continuous_bernoulli, anything else -> gaussian
        with a learned scale per feature), or a name from ``vaekit.likelihoods.REGISTRY``,
        or a config dict such as ``{"name": "gaussian", "scale": 0.1}``.
    scale : float or None, fixed standard deviation of a Gaussian likelihood.
    epochs, batch_size, lr, beta, warmup : training settings (``vaekit.TrainConfig``);
        ``beta`` weights the KL term, ``warmup`` is epochs of linear KL warm-up.
    optimizer, weight_decay : ``"adam"`` (L2 weight decay) or ``"adamw"`` (decoupled weight decay).
    lr_schedule, lr_min, lr_step, lr_factor, lr_patience : learning-rate schedule over epochs,
        ``"constant"``, ``"cosine"``, ``"step"`` or ``"plateau"`` (on the validation ELBO: needs
        ``validation_fraction > 0``); see ``vaekit.TrainConfig``.
    n_iw_samples : int, importance samples K for ``score_samples`` / ``score``.
    validation_fraction : float in [0, 1), share of the rows held out to track the
        validation ELBO in ``history_`` (needed by ``early_stopping``).
    early_stopping : int or None, patience in epochs on the validation ELBO.
    random_state : None, int or RandomState: initial weights, shuffling, sampling noise.
    device : ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ...
    verbose : bool, show a progress bar while training.
    threads : int, CPU threads for training; 0 chooses automatically (``vaekit.TrainConfig.threads``).
    log : None, ``"tensorboard"``, ``"mlflow"``, a ``vaekit.tracking`` logger (``TensorBoard(dir)``,
        ``MLflow(uri)``) or any ``fit`` callback, or a list of them: experiment tracking while training.
    condition : None or ``"y"``. ``"y"``: a conditional VAE (Sohn et al. 2015) on the ``y`` given to
        ``fit(X, y)``: q(z|x, y) and p(x|z, y). A 1-D ``y`` holds class labels (c is one-hot of the
        class); a 2-D ``y`` of shape (n_samples, n_covariates) holds numeric covariates (c is each
        column standardised by the training rows' mean and standard deviation). ``transform``,
        ``inverse_transform``, ``score_samples`` and ``score`` then take ``y`` too, and
        ``sample(n, y=...)`` draws examples under the given class(es) or covariate row(s). None
        (default): unconditional, ``y`` is ignored.
    conditional_prior : bool, with ``condition="y"``: learn p(z|y) instead of N(0, I).

    Attributes
    ----------
    model_ : vaekit.Model (float64, in eval mode). likelihood_ : the chosen likelihood.
    history_ : list of per-epoch dicts (train_elbo, train_log_px_z, train_kl, ...).
    n_features_in_, feature_names_in_ (when fitted on a DataFrame with string columns).
    seed_ : the int seed used for torch (drawn from ``random_state``).
    classes_ : with ``condition="y"`` and labels, the class labels seen in ``fit`` (sorted); c is their index.
    covariate_mean_, covariate_scale_ : with ``condition="y"`` and 2-D covariates, their training
        means and standard deviations (c = (y - mean) / scale).
    """

    # hyper-parameter -> the settings field that owns its default and check (a test keeps the
    # literal defaults of __init__, which scikit-learn needs, equal to the fields' defaults)
    SETTINGS = {
        "latent_dim": (ModelSpec, "latent_dim"),
        "hidden": (ModelSpec, "hidden"),
        "activation": (ModelSpec, "activation"),
        "likelihood": (ModelSpec, "likelihood"),
        "scale": (ModelSpec, "scale"),
        "epochs": (TrainConfig, "epochs"),
        "batch_size": (TrainConfig, "batch_size"),
        "lr": (TrainConfig, "lr"),
        "optimizer": (TrainConfig, "optimizer"),
        "weight_decay": (TrainConfig, "weight_decay"),
        "lr_schedule": (TrainConfig, "lr_schedule"),
        "lr_min": (TrainConfig, "lr_min"),
        "lr_step": (TrainConfig, "lr_step"),
        "lr_factor": (TrainConfig, "lr_factor"),
        "lr_patience": (TrainConfig, "lr_patience"),
        "beta": (TrainConfig, "beta"),
        "warmup": (TrainConfig, "warmup"),
        "early_stopping": (TrainConfig, "early_stopping"),
        "device": (TrainConfig, "device"),
        "threads": (TrainConfig, "threads"),
    }

    def __init__(
        self,
        latent_dim=8,
        *,
        hidden=(128, 128),
        activation="relu",
        likelihood="auto",
        scale=None,
        epochs=100,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        lr_schedule="constant",
        lr_min=0.0,
        lr_step=30,
        lr_factor=0.1,
        lr_patience=5,
        beta=1.0,
        warmup=0.0,
        n_iw_samples=100,
        validation_fraction=0.0,
        early_stopping=None,
        random_state=None,
        device="auto",
        verbose=False,
        threads=0,
        log=None,
        condition=None,
        conditional_prior=False,
    ):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.likelihood = likelihood
        self.scale = scale
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.lr_min = lr_min
        self.lr_step = lr_step
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.beta = beta
        self.warmup = warmup
        self.n_iw_samples = n_iw_samples
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.threads = threads
        self.log = log
        self.condition = condition
        self.conditional_prior = conditional_prior

    # -- scikit-learn metadata ------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"preserves_dtype": ["float64", "float32"]}

    # -- fitting ----------------------------------------------------------------------------
    def _settings(self, seed: int = 0) -> tuple[ModelSpec, TrainConfig]:
        """The hyper-parameters as the checked settings dataclasses (one line on a bad value)."""
        name = type(self).__name__
        try:
            spec = ModelSpec(
                latent_dim=self.latent_dim,
                hidden=self.hidden,
                activation=self.activation,
                likelihood=self.likelihood,
                scale=self.scale,
            )
            config = TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                optimizer=self.optimizer,
                weight_decay=self.weight_decay,
                lr_schedule=self.lr_schedule,
                lr_min=self.lr_min,
                lr_step=self.lr_step,
                lr_factor=self.lr_factor,
                lr_patience=self.lr_patience,
                beta=self.beta,
                warmup=self.warmup,
                early_stopping=self.early_stopping,
                seed=seed,
                device=self.device,
                progress=bool(self.verbose),
                threads=self.threads,
            )
        except SettingError as err:
            raise SettingError(f"{name}: {err}") from None
        if not (_is_int(self.n_iw_samples) and self.n_iw_samples >= 1):
            raise ValueError(f"{name}: n_iw_samples must be an int >= 1, got {self.n_iw_samples!r}")
        if not (isinstance(self.validation_fraction, Real) and 0 <= self.validation_fraction < 1):
            raise ValueError(f"{name}: validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.lr_schedule == "plateau" and not self.validation_fraction > 0:
            raise ValueError(
                f"{name}: lr_schedule='plateau' needs validation data: set validation_fraction > 0 as well"
            )
        if self.early_stopping is not None and not self.validation_fraction > 0:
            raise ValueError(f"{name}: early_stopping needs validation data: set validation_fraction > 0 as well")
        if self.condition not in (None, "y"):
            raise ValueError(
                f"{name}: condition must be None or 'y' (condition on the labels y), got {self.condition!r}"
            )
        if not isinstance(self.conditional_prior, (bool, np.bool_)):
            raise ValueError(f"{name}: conditional_prior must be True or False, got {self.conditional_prior!r}")
        if self.conditional_prior and self.condition is None:
            raise ValueError(f"{name}: conditional_prior=True needs a conditional model: set condition='y'")
        return spec, config

    def _train_config(self, seed: int) -> TrainConfig:
        return self._settings(seed)[1]

    def fit(self, X, y=None):
        """Train a new model on the rows of ``X``; ``y`` is ignored unless ``condition="y"``, where
        the model is conditioned on the class labels ``y``. Returns self.

        ``X`` may also be a ``torch.utils.data.Dataset`` or ``DataLoader`` (an item is an example or
        an (example, label, ...) tuple): its examples are read into memory once, each flattened to
        a row, and trained on like the same array (shuffled by ``random_state``). To stream a large
        Dataset batch by batch, use ``vaekit.fit``."""
        self._settings()
        if is_dataset(X):
            rows = materialize(X)
            X = rows.reshape(rows.shape[0], -1).numpy()
        for attr in ("classes_", "covariate_mean_", "covariate_scale_"):  # a refit forgets the last y
            self.__dict__.pop(attr, None)
        if self.condition == "y" and y is not None and np.ndim(y) == 2:  # covariates (n_samples, n_covariates)
            X = _validate_data(self, X, dtype=_FLOATS)
            cov = check_array(y, dtype=np.float64, input_name="y")
            if cov.shape[0] != X.shape[0]:
                raise ValueError(f"y has {cov.shape[0]} rows of covariates but X has {X.shape[0]} rows")
            self.covariate_mean_ = cov.mean(0)
            sd = cov.std(0)
            self.covariate_scale_ = np.where(sd > 0, sd, 1.0)
            codes = (cov - self.covariate_mean_) / self.covariate_scale_
        elif self.condition == "y":
            if y is None:
                raise ValueError(
                    f"{type(self).__name__}(condition='y') needs y (class labels, or covariates of shape "
                    "(n_samples, n_covariates)): call fit(X, y)"
                )
            X, y = _validate_data(self, X, y, dtype=_FLOATS)
            self.classes_, codes = np.unique(y, return_inverse=True)
            codes = codes.reshape(-1).astype(np.int64)
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__}(condition='y') needs at least two classes in y, got one")
        else:
            X = _validate_data(self, X, dtype=_FLOATS)
            codes = None
        seed = _seed(self.random_state)
        wanted, config = self._settings(seed)
        if codes is not None:
            wanted = dataclasses.replace(
                wanted,
                condition_dim=codes.shape[1] if codes.ndim == 2 else len(self.classes_),
                conditional_prior=bool(self.conditional_prior),
            )
        x = np.asarray(X, dtype=np.float32)
        x_train, x_val = x, None
        c_train, c_val = codes, None
        if self.validation_fraction > 0:
            n_val = int(round(self.validation_fraction * x.shape[0]))
            if n_val < 1 or n_val >= x.shape[0]:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} of {x.shape[0]} rows leaves no validation or no "
                    "training rows; use more data or validation_fraction=0"
                )
            perm = np.random.default_rng(seed).permutation(x.shape[0])
            x_train, x_val = x[perm[n_val:]], x[perm[:n_val]]
            if codes is not None:
                c_train, c_val = codes[perm[n_val:]], codes[perm[:n_val]]
        lik = likelihoods.resolve(wanted.likelihood, x_train, scale=wanted.scale)
        spec = resolved(dataclasses.replace(wanted, data_shape=(x.shape[1],)), lik)
        device = resolve_device(config.device)
        with _forked_rng(device):
            torch.manual_seed(seed)  # the same random_state gives the same initial weights
            model = build_model(spec)
            trackers = tracking.callbacks(self.log)
            conditions = {} if codes is None else {"condition": c_train, "val_condition": c_val}
            history = train_model(model, x_train, x_val, config, callbacks=trackers, **conditions).history
            tracking.finish(
                trackers, params=self.get_params(deep=False), metrics=tracking.scalars(history[-1]) if history else None
            )
        self._set_fitted(
            model,
            History(dict(row) for row in history),
            seed,
            {"train": len(x_train), "val": 0 if x_val is None else len(x_val)},
        )
        return self

    def _set_fitted(self, model, history: History, seed: int, sizes: dict[str, int]) -> None:
        self.model_ = model.to(torch.float64).eval()
        self.likelihood_ = self.model_.likelihood
        self.history_ = history
        self.seed_ = int(seed)
        self._n_features_out = int(self.model_.latent_dim)
        self._sizes = dict(sizes)

    # -- the data <-> tensor edge --------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self)
        return _validate_data(self, X, dtype=_FLOATS, reset=False)

    def _map(self, fn, a: np.ndarray, in_shape: tuple[int, ...], c: np.ndarray | None = None) -> np.ndarray:
        """Apply ``fn`` (a float64 tensor batch -> tensor; with ``c``, fn(batch, its conditions)) in
        batches; float64 numpy out."""
        out = []
        with torch.no_grad():
            for start in range(0, a.shape[0], _INFERENCE_BATCH):
                t = torch.as_tensor(
                    np.array(a[start : start + _INFERENCE_BATCH], dtype=np.float64), device=self._device()
                )
                t = t.reshape(-1, *in_shape)
                if c is None:
                    part = fn(t)
                else:
                    part = fn(t, torch.as_tensor(c[start : start + _INFERENCE_BATCH], device=self._device()))
                out.append(part.reshape(t.shape[0], -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    @property
    def _conditional(self) -> bool:
        return bool(getattr(self.model_, "condition_dim", 0))

    def _codes(self, y, n: int | None, what: str) -> np.ndarray | None:
        """The conditions c of ``y`` for a conditional model, None for an unconditional one (y
        ignored): the class indices of labels (one per row, or one for all when ``n`` is given and y
        is a single label), or standardised covariates (n, n_covariates) (a single row: for all)."""
        if not self._conditional:
            return None
        if y is None:
            raise ValueError(f"this {type(self).__name__} is conditional on y (condition='y'): {what} needs y")
        if hasattr(self, "covariate_mean_"):
            return self._covariates(y, n, what)
        y = np.asarray(y)
        if y.ndim == 0 and n is not None:  # one label for every row
            y = np.repeat(y.reshape(1), n)
        y = y.reshape(-1)
        if n is not None and len(y) != n:
            raise ValueError(f"{what}: got {len(y)} labels y for {n} rows")
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        unknown = self.classes_[codes] != y
        if np.any(unknown):
            raise ValueError(
                f"{what}: label {np.asarray(y[unknown][0]).item()!r} was not seen in fit; known classes: "
                + ", ".join(str(v) for v in self.classes_)
            )
        return codes.astype(np.int64)

    def _covariates(self, y, n: int | None, what: str) -> np.ndarray:
        k = len(self.covariate_mean_)
        cov = np.asarray(y, dtype=np.float64)
        if cov.ndim == 1 and cov.shape[0] == k and n is not None:  # one row of covariates for every row
            cov = np.repeat(cov.reshape(1, k), n, axis=0)
        if cov.ndim != 2 or cov.shape[1] != k:
            raise ValueError(f"{what}: y must hold covariates of shape (n_samples, {k}), got shape {cov.shape}")
        if n is not None and cov.shape[0] != n:
            raise ValueError(f"{what}: got {cov.shape[0]} rows of covariates y for {n} rows")
        if not np.all(np.isfinite(cov)):
            raise ValueError(f"{what}: the covariates y hold NaN or infinite values; covariates must be complete")
        return (cov - self.covariate_mean_) / self.covariate_scale_

    @property
    def _data_shape(self) -> tuple[int, ...]:
        return tuple(self.model_.data_shape)

    def _noise(self, n: int) -> torch.Tensor:
        return anomaly.common_noise(n, self.model_.latent_dim, self.seed_ + 1, self._device(), torch.float64)

    # -- uses -----------------------------------------------------------------------------
    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X, y)`` then ``transform(X, y)`` (a conditional model encodes under y)."""
        return self.fit(X, y, **fit_params).transform(X, y)

    def transform(self, X, y=None):
        """Posterior means E[z|x] (conditional: E[z|x, y]), shape (n_samples, latent_dim), in X's float dtype."""
        X = self._check_X(X)
        c = self._codes(y, X.shape[0], "transform")
        fn = self.model_.encode if c is None else (lambda t, cb: self.model_.encode(t, c=cb))
        return self._map(fn, X, self._data_shape, c).astype(X.dtype, copy=False)

    def inverse_transform(self, X, y=None):
        """Decoded means E[x|z] (conditional: E[x|z, y]) for latent codes ``X`` (n_samples, latent_dim)."""
        check_is_fitted(self)
        Z = check_array(X, dtype=_FLOATS)
        if Z.shape[1] != self.model_.latent_dim:
            raise ValueError(
                f"X has {Z.shape[1]} latent features, but {type(self).__name__} has latent_dim={self.model_.latent_dim}"
            )
        c = self._codes(y, Z.shape[0], "inverse_transform")
        fn = self.model_.decode if c is None else (lambda t, cb: self.model_.decode(t, c=cb))
        return self._map(fn, Z, (self.model_.latent_dim,), c).astype(Z.dtype, copy=False)

    def sample(self, n_samples=1, *, y=None, draw=False, random_state=None):
        """``n_samples`` new examples: z ~ p(z), then the decoded mean E[x|z] (or, with
        ``draw=True``, a draw x ~ p(x|z)). Shape (n_samples, n_features_in_), float64.
        A conditional model (``condition="y"``) needs ``y``: one class label for all samples or
        one per sample; z ~ p(z|y) and x from p(x|z, y)."""
        check_is_fitted(self)
        if not _is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        c = self._codes(y, int(n_samples), "sample")
        if c is None and y is not None:
            raise ValueError(
                f"sample(y=...) needs a conditional {type(self).__name__} (condition='y'); this one is not"
            )
        with _forked_rng(self._device()):
            torch.manual_seed(_seed(random_state))
            if c is None:
                x = self.model_.sample(int(n_samples), draw=draw)
            else:
                x = self.model_.sample(int(n_samples), draw=draw, c=torch.as_tensor(c, device=self._device()))
        return x.reshape(int(n_samples), -1).cpu().numpy()

    def _scores(self, X, kind: str, n_samples: int, y=None) -> np.ndarray:
        X = self._check_X(X)
        c = self._codes(y, X.shape[0], "score_samples")
        noise = None if kind == "kl" else self._noise(n_samples)
        if c is None:
            fn = lambda t: anomaly.score(self.model_, t, kind, n_samples, noise)  # noqa: E731
        else:
            fn = lambda t, cb: anomaly.score(self.model_, t, kind, n_samples, noise, c=cb)  # noqa: E731
        return self._map(fn, X, self._data_shape, c).reshape(-1)

    def score_samples(self, X, y=None):
        """Importance-sampled log p(x) per example in nats (K = ``n_iw_samples``), float64.
        A lower bound in expectation that tightens as K grows (Burda et al. 2016). A conditional
        model: log p(x|y), the labels ``y`` needed."""
        return self._scores(X, "logpx", int(self.n_iw_samples), y)

    def score(self, X, y=None):
        """Mean importance-sampled log p(x) over the rows of ``X``, nats per example (a conditional
        model: log p(x|y); otherwise y is ignored)."""
        return float(np.mean(self.score_samples(X, y if self._conditional_fitted() else None)))

    def _conditional_fitted(self) -> bool:
        check_is_fitted(self)
        return self._conditional

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write a run folder (config.json, model.safetensors, history.jsonl) like the
        CLI's, so ``vaekit encode/score/... RUN --data FILE`` and ``VAE.load`` open it.
        The training rows are not stored: commands must be given ``--data``."""
        check_is_fitted(self)
        params = self.get_params(deep=False)
        params["random_state"] = (
            params["random_state"] if _is_int(params["random_state"]) or params["random_state"] is None else None
        )
        spec = self.model_.spec
        names = getattr(self, "feature_names_in_", None)
        config = RunConfig(
            data=DataConfig(source="array", val_fraction=float(self.validation_fraction), test_fraction=0.0),
            model=spec,
            train=self._train_config(self.seed_),
        )
        facts = {
            "name": "array",
            "sizes": {**getattr(self, "_sizes", {}), "test": 0},
            "n_features": int(self.n_features_in_),
            "image_shape": None,
            "feature_names": None if names is None else [str(n) for n in names],
        }
        model32 = copy.deepcopy(self.model_).to(device="cpu", dtype=torch.float32)
        model32.spec = spec
        saved = {"class": type(self).__name__, "params": params, "seed": self.seed_}
        if hasattr(self, "covariate_mean_"):
            saved["covariates"] = {
                "mean": np.asarray(self.covariate_mean_).tolist(),
                "scale": np.asarray(self.covariate_scale_).tolist(),
            }
        elif self._conditional:
            saved["classes"] = np.asarray(self.classes_).tolist()
        folder = RunFolder.create(path)  # exclusive: refuses a folder that exists and is not empty
        with folder.lock():
            folder.write_config(config, facts, {"estimator": saved})
            folder.save_model(model32)
            folder.write_history(self.history_)
        return folder.path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> VAE:
        """A fitted ``VAE`` from a run folder written by ``save`` or by ``vaekit train``
        (then the hyper-parameters come from the run's settings)."""
        run = open_run(path)
        config = run.config
        saved = config.get("estimator")
        if saved is not None:
            params = dict(saved["params"])
            params["hidden"] = tuple(params.get("hidden", ()))
            seed = int(saved.get("seed", 0))
        else:  # a CLI run: the hyper-parameters are the run's settings
            settings = RunFolder(path).run_config()
            params = {
                name: getattr(settings.model if owner is ModelSpec else settings.train, attr)
                for name, (owner, attr) in cls.SETTINGS.items()
            }
            params["scale"] = None  # already part of the resolved likelihood config
            params["random_state"] = seed = settings.train.seed
            if settings.model.condition_dim:  # trained with --condition label: y is the class label 0..K-1
                params["condition"] = "y"
                params["conditional_prior"] = settings.model.conditional_prior
        if device is not None:
            params["device"] = device
        known = cls().get_params(deep=False)
        est = cls(**{k: v for k, v in params.items() if k in known})
        model = run.model.to(resolve_device(est.device))
        sizes = config.get("data", {}).get("sizes", {})
        est._set_fitted(model, History(run.history), seed, {k: sizes.get(k, 0) for k in ("train", "val")})
        est.n_features_in_ = int(math.prod(est._data_shape))
        names = config.get("data", {}).get("feature_names")
        if names:
            est.feature_names_in_ = np.asarray(names, dtype=object)
        covariates = (saved or {}).get("covariates")
        if covariates is None and run.covariates is not None:  # --condition-columns: y is the encoded c itself
            zeros = [0.0] * est.model_.condition_dim
            covariates = {"mean": zeros, "scale": [1.0] * len(zeros)}
        if covariates is not None:
            est.covariate_mean_ = np.asarray(covariates["mean"], dtype=np.float64)
            est.covariate_scale_ = np.asarray(covariates["scale"], dtype=np.float64)
        elif est._conditional:
            classes = (saved or {}).get("classes")
            est.classes_ = np.asarray(classes) if classes is not None else np.arange(est.model_.condition_dim)
        return est

    # -- pickling ------------------------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.get("model_")
        if model is not None and next(model.parameters()).device.type != "cpu":
            # so that a model trained on a GPU unpickles on a machine without one
            cpu = copy.deepcopy(model).cpu()
            state["model_"] = cpu
            state["likelihood_"] = cpu.likelihood
        return state


class VAEOutlierDetector(OutlierMixin, BaseEstimator):
    """Anomaly detection with a VAE, in the style of scikit-learn's ``IsolationForest``.

    ``fit`` trains a clone of ``vae`` (default ``VAE()``) on the (mostly normal) rows of X.
    ``score_samples`` is higher for more normal rows: ``score_type="logpx"`` the importance-sampled
    log p(x), ``"recon"`` the reconstruction log-probability E_q[log p(x|z)] (An & Cho 2015),
    ``"kl"`` minus KL(q(z|x) || p(z)); all in nats, with ``n_samples`` Monte Carlo draws
    (K or L; unused by ``"kl"``). ``decision_function = score_samples - offset_`` is negative
    for outliers and ``predict`` returns -1 for outliers, 1 for inliers.

    ``contamination``: a float in (0, 0.5] sets ``offset_`` to that quantile of the training
    scores, so that share of the training rows is flagged; ``"auto"`` uses Tukey's lower fence
    of the training scores, Q1 - 1.5 (Q3 - Q1), which fixes no share in advance.

    Hyper-parameters of the VAE are set on it (``VAEOutlierDetector(VAE(latent_dim=8))``) and
    searched as ``vae__latent_dim`` in ``GridSearchCV``. The fitted VAE is ``vae_``.
    ``random_state``, when not None, replaces the VAE's own.
    """

    def __init__(self, vae=None, *, score_type="logpx", n_samples=100, contamination="auto", random_state=None):
        self.vae = vae
        self.score_type = score_type
        self.n_samples = n_samples
        self.contamination = contamination
        self.random_state = random_state

    def _check_params(self) -> None:
        name = type(self).__name__
        if self.vae is not None and not isinstance(self.vae, VAE):
            raise TypeError(f"{name}: vae must be a vaekit.VAE or None, got {type(self.vae).__name__}")
        if self.score_type not in anomaly.SCORES:
            raise ValueError(f"{name}: score_type must be one of {', '.join(anomaly.SCORES)}, got {self.score_type!r}")
        if not _is_int(self.n_samples) or self.n_samples < 1:
            raise ValueError(f"{name}: n_samples must be an int >= 1, got {self.n_samples!r}")
        c = self.contamination
        if not (c == "auto" or (isinstance(c, Real) and not isinstance(c, bool) and 0 < c <= 0.5)):
            raise ValueError(f"{name}: contamination must be 'auto' or a number in (0, 0.5], got {c!r}")

    def fit(self, X, y=None):
        """Train the VAE on X and set the threshold ``offset_`` from the training scores."""
        self._check_params()
        X = _validate_data(self, X, dtype=_FLOATS)
        vae = clone(self.vae if self.vae is not None else VAE())
        if self.random_state is not None:
            vae.set_params(random_state=self.random_state)
        self.vae_ = vae.fit(X)
        scores = self.vae_._scores(X, self.score_type, int(self.n_samples))
        if self.contamination == "auto":
            q1, q3 = np.percentile(scores, [25, 75])
            self.offset_ = float(q1 - 1.5 * (q3 - q1))
        else:
            self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))
        return self

    def score_samples(self, X):
        """Per-row score in nats, higher = more normal (see the class docstring), float64."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=_FLOATS, reset=False)
        return self.vae_._scores(X, self.score_type, int(self.n_samples))

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """-1 for outliers, 1 for inliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1).astype(int)


def _forked_rng(device: torch.device):
    """A context with its own torch RNG state, restoring the caller's afterwards, so fitting
    and sampling neither depend on nor disturb the global torch generator."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    return torch.random.fork_rng(devices=devices)
