"""Anomaly scores from a trained VAE, one number per example (seed 001 names all three).

With q(z|x) the encoder, p(x|z) the decoder and p(z) the prior:

- ``logpx``: importance-sampled log p(x) = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x)
  (Burda et al. 2016). The model's own answer to "how probable is this example"; higher is
  more normal.
- ``recon``: the reconstruction log-probability E_q(z|x)[log p(x|z)], averaged over L draws
  of z (An & Cho 2015). An & Cho average the density p(x|z) itself; the average of its log
  (the ELBO's reconstruction term) is used here because it stays finite in high dimension
  and ranks examples alike. Higher is more normal.
- ``kl``: KL(q(z|x) || p(z)), in closed form where torch has one (diagonal q, normal prior), else the
  Monte Carlo mean of log q(z|x) - log p(z) over L draws (mixture priors, full covariance, IAF, two
  layers): how far the encoder must move an example away from the prior. Higher is more *anomalous*.

Every value is in nats. ``score`` turns each into a scikit-learn style score (higher means
more normal: ``logpx`` and ``recon`` as they are, ``kl`` negated), which is what
``VAEOutlierDetector.score_samples`` returns.

The Monte Carlo scores can use common random numbers: one set of standard-normal draws
``noise`` (K, latent_dim) shared by every example, z_k = mu(x) + sigma(x) * noise_k. Each
example's score is then a function of that example alone (the same in any batch, in any
order), and differences between examples are not blurred by independent sampling noise;
each score is still an unbiased Monte Carlo estimate for its own example.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from .batches import inference
from .generate import model_batches
from .model import Model
from .objectives import log_marginal
from .posteriors import draw

# name -> (column name for files, sign that makes "higher = more normal", description)
SCORES: dict[str, tuple[str, float, str]] = {
    "logpx": ("log_px", 1.0, "importance-sampled log p(x) (IWAE_K with q(z|x) as proposal)"),
    "recon": ("recon_log_px_z", 1.0, "reconstruction log-probability E_q[log p(x|z)] (An & Cho 2015, L draws)"),
    "kl": ("kl", -1.0, "KL(q(z|x) || p(z)), closed form where torch has one, else L-draw Monte Carlo"),
}


def common_noise(
    n: int, latent_dim: int, seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``n`` standard-normal draws of size ``latent_dim`` from a private generator seeded
    with ``seed`` (the global torch RNG is not touched): (n, latent_dim)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, latent_dim, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


def _cut(c, i: int, batch_size: int, xb: torch.Tensor):
    """The conditions of batch ``i`` (None for an unconditional model)."""
    return None if c is None else torch.as_tensor(c)[i * batch_size : i * batch_size + xb.shape[0]].to(xb.device)


def log_px(
    model: Model, x: torch.Tensor, k: int = 100, noise: torch.Tensor | None = None, batch_size: int = 256, c=None
) -> torch.Tensor:
    """Importance-sampled log p(x) per example, (B,): ``objectives.log_marginal`` with ``k``
    samples (and the shared ``noise`` (k, H) when given). ``c``: a conditional model's conditions
    (one per example): log p(x|c)."""
    with inference(model):
        parts = [
            log_marginal(model, xb, k=k, batch_size=batch_size, noise=noise, c=_cut(c, i, batch_size, xb)).log_px
            for i, xb in enumerate(model_batches(model, x, batch_size))
        ]
    return torch.cat(parts)


def reconstruction_log_prob(
    model: Model,
    x: torch.Tensor,
    n_samples: int = 100,
    noise: torch.Tensor | None = None,
    batch_size: int = 256,
    max_elements: int = 2**24,
    c=None,
) -> torch.Tensor:
    """(1/L) sum_l log p(x | z_l), z_l ~ q(z|x), per example, (B,). Chunked over draws so
    about ``max_elements`` decoder outputs are alive at a time. ``c``: a conditional model's
    conditions: log p(x|z_l, c), z_l ~ q(z|x, c)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if noise is not None and tuple(noise.shape) != (n_samples, model.latent_dim):
        raise ValueError(
            f"noise must have shape (n_samples, latent_dim) = {(n_samples, model.latent_dim)}, got {tuple(noise.shape)}"
        )
    per_example = max(1, math.prod(model.likelihood.param_shape(model.data_shape or tuple(x.shape[1:]))))
    out = []
    with inference(model):
        for i, xb in enumerate(model_batches(model, x, batch_size)):
            cb = _cut(c, i, batch_size, xb)
            qz = model.q_z(xb, cb)
            chunk = max(1, min(n_samples, max_elements // (per_example * xb.shape[0])))
            total = torch.zeros(xb.shape[0], device=xb.device, dtype=torch.promote_types(xb.dtype, torch.float32))
            done = 0
            while done < n_samples:
                n = min(chunk, n_samples - done)
                if noise is None:
                    z = qz.sample((n,))  # (n, B, H)
                else:
                    z = qz.mean + qz.stddev * noise[done : done + n].to(qz.mean).unsqueeze(1)
                total += model.p_x(z, cb).log_prob(xb).sum(0).to(total.dtype)  # sum over the n draws: (B,)
                done += n
            out.append(total / n_samples)
    return torch.cat(out)


def kl_to_prior(
    model: Model, x: torch.Tensor, batch_size: int = 4096, c=None, n_samples: int = 100, noise=None
) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example in nats, (B,): closed form where torch has one (the diagonal
    Gaussian and the normal prior), else mean_l [log q(z_l|x) - log p(z_l)] over ``n_samples`` draws
    (or the common draws ``noise`` (L, latent_dim)); given a conditional model's ``c``:
    KL(q(z|x, c) || p(z|c))."""
    out = []
    with inference(model):
        for i, xb in enumerate(model_batches(model, x, batch_size)):
            cb = _cut(c, i, batch_size, xb)
            pz = model.p_z() if cb is None else model.p_z(model.condition(cb, xb.shape[0]))
            qz = model.q_z(xb, cb)
            try:
                out.append(kl_divergence(qz, pz).expand(qz.batch_shape))
            except NotImplementedError:
                shared = None if noise is None else noise.to(xb).unsqueeze(1)  # (L, 1, H)
                z, log_q = draw(qz, (n_samples,), shared)
                log_q = qz.log_prob(z) if log_q is None else log_q
                out.append((log_q - pz.log_prob(z)).mean(0))
    return torch.cat(out)


def raw_score(
    model: Model, x: torch.Tensor, kind: str, n_samples: int = 100, noise: torch.Tensor | None = None, c=None
) -> torch.Tensor:
    """The quantity named by ``kind`` (``logpx``, ``recon`` or ``kl``) in nats, its natural sign;
    ``c``: a conditional model's conditions, one per example (every score is then given c)."""
    check_kind(kind)
    if kind == "logpx":
        return log_px(model, x, k=n_samples, noise=noise, c=c)
    if kind == "recon":
        return reconstruction_log_prob(model, x, n_samples=n_samples, noise=noise, c=c)
    return kl_to_prior(model, x, c=c, n_samples=n_samples, noise=noise)


def score(
    model: Model, x: torch.Tensor, kind: str = "logpx", n_samples: int = 100, noise: torch.Tensor | None = None, c=None
) -> torch.Tensor:
    """scikit-learn's convention: higher means more normal (``kl`` is negated)."""
    return SCORES[check_kind(kind)][1] * raw_score(model, x, kind, n_samples, noise, c)


def check_kind(kind: str) -> str:
    if kind not in SCORES:
        raise ValueError(f"unknown anomaly score {kind!r}; choose one of: {', '.join(SCORES)}")
    return kind
