"""Synthetic tables from a model trained on a table.

A row is z ~ p(z), then x ~ p(x | z) (a draw, not the decoded mean: the mean would shrink every
column's spread), mapped back to the original columns, values and categories by the run's
``Schema``. The model does not model which cells are missing, so missing cells are put back
by drawing whole missingness patterns (rows of the is-missing mask) from the training table:
every column keeps its missing-value rate and the co-missingness of columns is kept, but a
cell's being missing is independent of its value (missing completely at random).
"""

from __future__ import annotations

import numpy as np
import torch

from .batches import inference
from .generate import prior_draws
from .model import Model


def draw_rows(model: Model, n: int, batch_size: int = 4096, seed: int | None = 0, c=None) -> torch.Tensor:
    """(n, D) model-space rows x ~ p(x | z), z ~ p(z); a conditional model: x ~ p(x | z, c_i),
    z ~ p(z | c_i) with ``c`` (n, condition_dim) one condition per row (or (n,) class labels)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of rows must be a whole number >= 1, got {n!r}")
    out = []
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), inference(model):
        if seed is not None:
            torch.manual_seed(int(seed))
        for start in range(0, int(n), batch_size):
            size = min(batch_size, int(n) - start)
            if c is None:
                z = model.p_z().sample((size,))
                out.append(model.p_x(z).sample())
            else:
                cb = torch.as_tensor(c[start : start + size]).to(next(model.parameters()).device)
                z = prior_draws(model, size, c=cb)
                out.append(model.p_x(z, model.condition(cb, size)).sample())
    return torch.cat(out)


def missing_patterns(schema, frame) -> np.ndarray:
    """(N, columns) bool: which cells of ``frame`` are missing, in the schema's column order."""
    return np.stack([frame[c["name"]].isna().to_numpy() for c in schema.columns], axis=1)


def synthesize(model: Model, schema, n: int, patterns: np.ndarray | None = None, seed: int | None = 0, c=None):
    """A DataFrame of ``n`` synthetic rows with the schema's columns. ``patterns`` (an (N, columns)
    bool array from ``missing_patterns`` of the training table) gives each row the missing cells
    of a training row drawn at random; None gives complete rows. ``c``: a conditional model's
    condition of each row."""
    import pandas as pd

    rows = draw_rows(model, n, seed=seed, c=c).cpu().numpy()
    table = schema.inverse(rows)
    if patterns is None or not np.asarray(patterns).any():
        return table
    patterns = np.asarray(patterns, dtype=bool)
    if patterns.ndim != 2 or patterns.shape[1] != len(schema.columns) or len(patterns) == 0:
        raise ValueError(f"missingness patterns need shape (rows, {len(schema.columns)}), got {patterns.shape}")
    pick = np.random.default_rng(seed).integers(0, len(patterns), size=int(n))
    mask = patterns[pick]
    for j, c in enumerate(schema.columns):
        if mask[:, j].any():
            col = table[c["name"]]
            if pd.api.types.is_integer_dtype(col.dtype):
                col = col.astype("Int64")
            table[c["name"]] = (
                col.astype(object).where(~mask[:, j], None) if col.dtype == object else col.mask(mask[:, j])
            )
    return table
