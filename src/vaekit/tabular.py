"""Tables in the model's space: imputation of missing values and per-column log-likelihoods.

Missing values are NaN in the model-space rows (see ``vaekit.data.tables``). A model with a
``Mixed`` likelihood leaves them out of log p(x | z) and its encoder sees which are missing,
so imputation is reconstruction: encode what is observed, decode, and fill the gaps with the
decoded means (for a categorical column, the category probabilities; the table's ``inverse``
turns them into the most probable category).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .batches import inference
from .generate import model_batches, placement
from .model import Model


def _with_conditions(model: Model, x, batch_size: int, c):
    """Batches of ``x`` on the model's device, each with its rows of ``c`` (None when c is None)."""
    start = 0
    for xb in model_batches(model, x, batch_size):
        cb = None if c is None else torch.as_tensor(c[start : start + xb.shape[0]]).to(xb.device)
        start += xb.shape[0]
        yield xb, cb


def impute(model: Model, x, batch_size: int = 4096, sample_z: bool = False, c=None) -> torch.Tensor:
    """``x`` with every NaN replaced by the decoded mean E[x | z] at z = the posterior mean
    (or a draw z ~ q(z|x) with ``sample_z``); observed values are kept as they are. ``c``: a
    conditional model's conditions, one per row (encoded and decoded under them)."""
    out = []
    with inference(model):
        for xb, cb in _with_conditions(model, x, batch_size, c):
            qz = model.q_z(xb, cb) if cb is not None else model.q_z(xb)
            z = qz.sample() if sample_z else qz.mean
            filled = model.decode(z, c=cb)
            out.append(torch.where(torch.isnan(xb), filled, xb))
    device, dtype = placement(model)
    return torch.cat(out) if out else torch.empty(0, *model.data_shape, device=device, dtype=dtype)


def column_log_likelihoods(
    model: Model, x, n_samples: int = 10, batch_size: int = 1024, seed: int | None = 0, c=None
) -> dict[str, Any]:
    """Each column's share of the ELBO's reconstruction term: E_q(z|x)[log p(x_j | z)] in nats,
    averaged over the examples where column j is observed (``n_samples``-draw Monte Carlo).
    Summing ``log_lik * observed / n`` over the columns gives the mean log p(x|z). ``c``: a
    conditional model's conditions (then E_q(z|x,c)[log p(x_j | z, c)])."""
    lik = model.likelihood
    names = lik.column_names()
    if names is None:
        raise TypeError(f"per-column log-likelihoods need a likelihood over table columns, not {lik.name!r}")
    device, _ = placement(model)
    state = torch.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    counts = torch.zeros(len(names), dtype=torch.float64, device=device)
    n = 0
    try:
        with inference(model):
            for xb, cb in _with_conditions(model, x, batch_size, c):
                if cb is None:
                    z = model.q_z(xb).sample((n_samples,))  # (L, B, H)
                    px = model.p_x(z)
                else:
                    z = model.q_z(xb, cb).sample((n_samples,))
                    px = model.p_x(z, cb)
                per_column = px.log_prob_columns(xb).mean(0)  # (B, n_columns)
                observed = _observed_columns(lik, xb)
                sums += per_column.double().sum(0)
                counts += observed.double().sum(0)
                n += xb.shape[0]
    finally:
        torch.set_rng_state(state)
    out = {}
    for name, s, c in zip(names, sums.tolist(), counts.tolist()):
        out[name] = {"log_lik": s / c if c else math.nan, "observed": int(c)}
    return {
        "estimator": f"E_q[log p(x_j|z)] per observed value, {n_samples}-sample Monte Carlo, z ~ q(z|x)",
        "units": "nats",
        "n": n,
        "columns": out,
    }


def _observed_columns(lik, x: torch.Tensor) -> torch.Tensor:
    """(B, n_columns) True where a table column is observed (a categorical's first one-hot slot)."""
    firsts, pos = [], 0
    for c in lik.columns:
        firsts.append(pos)
        pos += c.get("size", 1) if c["kind"] == "categorical" else 1
    return ~torch.isnan(x[:, firsts])
