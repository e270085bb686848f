"""The seeds' data sets, generated or read offline."""

from __future__ import annotations

import numpy as np
import torch

from .core import Dataset


def sine(n: int = 1000, noise: float = 0.15, seed: int = 305) -> Dataset:
    """Seed 000: 2-D points on a noisy sine curve, a 1-D manifold. The true phase t is
    linspace(-3, 3, n) plus N(0, 0.05^2) jitter; x = (t, sin t) + N(0, noise^2 I).
    With the defaults this is the seed's data exactly (torch's generator, seed 305)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-3, 3, n) + 0.05 * torch.randn(n, generator=g)
    x1 = t + noise * torch.randn(n, generator=g)
    x2 = torch.sin(t) + noise * torch.randn(n, generator=g)
    x = torch.stack([x1, x2], dim=1).numpy().astype(np.float32)
    return Dataset(x=x, name="sine", extra={"phase": t.numpy()}, info={"n": n, "noise": noise, "seed": seed})


def pinwheel(
    points_per_class: int = 800,
    num_classes: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.05,
    rate: float = 0.25,
    seed: int = 10,
    scale: float = 1.0,
) -> Dataset:
    """Seed 004 (after Johnson et al. 2016): ``num_classes`` spiral arms. Each point starts
    at radius 1 + N(0, radial_std^2) with tangential offset N(0, tangential_std^2) and is
    rotated by its arm's angle plus ``rate * exp(radius)``, so arms curl outwards. ``scale``
    multiplies the points (``vaekit.demos`` uses the scale that reproduces seed 004's numbers)."""
    rng = np.random.RandomState(seed)
    n = num_classes * points_per_class
    arm_angles = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
    feats = rng.randn(n, 2) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1
    labels = np.repeat(np.arange(num_classes), points_per_class)
    angles = arm_angles[labels] + rate * np.exp(feats[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    # row vector times rotation [[cos, -sin], [sin, cos]]
    x = np.stack([feats[:, 0] * cos + feats[:, 1] * sin, -feats[:, 0] * sin + feats[:, 1] * cos], axis=1)
    perm = rng.permutation(n)
    return Dataset(
        x=(scale * x[perm]).astype(np.float32),
        name="pinwheel",
        labels=labels[perm],
        info={"points_per_class": points_per_class, "num_classes": num_classes, "seed": seed, "scale": scale},
    )


def digits(binarize: bool = False, threshold: float = 8.0, unit: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, labels 0-9). Pixels are
    grey levels 0..16 (17 values), or {0, 1} with ``binarize`` (pixel > ``threshold``), or
    level / 16 in [0, 1] with ``unit`` (what dynamic binarisation draws from)."""
    pixels, target = _digits_arrays()
    x = pixels.astype(np.float32)
    if binarize:
        x = (x > threshold).astype(np.float32)
    elif unit:
        x = x / 16.0
    return Dataset(
        x=x,
        name="digits",
        labels=target.astype(np.int64),
        image_shape=(8, 8),
        info={"binarize": binarize, "levels": 2 if binarize else 17, **({"unit": True} if unit else {})},
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64), labels (1797,)) read straight from scikit-learn's bundled
    ``datasets/data/digits.csv.gz`` (64 pixel columns, then the label), the file its
    ``load_digits`` reads: importing scikit-learn itself takes a second or more, the file a few ms."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # an unusual install: let scikit-learn find its own file
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


BUILTIN = {"sine": sine, "pinwheel": pinwheel, "digits": digits}
