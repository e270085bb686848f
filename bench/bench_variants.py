"""Test log p(x) of vaekit's variants on binarised sklearn digits, at equal epochs.

Rows (one process, in turn, the same data, split, optimiser and epochs for all):

  VAE              one stochastic layer, diagonal Gaussian q, N(0, I) prior, trained on the ELBO
  IWAE k=5 / k=50  the same model trained on the IWAE bound (Burda et al. 2016)
  VampPrior        the VAE with a VampPrior of 50 pseudo-inputs (Tomczak & Welling 2018)
  IAF              the VAE with 2 IAF steps on q (Kingma et al. 2016)
  full covariance  the VAE with a full-covariance Gaussian q
  2 layers         x <-> z1 <-> z2, the IWAE paper's architecture scaled to 8x8 images, on the ELBO
  2 layers + IWAE  the same, trained on IWAE_50

Data: sklearn's 1797 digits, pixels > 8 of 16 set to 1 (a fixed binarisation), a fixed random split
of 1437 training and 360 test images. Networks: tanh MLPs with two hidden layers of ``--hidden``
units; ``--latent`` units in z (z1 for two layers, z2 has half as many). Adam, learning rate 1e-3,
batch 100.

Test log p(x): importance sampling with the model's own q as proposal, ``--k`` draws per example
(IWAE_k, a lower bound in expectation), in nats per image, every constant kept. The "+-" is the
standard error of the test mean over the 360 images; "MC se" is the mean per-image Monte Carlo
standard error of the estimate (delta method). Training time is wall-clock seconds on this machine
as loaded when run (print ``uptime`` beside it); compare the rows' ratios, not the absolute numbers.

    PYTHONPATH=src python bench/bench_variants.py --epochs 300 --k 1000
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from vaekit import ModelSpec, build_model, fit, log_marginal
from vaekit.config import TrainConfig

ROWS = [
    ("VAE", {}, 0),
    ("IWAE k=5", {}, 5),
    ("IWAE k=50", {}, 50),
    ("VampPrior (K=50)", dict(prior="vamp", n_components=50), 0),
    ("IAF (2 steps)", dict(posterior="iaf", iaf_steps=2), 0),
    ("full covariance", dict(posterior="full"), 0),
    ("2 layers", dict(layers=2), 0),
    ("2 layers + IWAE k=50", dict(layers=2), 50),
]


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits

    x = (load_digits().data > 8).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    return torch.as_tensor(x[order[:1437]]), torch.as_tensor(x[order[1437:]])


def run(epochs: int, k: int, hidden: int, latent: int, only: list[str] | None = None) -> list[dict]:
    train, test = digits_split()
    # one-time set-up (the first optimiser imports torch._dynamo) before any row's clock starts
    fit(
        build_model(ModelSpec(data_shape=(64,), latent_dim=2, hidden=(8,), likelihood="bernoulli")),
        train[:100],
        config=TrainConfig(epochs=1, progress=False),
    )
    rows = []
    for name, variant, iw in ROWS:
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        torch.manual_seed(0)
        if variant.get("layers") == 2:
            variant = {**variant, "top_dim": max(1, latent // 2)}
        spec = ModelSpec(
            data_shape=(64,),
            latent_dim=latent,
            hidden=(hidden, hidden),
            activation="tanh",
            likelihood="bernoulli",
            **variant,
        )
        model = build_model(spec)
        config = TrainConfig(epochs=epochs, batch_size=100, lr=1e-3, iw_samples=iw, seed=0, progress=False)
        started = time.perf_counter()
        fit(model, train, config=config)
        seconds = time.perf_counter() - started
        torch.manual_seed(1)
        lm = log_marginal(model, test, k=k)
        values = lm.log_px.double()
        rows.append(
            {
                "name": name,
                "log_px": float(values.mean()),
                "se": float(values.std() / math.sqrt(len(values))),
                "mc_se": float(lm.stderr.mean()),
                "seconds": seconds,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
        print("  " + _line(rows[-1]), flush=True)  # each row as soon as it is done
    return rows


def table(rows: list[dict], epochs: int, k: int) -> str:
    lines = [
        f"| model | test log p(x), nats (k={k}) | MC se | training s ({epochs} epochs) | parameters |",
        "|---|---|---|---|---|",
    ]
    lines += [_line(r) for r in rows]
    return "\n".join(lines)


def _line(r: dict) -> str:
    return (
        f"| {r['name']} | {r['log_px']:.2f} +- {r['se']:.2f} | {r['mc_se']:.3f} | {r['seconds']:.0f} | {r['params']} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--k", type=int, default=1000, help="importance samples for test log p(x)")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--only", nargs="*", help="rows whose name contains one of these")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f} at the start")
    rows = run(args.epochs, args.k, args.hidden, args.latent, args.only)
    print(table(rows, args.epochs, args.k))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
