"""Missing values of a table by MIWAE (Mattei & Frellsen, ICML 2019).

Training. MIWAE maximises the importance-weighted bound on the likelihood of the *observed*
entries only,

    log p(x_obs) >= E[ log (1/K) sum_k p(x_obs | z_k) p(z_k) / q(z_k | x_obs) ],  z_k ~ q(z | x_obs),

with an encoder that sees the zero-filled row and its mask. vaekit already trains exactly
this: a table's ``Mixed`` likelihood leaves missing cells out of log p(x | z) (so
p(x | z) there *is* p(x_obs | z)), the ``table`` network's encoder (``nets.MissingAware``)
sees the values with NaN replaced by 0 beside the 0/1 mask, and ``fit(..., iw_samples=K)``
maximises logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - log K over those terms
(``objectives.loss``). So MIWAE training is ``vaekit train --iw-samples K`` on a table; this
module adds the two ways of imputing that the paper derives from the same weights.

Imputation. With z_k ~ q(z | x_obs) and self-normalised weights
w_k = p(x_obs | z_k) p(z_k) / q(z_k | x_obs) / sum_j (...),

- single imputation: E[x_miss | x_obs] ~= sum_k w_k E[x_miss | z_k] (numeric: the weighted mean;
  binary and categorical: the weighted probabilities, turned into the most probable value);
- multiple imputation by sampling importance resampling: draw k ~ Categorical(w), then
  x_miss ~ p(x_miss | z_k); each of the M imputations uses its own K draws.

Observed cells are never recomputed: the completed table is the input table with only its
missing cells replaced (``fill_frame``), so observed values, dtypes and categories are the
ones that were read.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .batches import inference, iterate
from .model import Model

DEFAULT_K = (
    50  # importance samples per row (self-normalised weights: consistent as K grows; the paper tests with 10 000)
)


def _check_k(k: int, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {k!r}")
    return int(k)


def _log_weights(model: Model, xb: torch.Tensor, k: int, cb=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z (k, B, H), log w (k, B)) for z_k ~ q(z | x_obs): log p(x_obs|z) + log p(z) - log q(z|x_obs)
    (a conditional model: given its conditions ``cb`` (B, condition_dim), all three terms given c)."""
    if cb is None:
        qz = model.q_z(xb)
        z = qz.sample((k,))  # (k, B, H)
        log_w = model.log_px_z(z, xb) + model.p_z().log_prob(z) - qz.log_prob(z)  # (k, B)
        return z, log_w
    cb = model.condition(cb, xb.shape[0])
    qz = model.q_z(xb, cb)
    z = qz.sample((k,))
    log_w = model.log_px_z(z, xb, cb) + model.p_z(cb).log_prob(z) - qz.log_prob(z)
    return z, log_w


def _batches(x, c, batch_size: int, device):
    """Batches of ``x`` on ``device``, each with its rows of the conditions ``c`` (or None)."""
    start = 0
    for xb in iterate(x, batch_size, device):
        cb = None if c is None else torch.as_tensor(c[start : start + xb.shape[0]]).to(device)
        start += xb.shape[0]
        yield xb, cb


@contextlib.contextmanager
def _seeded(seed: int | None):
    """The global RNG forked (CPU and the current CUDA device) and seeded when ``seed`` is given:
    the caller's random stream is the same afterwards."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def conditional_mean(
    model: Model, x, k: int = DEFAULT_K, batch_size: int = 256, seed: int | None = 0, c=None
) -> torch.Tensor:
    """``x`` (N, D) with every NaN replaced by the importance-weighted E[x_miss | x_obs]
    (``k`` draws from q per row); observed entries are returned untouched. For a categorical
    block the filled values are the weighted category probabilities, for a binary column P(1).
    ``c``: a conditional model's conditions, one per row (then E[x_miss | x_obs, c])."""
    k = _check_k(k)
    device = next(model.parameters()).device
    out = []
    with _seeded(seed), inference(model):
        for xb, cb in _batches(x, c, batch_size, device):
            z, log_w = _log_weights(model, xb, k, cb)
            w = torch.softmax(log_w.double(), 0).to(xb.dtype)  # (k, B)
            means = model.likelihood.mean(model.decode_params(z) if cb is None else model.decode_params(z, cb))
            filled = (w.unsqueeze(-1) * means).sum(0)
            out.append(torch.where(torch.isnan(xb), filled, xb))
    return torch.cat(out) if out else torch.empty(0, *model.data_shape, device=device)


def multiple_imputations(
    model: Model, x, m: int, k: int = DEFAULT_K, batch_size: int = 256, seed: int | None = 0, c=None
) -> torch.Tensor:
    """(m, N, D): ``m`` completed copies of ``x`` by sampling importance resampling. For each
    copy and row: K draws z_k ~ q(z | x_obs), one index drawn with probability w_k, then
    x_miss ~ p(x_miss | z_index). Observed entries are untouched in every copy. ``c``: a
    conditional model's conditions, one per row (every draw given c)."""
    m, k = _check_k(m, "the number of imputations"), _check_k(k)
    device = next(model.parameters()).device
    copies = []
    with _seeded(seed), inference(model):
        for _ in range(m):
            out = []
            for xb, cb in _batches(x, c, batch_size, device):
                z, log_w = _log_weights(model, xb, k, cb)
                pick = torch.distributions.Categorical(logits=log_w.T.double()).sample()  # (B,)
                z_pick = z[pick, torch.arange(xb.shape[0], device=device)]  # (B, H)
                px = model.p_x(z_pick) if cb is None else model.p_x(z_pick, model.condition(cb, xb.shape[0]))
                draw = px.sample().to(xb.dtype)
                out.append(torch.where(torch.isnan(xb), draw, xb))
            copies.append(torch.cat(out) if out else torch.empty(0, *model.data_shape, device=device))
    return torch.stack(copies)


# -- tables -------------------------------------------------------------------------------
def fill_frame(schema, frame, x_filled):
    """The table ``frame`` with its missing cells (and only those) taken from the model-space
    rows ``x_filled`` through ``schema.inverse``. Observed cells keep the exact objects that were
    read; a column that pandas read as float only because of its gaps (whole numbers, now
    complete) becomes int64 again. Columns the schema does not model are left as they are."""
    pd = _pandas()
    decoded = schema.inverse(np.asarray(x_filled))
    out = frame.copy()
    for c in schema.columns:
        name = c["name"]
        original = frame[name]
        missing = original.isna().to_numpy()
        if not missing.any():
            continue
        fill = pd.Series(list(decoded[name]), index=original.index, dtype=object)
        values = original.astype(object).where(~missing, fill)
        out[name] = _like(values, original)
    return out


def _like(values, original):
    """``values`` (object) in ``original``'s dtype where that holds them exactly."""
    pd = _pandas()
    observed = original.dropna()
    if pd.api.types.is_float_dtype(original.dtype):
        as_float = pd.to_numeric(values, errors="coerce")
        if (
            as_float.notna().all()
            and len(observed)
            and (observed == np.round(observed)).all()
            and (as_float == np.round(as_float)).all()
        ):
            return as_float.astype("int64")
        if as_float.notna().sum() == values.notna().sum():
            return as_float.astype(original.dtype)
        return values
    if pd.api.types.is_integer_dtype(original.dtype) or pd.api.types.is_bool_dtype(original.dtype):
        try:
            return values.astype(original.dtype)
        except (TypeError, ValueError):
            return values
    try:
        return values.astype(original.dtype)
    except (TypeError, ValueError):
        return values


def _pandas():
    import pandas

    return pandas


def impute_run(run, frame, *, multiple: int | None = None, k: int = DEFAULT_K, seed: int = 0):
    """Complete ``frame`` (a table with the run's columns) with a trained run's model: one
    completed DataFrame (importance-weighted conditional mean) or, with ``multiple=M``, a list
    of M (sampling importance resampling)."""
    if run.schema is None:
        raise ValueError("imputation needs a run trained on a table (.csv, .tsv or .parquet)")
    x, _ = run.schema.transform(frame, "the table")
    if multiple is None:
        filled = conditional_mean(run.model, torch.as_tensor(x), k=k, seed=seed).cpu().numpy()
        return fill_frame(run.schema, frame, filled)
    copies = multiple_imputations(run.model, torch.as_tensor(x), multiple, k=k, seed=seed).cpu().numpy()
    return [fill_frame(run.schema, frame, c) for c in copies]


class MIWAEImputer(TransformerMixin, BaseEstimator):
    """A scikit-learn style imputer (``fit`` / ``transform``, like ``IterativeImputer``) that
    trains a VAE on the observed cells of a table and fills the missing ones.

    ``X``: a pandas DataFrame (column types inferred as by ``vaekit train``: numeric, binary,
    categorical; force them with ``numeric`` / ``binary`` / ``categorical``) or a numeric array
    with NaN for missing (every column numeric). ``transform`` returns the same kind.

    ``iw_samples`` K >= 2 trains on the MIWAE bound (0 or 1: the plain ELBO); ``method``
    ``"importance"`` imputes by the importance-weighted conditional mean with ``k`` draws,
    ``"reconstruction"`` by decoding the posterior mean (vaekit's earlier imputation).
    ``multiple_imputations(X, m)`` gives m completed tables by sampling importance resampling.
    """

    def __init__(
        self,
        latent_dim=4,
        *,
        hidden=(128, 128),
        activation="relu",
        epochs=200,
        batch_size=64,
        lr=1e-3,
        iw_samples=20,
        method="importance",
        k=DEFAULT_K,
        numeric=(),
        binary=(),
        categorical=(),
        random_state=0,
        device="cpu",
    ):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.iw_samples = iw_samples
        self.method = method
        self.k = k
        self.numeric = numeric
        self.binary = binary
        self.categorical = categorical
        self.random_state = random_state
        self.device = device

    # -- the array/frame edge -----------------------------------------------------------------
    def _frame(self, X, fitting: bool):
        pd = _pandas()
        if isinstance(X, pd.DataFrame):
            if fitting:
                self._array_input = False
            return X.reset_index(drop=True)
        a = np.asarray(X, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"MIWAEImputer takes a 2-D table (rows x columns), got an array of shape {a.shape}")
        if np.isinf(a).any():
            raise ValueError("MIWAEImputer: the data hold infinite values; mark missing cells as NaN")
        if fitting:
            self._array_input = True
        return pd.DataFrame(a, columns=[f"x{i}" for i in range(a.shape[1])])

    def fit(self, X, y=None):
        from .data.tables import Schema
        from .spec import ModelSpec, build_model
        from .train import TrainConfig
        from .train import fit as train_model

        if self.method not in ("importance", "reconstruction"):
            raise ValueError(f"method must be 'importance' or 'reconstruction', got {self.method!r}")
        _check_k(self.k)
        frame = self._frame(X, fitting=True)
        numeric = list(frame.columns) if self._array_input else self.numeric
        self.schema_ = Schema.fit(frame, numeric=numeric, binary=self.binary, categorical=self.categorical)
        x, _ = self.schema_.transform(frame, "the training table")
        lik = self.schema_.likelihood()
        spec = ModelSpec(
            data_shape=(x.shape[1],),
            latent_dim=int(self.latent_dim),
            hidden=tuple(self.hidden),
            activation=str(self.activation),
            likelihood=lik.config(),
            network="table",
        )
        seed = int(self.random_state or 0)
        config = TrainConfig(
            epochs=int(self.epochs),
            batch_size=min(int(self.batch_size), len(x)),
            lr=float(self.lr),
            iw_samples=int(self.iw_samples) if self.iw_samples and self.iw_samples > 1 else 0,
            seed=seed,
            device=str(self.device),
            progress=False,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model_ = build_model(spec)
            self.history_ = train_model(self.model_, x, None, config).history
        self.model_.eval()
        return self

    def _model_rows(self, frame) -> torch.Tensor:
        if not hasattr(self, "model_"):
            raise ValueError("this MIWAEImputer is not fitted yet; call fit first")
        x, _ = self.schema_.transform(frame, "the table")
        return torch.as_tensor(x)

    def _out(self, frame, filled):
        table = fill_frame(self.schema_, frame, filled)
        return table.to_numpy(dtype=np.float64) if self._array_input else table

    def transform(self, X):
        """``X`` with its missing cells filled (single imputation)."""
        frame = self._frame(X, fitting=False)
        x = self._model_rows(frame)
        if self.method == "reconstruction":
            from .tabular import impute

            filled = impute(self.model_, x)
        else:
            filled = conditional_mean(self.model_, x, k=int(self.k), seed=int(self.random_state or 0))
        return self._out(frame, filled.cpu().numpy())

    def multiple_imputations(self, X, m: int = 5) -> list:
        """``m`` completed copies of ``X`` (sampling importance resampling)."""
        frame = self._frame(X, fitting=False)
        copies = multiple_imputations(
            self.model_, self._model_rows(frame), m, k=int(self.k), seed=int(self.random_state or 0)
        )
        return [self._out(frame, c) for c in copies.cpu().numpy()]

    @classmethod
    def from_run(cls, run, k: int = DEFAULT_K, method: str = "importance") -> MIWAEImputer:
        """An imputer around the model of a run trained on a table: ``run`` is what
        ``vaekit.runs.open_run(path)`` returns."""
        if getattr(run, "schema", None) is None:
            raise ValueError(f"{getattr(run, 'path', run)} was not trained on a table; imputation needs one")
        imputer = cls(k=k, method=method, iw_samples=int(run.config.get("train", {}).get("iw_samples", 0)))
        imputer.model_, imputer.schema_, imputer.history_ = run.model.eval(), run.schema, run.history
        imputer._array_input = False
        return imputer
