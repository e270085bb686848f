"""The numbers written to metrics.json at the end of training."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..batches import inference
from ..config import TrainConfig
from ..data import Dataset
from ..evaluation import kl_in_closed_form
from ..model import Model
from ..tabular import column_log_likelihoods
from ..train import evaluate_elbo
from .data import bernoulli_draw, part_conditions

FINAL_SAMPLES = 10


def final_metrics(model: Model, parts: dict[str, Dataset], train_cfg: TrainConfig) -> dict[str, Any]:
    """The ELBO on the training and validation rows (and, for a table, each column's share of
    log p(x|z)), seeded so that the same run always reports the same numbers."""
    device = next(model.parameters()).device
    gen_state = torch.get_rng_state()
    torch.manual_seed(train_cfg.seed)
    out: dict[str, Any] = {"estimator": final_estimator(model, parts), "units": "nats per example"}
    for name in ("train", "val"):
        if len(parts[name]):
            x = parts[name].x
            if name == "train" and train_cfg.dynamic_binarize:  # score a fixed draw, not the probabilities
                x = bernoulli_draw(x, train_cfg.seed)
            x = x if hasattr(x, "chunks") else torch.as_tensor(x, device=device)
            c = None
            if getattr(model, "condition_dim", 0):  # a conditional run: log p(x|c) bounds, c labels or covariates
                c = torch.as_tensor(part_conditions(parts[name]), device=device)
            out[name] = evaluate_elbo(model, x, train_cfg.eval_batch_size, n_samples=FINAL_SAMPLES, c=c)
            out[name]["n"] = len(parts[name])
    if model.likelihood.column_names() is not None:  # a table: each column's share of log p(x|z)
        split = "val" if len(parts["val"]) else "train"
        out["columns"] = {
            "split": split,
            **column_log_likelihoods(
                model,
                parts[split].x,
                FINAL_SAMPLES,
                seed=train_cfg.seed,
                c=part_conditions(parts[split]) if getattr(model, "condition_dim", 0) else None,
            ),
        }
    torch.set_rng_state(gen_state)
    return out


def final_estimator(model: Model, parts: dict[str, Dataset]) -> str:
    """What ``final_metrics`` computes, in words: the ELBO's reconstruction term is a Monte Carlo
    average; its KL is in closed form where torch has one (diagonal Gaussian q, normal prior), else
    the Monte Carlo mean of log q(z|x) - log p(z) over the same draws (mixture and VampPriors, full
    covariance, IAF, two layers)."""
    split = parts["train"] if len(parts["train"]) else parts["val"]
    weight = next(model.parameters())
    x = torch.as_tensor(np.asarray(split.x[:1]), device=weight.device, dtype=weight.dtype)
    c = None
    if getattr(model, "condition_dim", 0):
        c = torch.as_tensor(part_conditions(split)[:1], device=x.device)
    with inference(model):
        qz, pz = (model.q_z(x), model.p_z()) if c is None else (model.q_z(x, c), model.p_z(c))
        closed = kl_in_closed_form(qz, pz)
    kl = (
        "closed-form KL"
        if closed
        else f"Monte Carlo KL: log q(z|x) - log p(z) averaged over the same {FINAL_SAMPLES} draws"
    )
    text = f"ELBO, {FINAL_SAMPLES}-sample Monte Carlo average of log p(x|z), {kl}"
    if c is not None:
        text += ", conditional on c (class labels or covariates): a bound on log p(x|c)"
    return text
