"""Small trained run folders for the figure, report and generation tests, trained once per test
session (a few seconds each) through ``vaekit.runs.train``, without figures."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from vaekit import runs

SETTINGS = {
    # seed 000's model, few epochs: 2-D data, 1-D latent, the true phase known per example
    "sine": dict(
        data="sine",
        latent_dim=1,
        hidden=(32, 32),
        activation="tanh",
        likelihood="gaussian",
        scale=1.0,
        epochs=25,
        batch_size=128,
    ),
    # seed 004's model, few epochs: 2-D data with 5 labels, 2-D latent
    "pinwheel": dict(
        data="pinwheel",
        latent_dim=2,
        hidden=(64,),
        activation="tanh",
        likelihood="gaussian",
        scale=math.sqrt(0.03),
        beta=0.25,
        batch_size=256,
        lr=3e-3,
        epochs=25,
    ),
    # 8x8 binary images with labels, 2-D latent: manifold grids
    "digits2": dict(data="digits", binarize=True, latent_dim=2, hidden=(64,), epochs=12, lr=3e-3),
    # 8x8 grey images (17-level categorical), 4-D latent: PCA / t-SNE maps, traversals
    "digits4": dict(data="digits", latent_dim=4, hidden=(64,), epochs=6, lr=3e-3),
}


@functools.cache
def trained_run(kind: str, root: Path) -> Path:
    out = Path(root) / kind
    runs.train({**SETTINGS[kind], "out": str(out), "progress": False, "seed": 0}, log=lambda _: None)
    return out
