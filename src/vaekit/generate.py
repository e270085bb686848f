"""Points in latent space to decode: prior quantile grids, interpolations, traversals.

Tensors in, tensors out. The prior here is the standard normal p(z) = N(0, I), so a
probability p maps to the latent value Phi^-1(p); decoding a grid of such values shows the
learned manifold with each cell holding equal prior mass (Kingma & Welling 2014, fig. 4).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Normal

from .batches import inference, iterate
from .model import Model

_STANDARD = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))


def prior_quantiles(steps: int, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """``steps`` latent values Phi^-1(p) for p evenly spaced in [low, high], increasing, (steps,)."""
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < low <= high < 1:
        raise ValueError(f"quantile range must satisfy 0 < low <= high < 1, got ({low}, {high})")
    p = (
        torch.linspace(low, high, int(steps), dtype=torch.float64)
        if steps > 1
        else torch.tensor([0.5 * (low + high)], dtype=torch.float64)
    )
    return _STANDARD.icdf(p).float()


def quantile_grid(
    latent_dim: int,
    steps: int = 15,
    dims: tuple[int, int] = (0, 1),
    low: float = 0.05,
    high: float = 0.95,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """A ``steps`` x ``steps`` grid through the prior's quantiles in two latent units, the others at
    ``base`` (default 0, the prior's median): (steps, steps, latent_dim). Row ``i`` holds unit
    ``dims[1]`` at its ``i``-th *largest* value (so the top row of a picture is the highest),
    column ``j`` unit ``dims[0]`` at its ``j``-th smallest. With ``latent_dim == 1`` it is a single
    row: (1, steps, 1)."""
    values = prior_quantiles(steps, low, high)
    base = torch.zeros(latent_dim) if base is None else torch.as_tensor(base, dtype=torch.float32).reshape(latent_dim)
    if latent_dim == 1:
        return (base + values[:, None]).reshape(1, steps, 1)
    a, b = dims
    if not (0 <= a < latent_dim and 0 <= b < latent_dim and a != b):
        raise ValueError(f"dims must be two different units in 0..{latent_dim - 1}, got {dims}")
    grid = base.repeat(steps, steps, 1)  # (steps, steps, H)
    grid[:, :, a] = values[None, :]
    grid[:, :, b] = values.flip(0)[:, None]
    return grid


def interpolate(z_from: torch.Tensor, z_to: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Evenly spaced points on the straight line from ``z_from`` to ``z_to`` (both ends included):
    (steps, latent_dim), or (steps, B, latent_dim) for batches of pairs."""
    if int(steps) < 2:
        raise ValueError(f"an interpolation needs steps >= 2, got {steps}")
    t = torch.linspace(0, 1, int(steps), dtype=z_from.dtype, device=z_from.device)
    t = t.reshape(-1, *([1] * z_from.dim()))
    return (1 - t) * z_from + t * z_to


def traverse(base: torch.Tensor, units: list[int] | tuple[int, ...], values: torch.Tensor) -> torch.Tensor:
    """Move one unit at a time through ``values`` with the others fixed at ``base`` (latent_dim,):
    (len(units), len(values), latent_dim)."""
    base = torch.as_tensor(base, dtype=torch.float32)
    latent_dim = base.shape[-1]
    bad = [u for u in units if not 0 <= int(u) < latent_dim]
    if bad:
        raise ValueError(f"latent unit(s) {bad} out of range; this model has units 0..{latent_dim - 1}")
    out = base.repeat(len(units), len(values), 1)
    for row, unit in enumerate(units):
        out[row, :, int(unit)] = values.to(out.dtype)
    return out


def placement(model: Model) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of ``model``'s parameters: where (and as what) its inputs go.
    A model kept in float64 (the scikit-learn estimator's) gets float64 inputs."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return p.device, p.dtype if p.dtype.is_floating_point else torch.get_default_dtype()


def model_batches(model: Model, x, batch_size: int):
    """``batches.iterate`` over ``x`` (a tensor, an array, or one on disk), each batch on the
    model's device in the model's dtype."""
    device, dtype = placement(model)
    for xb in iterate(x, batch_size, device):
        yield xb.to(dtype)


def conditions_for(model: Model, c, lead: tuple[int, ...]) -> torch.Tensor | None:
    """The condition ``c`` of a conditional model for points with leading shape ``lead``, one row
    per point, flat: an int label (or a (condition_dim,) vector) for all, or one per point (labels
    of shape ``lead``, vectors of shape (*lead, condition_dim)). None for ``c=None``."""
    if c is None:
        return None
    c = torch.as_tensor(c)
    n = 1
    for s in lead:
        n *= int(s)
    if c.dtype.is_floating_point:
        return c.expand(*lead, c.shape[-1]).reshape(n, c.shape[-1])
    return c.long().expand(*lead).reshape(n)


def prior_draws(model: Model, n: int, c=None) -> torch.Tensor:
    """``n`` draws z ~ p(z) (a conditional model: z ~ p(z|c), ``c`` one label for all or one per draw), (n, latent_dim)."""
    if not getattr(model, "condition_dim", 0):
        return model.p_z().sample((int(n),))
    cond = conditions_for(model, c, (int(n),)).to(placement(model)[0])
    pz = model.p_z(cond)
    return pz.sample() if len(pz.batch_shape) else pz.sample((int(n),))


def decode(model: Model, z: torch.Tensor, how: str = "mean", batch_size: int = 4096, c=None) -> torch.Tensor:
    """Decode latent points of shape (..., latent_dim) to data space, in batches (float32, on the CPU).

    ``how``: ``"mean"`` (E[x|z]), ``"draw"`` (x ~ p(x|z)) or ``"mode"`` (the most probable value:
    a Bernoulli mean rounded to 0/1, a categorical's most likely level). ``c``: a conditional
    model's condition (see ``conditions_for``)."""
    if how not in ("mean", "draw", "mode"):
        raise ValueError(f"how must be 'mean', 'draw' or 'mode', got {how!r}")
    lead = z.shape[:-1]
    cond = conditions_for(model, c, tuple(lead))
    parts = []
    with inference(model):
        for i, zb in enumerate(model_batches(model, z.reshape(-1, z.shape[-1]), batch_size)):
            cb = None if cond is None else cond[i * batch_size : i * batch_size + len(zb)].to(zb.device)
            if how == "mode":
                try:
                    part = model.p_x(zb, c=cb).mode if cb is not None else model.p_x(zb).mode
                except NotImplementedError:
                    raise ValueError(
                        f"the {model.likelihood.name} likelihood has no most probable value to round to; "
                        "use the mean or --draw"
                    ) from None
            else:
                part = (
                    model.decode(zb, draw=how == "draw", c=cb)
                    if cb is not None
                    else model.decode(zb, draw=how == "draw")
                )
            parts.append(part.to(torch.float32).cpu())
    out = torch.cat(parts) if parts else torch.zeros(0, *(model.data_shape or ()))
    return out.reshape(*lead, *out.shape[1:])


def _batch_c(cond, i: int, batch_size: int, xb: torch.Tensor):
    return None if cond is None else cond[i * batch_size : i * batch_size + len(xb)].to(xb.device)


def encode(model: Model, x, batch_size: int = 4096, c=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of q(z|x) (q(z|x, c) given ``c``), in batches: two (N, latent_dim)
    tensors on the CPU. ``x`` may be a tensor or an array, one on disk included (read batch by batch)."""
    means, scales = [], []
    cond = conditions_for(model, c, (len(x),))
    with inference(model):
        for i, xb in enumerate(model_batches(model, x, batch_size)):
            cb = _batch_c(cond, i, batch_size, xb)
            m, s = model.encode(xb, return_scale=True, c=cb) if cb is not None else model.encode(xb, return_scale=True)
            means.append(m.cpu())
            scales.append(s.cpu())
    if not means:
        empty = torch.zeros(0, model.latent_dim)
        return empty, empty.clone()
    return torch.cat(means), torch.cat(scales)


def reconstruct(
    model: Model, x, how: str = "mean", sample_z: bool = True, batch_size: int = 4096, c=None, decode_c=None
) -> torch.Tensor:
    """Encode, take z ~ q(z|x) (or its mean with ``sample_z=False``), decode with ``how``. A conditional
    model encodes under ``c`` and decodes under ``decode_c`` (default: ``c``); another ``decode_c``
    is a counterfactual: the example as it would look under that condition."""
    parts = []
    cond = conditions_for(model, c, (len(x),))
    dcond = cond if decode_c is None else conditions_for(model, decode_c, (len(x),))
    with inference(model):
        for i, xb in enumerate(model_batches(model, x, batch_size)):
            cb = _batch_c(cond, i, batch_size, xb)
            qz = model.q_z(xb, c=cb) if cb is not None else model.q_z(xb)
            z = qz.sample() if sample_z else qz.mean
            parts.append(decode(model, z, how=how, batch_size=batch_size, c=_batch_c(dcond, i, batch_size, xb)))
    return torch.cat(parts) if parts else torch.zeros(0, *(model.data_shape or ()))


def kl_per_unit(model: Model, x, batch_size: int = 4096, c=None) -> torch.Tensor:
    """Average KL(q(z_h|x) || p(z_h)) over the examples, one value per latent unit (nats), (latent_dim,);
    a conditional model: KL(q(z_h|x, c) || p(z_h|c)) with ``c`` per example. As ``objectives.unit_kl``:
    the KL's own terms for a diagonal q and prior, else the KL of the one-dimensional marginals; NaN
    where those have no closed form (IAF, two layers: ``kl_per_unit_defined`` says why)."""
    from .objectives import unit_kl

    def _kl_units(qz, pz):
        values = unit_kl(qz, pz, model)[0]
        return torch.full((xb.shape[0], model.latent_dim), math.nan) if values is None else values

    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    n = 0
    cond = conditions_for(model, c, (len(x),))
    with inference(model):
        for i, xb in enumerate(model_batches(model, x, batch_size)):
            cb = _batch_c(cond, i, batch_size, xb)
            if cb is None:
                total += _kl_units(model.q_z(xb), model.p_z()).sum(0).double().cpu()
            else:
                total += _kl_units(model.q_z(xb, c=cb), model.p_z(cb)).sum(0).double().cpu()
            n += xb.shape[0]
    return (total / max(1, n)).float()


def kl_per_unit_adds_up(model: Model, x, c=None) -> bool:
    """Whether ``kl_per_unit``'s values add up to the KL (a diagonal q and prior; judged from the first
    example of ``x``), or are KLs of one-dimensional marginals whose sum is not the KL."""
    from .objectives import units_add_up

    return True if len(x) == 0 else units_add_up(*_first_q_and_p(model, x, c))


def kl_per_unit_defined(model: Model, x, c=None) -> str | None:
    """None when ``kl_per_unit`` is defined for ``model`` (judged from the first example of ``x``), else why not."""
    from .objectives import unit_kl

    if len(x) == 0:
        return None
    values, why = unit_kl(*_first_q_and_p(model, x, c), model)
    return None if values is not None else why


def _first_q_and_p(model: Model, x, c=None):
    """q(z|x_1) and the prior (of c_1 for a conditional model) for the first example of ``x``."""
    x1 = torch.as_tensor(np.asarray(x[:1]) if not isinstance(x, torch.Tensor) else x[:1])
    with inference(model):
        cond = conditions_for(model, None if c is None else c[:1], (1,))
        x1 = x1.to(placement(model)[0], placement(model)[1])
        qz = model.q_z(x1) if cond is None else model.q_z(x1, c=cond)
        return qz, (model.p_z() if cond is None else model.p_z(cond))
