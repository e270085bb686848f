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


def impute(model: Model, x, batch_size: int = 4096, sample_z: bool = False) -> torch.Tensor:
    """``x`` with every NaN replaced by the decoded mean E[x | z] at z = the posterior mean
    (or a draw z ~ q(z|x) with ``sample_z``); observed values are kept as they are."""
    out = []
    with inference(model):
        for xb in model_batches(model, x, batch_size):
            qz = model.q_z(xb)
            z = qz.sample() if sample_z else qz.mean
            filled = model.decode(z)
            out.append(torch.where(torch.isnan(xb), filled, xb))
    device, dtype = placement(model)
    return torch.cat(out) if out else torch.empty(0, *model.data_shape, device=device, dtype=dtype)


def column_log_likelihoods(
    model: Model, x, n_samples: int = 10, batch_size: int = 1024, seed: int | None = 0
) -> dict[str, Any]:
    """Each column's share of the ELBO's reconstruction term: E_q(z|x)[log p(x_j | z)] in nats,
    averaged over the examples where column j is observed (``n_samples``-draw Monte Carlo).
    Summing ``log_lik * observed / n`` over the columns gives the mean log p(x|z)."""
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
            for xb in model_batches(model, x, batch_size):
                z = model.q_z(xb).sample((n_samples,))  # (L, B, H)
                per_column = model.p_x(z).log_prob_columns(xb).mean(0)  # (B, n_columns)
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
