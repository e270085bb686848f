"""Variational bounds on log p(x).

For one example x, with q(z|x) the encoder and p(z) the prior,

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))               (Kingma & Welling 2014)
    log p(x) >= IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)] >= ELBO   (Burda et al. 2016)

and IWAE_k increases to log p(x) as k grows. Every function returns per-example values in nats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from .model import Model


@dataclass
class ELBOTerms:
    """Per-example terms, each of shape (B,). ``elbo = log_px_z - kl`` is the true bound
    (whatever beta); ``objective`` is what training maximises (beta, free bits)."""

    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    objective: torch.Tensor


def kl_per_unit(qz: Distribution, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q || p) per latent unit, (B, H): closed form when torch knows it, otherwise a
    Monte Carlo estimate from the samples ``z`` (L, B, H) (valid for factorised q and p)."""
    q_base = qz.base_dist if isinstance(qz, Independent) else qz
    p_base = pz.base_dist if isinstance(pz, Independent) else pz
    try:
        return kl_divergence(q_base, p_base).expand(q_base.batch_shape)
    except NotImplementedError:
        if z is None:
            z = qz.rsample((1,))
        return (q_base.log_prob(z) - p_base.log_prob(z)).mean(0)


def elbo(
    model: Model,
    x: torch.Tensor,
    beta: float = 1.0,
    n_samples: int = 1,
    free_bits: float = 0.0,
) -> ELBOTerms:
    """Reparameterised ELBO with ``n_samples`` draws from q(z|x) and the KL in closed form.

    ``beta`` weights the KL in the objective (beta-VAE, Higgins et al. 2017).
    ``free_bits`` (nats per latent unit, Kingma et al. 2016) stops the objective from
    pushing a unit's batch-average KL below that floor. Neither changes ``terms.elbo``.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    qz = model.q_z(x)
    z = qz.rsample((n_samples,))  # (L, B, H)
    log_px_z = model.p_x(z).log_prob(x).mean(0)  # (B,)
    kl_units = kl_per_unit(qz, model.p_z(), z)  # (B, H)
    kl = kl_units.sum(-1)  # (B,)
    if free_bits > 0:
        # the floor acts on the batch mean of each unit, spread back over the examples
        floored = kl_units.mean(0).clamp(min=free_bits).sum()
        kl_term = kl - kl.mean() + floored
    else:
        kl_term = kl
    return ELBOTerms(elbo=log_px_z - kl, log_px_z=log_px_z, kl=kl, objective=log_px_z - beta * kl_term)


def _log_weights(model: Model, x: torch.Tensor, qz: Distribution, k: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i|x) for k reparameterised draws: (k, B). With ``noise``
    (k, H) standard-normal draws, z_i = mu(x) + sigma(x) * noise_i for every example."""
    z = qz.rsample((k,)) if noise is None else qz.mean + qz.stddev * noise.unsqueeze(1)  # (k, B, H)
    return model.p_x(z).log_prob(x) + model.p_z().log_prob(z) - qz.log_prob(z)


def iwae_bound(model: Model, x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """IWAE_k per example, (B,); differentiable, so it can be trained on. IWAE_1 = ELBO
    in expectation (with a Monte Carlo KL)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    log_w = _log_weights(model, x, model.q_z(x), k)
    return torch.logsumexp(log_w, 0) - math.log(k)


@dataclass
class LogMarginal:
    """Importance-sampled log p(x) per example with its Monte Carlo standard error."""

    log_px: torch.Tensor
    stderr: torch.Tensor
    k: int
    estimator: str = "importance sampling with q(z|x) as proposal (IWAE_k)"


@torch.no_grad()
def log_marginal(
    model: Model,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = 2**24,
    noise: torch.Tensor | None = None,
) -> LogMarginal:
    """log p(x) ~= logsumexp_i [log p(x, z_i) - log q(z_i|x)] - log k, z_i ~ q(z|x).

    Batched over examples and chunked over samples so memory stays bounded (about
    ``max_elements`` decoder outputs at a time) for any k. The standard error is the
    delta-method one, sqrt((E[w^2]/E[w]^2 - 1) / k), computed from running log-sums.
    It is a stochastic lower bound in expectation (Burda et al. 2016) that tightens as k grows.

    ``noise`` (k, latent_dim) fixes the standard-normal draws behind z_i and shares them by
    all examples (common random numbers): each example's estimate is then a function of that
    example alone, whatever batch it is in, and is still an unbiased estimate of p(x).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if noise is not None and tuple(noise.shape) != (k, model.latent_dim):
        raise ValueError(f"noise must have shape (k, latent_dim) = {(k, model.latent_dim)}, got {tuple(noise.shape)}")
    was_training = model.training
    model.eval()
    per_example = max(1, math.prod(model.likelihood.param_shape(model.data_shape or tuple(x.shape[1:]))))
    estimates, errors = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        qz = model.q_z(xb)
        chunk = max(1, min(k, max_elements // (per_example * xb.shape[0])))
        lse1 = torch.full((xb.shape[0],), -math.inf, device=xb.device, dtype=torch.promote_types(xb.dtype, torch.float32))
        lse2 = lse1.clone()
        done = 0
        while done < k:
            n = min(chunk, k - done)
            log_w = _log_weights(model, xb, qz, n, None if noise is None else noise[done : done + n])  # (n, B)
            log_w = log_w if log_w.dtype == torch.float64 else log_w.float()
            lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
            done += n
        estimates.append(lse1 - math.log(k))
        ratio = k * torch.exp(lse2 - 2 * lse1)  # E[w^2] / E[w]^2
        errors.append(torch.sqrt((ratio - 1).clamp(min=0) / k))
    model.train(was_training)
    return LogMarginal(log_px=torch.cat(estimates), stderr=torch.cat(errors), k=k)


def loss(
    model: Model,
    x: torch.Tensor,
    beta: float = 1.0,
    n_samples: int = 1,
    free_bits: float = 0.0,
    iw_samples: int = 0,
) -> tuple[torch.Tensor, ELBOTerms]:
    """The scalar training loss (negative mean objective) and the per-example terms.

    ``iw_samples >= 2`` trains on the IWAE bound instead of the (beta-)ELBO; the
    returned terms then hold the ELBO estimated from the same draws, for logging.
    """
    if iw_samples and iw_samples > 1:
        qz = model.q_z(x)
        z = qz.rsample((iw_samples,))  # (k, B, H)
        log_px_z = model.p_x(z).log_prob(x)  # (k, B)
        log_pz, log_qz = model.p_z().log_prob(z), qz.log_prob(z)
        bound = torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(iw_samples)
        kl = kl_per_unit(qz, model.p_z(), z).sum(-1)
        terms = ELBOTerms(elbo=log_px_z.mean(0) - kl, log_px_z=log_px_z.mean(0), kl=kl, objective=bound)
    else:
        terms = elbo(model, x, beta=beta, n_samples=n_samples, free_bits=free_bits)
    return -terms.objective.mean(), terms
