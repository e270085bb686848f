"""Variational bounds on log p(x).

For one example x, with q(z|x) the encoder and p(z) the prior,

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))               (Kingma & Welling 2014)
    log p(x) >= IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)] >= ELBO   (Burda et al. 2016)

and IWAE_k increases to log p(x) as k grows. Every function returns per-example values in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)
from torch.nn import functional as F
from torch.nn.modules import module as _hooks

from .likelihoods import Bernoulli as _Bernoulli
from .likelihoods import Categorical as _CategoricalLikelihood
from .model import Model
from .nets import MLP
from .posteriors import draw


@dataclass
class ELBOTerms:
    """Per-example terms, each of shape (B,). ``elbo = log_px_z - kl`` is the true bound
    (whatever beta); ``objective`` is what training maximises (beta, free bits)."""

    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    objective: torch.Tensor


def _factorised(d: Distribution) -> bool:
    """Independent Gaussian units: the KL splits into one term per unit."""
    return isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 and isinstance(d.base_dist, Normal)


def kl_per_unit(qz: Distribution, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q || p) per latent unit, (B, H): closed form when torch knows it, otherwise a
    Monte Carlo estimate from the samples ``z`` (L, B, H) for factorised q and p. When q or p
    does not factorise (full covariance, IAF, mixture priors, two layers) the KL has no per-unit
    split and every entry is NaN; ``kl`` gives the total."""
    q_base = qz.base_dist if isinstance(qz, Independent) else qz
    p_base = pz.base_dist if isinstance(pz, Independent) else pz
    try:
        return kl_divergence(q_base, p_base).expand(q_base.batch_shape)
    except NotImplementedError:
        if not (_factorised(qz) and _factorised(pz)):
            return torch.full((*qz.batch_shape, *qz.event_shape), math.nan, device=z.device if z is not None else None)
        if z is None:
            z = qz.rsample((1,))
        return (q_base.log_prob(z) - p_base.log_prob(z)).mean(0)


UNIT_KL_SAMPLES = 100  # Monte Carlo draws per example of a per-unit KL without a closed form


def unit_marginals(d) -> Distribution | None:
    """The one-dimensional marginals of a distribution over z (..., H) as one distribution of batch
    shape (..., H): a diagonal Gaussian's own units, a full-covariance Gaussian's N(mu_j, Sigma_jj), a
    mixture of diagonal Gaussians' one-dimensional mixtures. None where they have no closed form
    (a flow, two stochastic layers, a prior of the user's own)."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 and isinstance(d.base_dist, Normal):
        return d.base_dist
    if isinstance(d, MultivariateNormal):
        return Normal(d.loc, d.variance.sqrt(), validate_args=False)
    if isinstance(d, MixtureSameFamily):
        parts = unit_marginals(d.component_distribution)  # (..., K, H)
        if isinstance(parts, Normal):
            logits = d.mixture_distribution.logits.unsqueeze(-2).expand(*parts.loc.shape[:-2], parts.loc.shape[-1], -1)
            return MixtureSameFamily(
                Categorical(logits=logits, validate_args=False),
                Normal(parts.loc.movedim(-2, -1), parts.scale.movedim(-2, -1), validate_args=False),
                validate_args=False,
            )
    return None


def _mixture_size(pz) -> int:
    return int(pz.mixture_distribution.logits.shape[-1]) if isinstance(pz, MixtureSameFamily) else 1


def units_add_up(qz, pz) -> bool:
    """Whether ``unit_kl``'s values are the KL's own terms (a diagonal Gaussian q and prior), which add
    up to KL(q || p); otherwise they are KLs between marginals, whose sum is not the KL."""
    p1 = unit_marginals(pz)
    return isinstance(qz, Independent) and isinstance(pz, Independent) and isinstance(p1, Normal)


def unit_kl(qz, pz, model: Model | None = None, samples: int = UNIT_KL_SAMPLES, max_elements: int = 2**24):
    """KL(q(z_j|x) || p(z_j)) for every latent unit j, (B, H), and the estimator in words.

    When q and p are diagonal Gaussians (closed form) these are the KL's own terms and add up to it.
    Otherwise they are the KLs between the one-dimensional marginals: in closed form between two
    Gaussians (a full-covariance q: their sum falls short of the KL by q's total correlation
    KL(q || prod_j q_j) >= 0), else the ``samples``-draw Monte Carlo mean of log q_j(z_j) - log p_j(z_j)
    (a mixture prior's marginals; their sum is not the KL). Where a marginal has no closed form (an
    IAF or two-layer q, a two-layer prior) the values are None and the string says why."""
    q1, p1 = unit_marginals(qz), unit_marginals(pz)
    if q1 is None or p1 is None:
        family = getattr(getattr(model, "posterior", None), "family", None)
        if family == "two-layer":
            why = "layers=2: the marginals of z1 under p(z2) p(z1|z2) and of z2 under q(z1|x) q(z2|z1) have no closed form"
        elif q1 is None:
            why = f"posterior={family or type(qz).__name__}: its marginals q(z_j|x) have no closed form"
        else:
            why = f"this prior ({type(pz).__name__}): its marginals p(z_j) have no closed form"
        return None, f"not defined for {why}; the active units (Var_x E_q[z_j|x]) are defined for every family"
    factorised = units_add_up(qz, pz)
    try:
        values = kl_divergence(q1, p1).expand(q1.batch_shape)
        how = "closed form"
    except NotImplementedError:
        per_draw = max(1, q1.batch_shape.numel() * _mixture_size(pz))
        chunk = max(1, min(samples, max_elements // per_draw))
        total = torch.zeros(q1.batch_shape, dtype=q1.loc.dtype, device=q1.loc.device)
        for done in range(0, samples, chunk):
            z = q1.sample((min(chunk, samples - done),))  # (S, B, H)
            total += (q1.log_prob(z) - p1.log_prob(z)).sum(0)
        values = total / samples
        how = f"{samples}-sample Monte Carlo"
    if factorised:
        return values, f"KL(q(z_j|x) || p(z_j)) per latent unit, {how}; the units add up to the KL"
    kind = "a full-covariance q" if isinstance(qz, MultivariateNormal) else "a prior that does not factorise"
    extra = "they add up to the KL minus q's total correlation" if isinstance(p1, Normal) else "their sum is not the KL"
    return values, (f"KL(q(z_j|x) || p(z_j)) between the one-dimensional marginals of {kind}, {how}; {extra}")


def kl(qz: Distribution, pz: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q || p) per example, (B,): closed form when torch knows it, else the Monte Carlo
    estimate mean_l [log q(z_l) - log p(z_l)] over the draws ``z`` (L, B, H) (one fresh draw without)."""
    if _factorised(qz) and _factorised(pz):
        return kl_per_unit(qz, pz, z).sum(-1)
    try:
        return kl_divergence(qz, pz).expand(qz.batch_shape)
    except NotImplementedError:
        if z is None:
            z = qz.rsample((1,))
        return (qz.log_prob(z) - pz.log_prob(z)).mean(0)


def elbo(
    model: Model,
    x: torch.Tensor,
    beta: float = 1.0,
    n_samples: int = 1,
    free_bits: float = 0.0,
    c: torch.Tensor | None = None,
    grad: bool | None = None,
) -> ELBOTerms:
    """Reparameterised ELBO with ``n_samples`` draws from q(z|x) and the KL in closed form.

    ``beta`` weights the KL in the objective (beta-VAE, Higgins et al. 2017).
    ``free_bits`` (nats per latent unit, Kingma et al. 2016) stops the objective from
    pushing a unit's batch-average KL below that floor. Neither changes ``terms.elbo``.
    When torch has no closed form (mixture priors, full covariance, IAF, two layers) the KL is
    the Monte Carlo estimate log q(z) - log p(z) on the same draws. ``c``: the condition of a
    conditional model (the bound on log p(x|c)).

    ``grad``: whether the terms carry an autograd graph. By default (None) they do when the
    model is in training mode (``model.train()``) and gradients are enabled; a model in eval
    mode, or a call under ``vaekit.batches.inference(model)`` / ``torch.no_grad()``, gives plain
    tensors, so evaluating keeps no graph alive. ``grad=True`` keeps the graph in eval mode
    (e.g. to optimise inputs or latents through a frozen model).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if grad is None:
        grad = model.training
    with torch.set_grad_enabled(bool(grad) and torch.is_grad_enabled()):
        return _elbo(model, x, beta, n_samples, free_bits, c)


def _elbo(
    model: Model, x: torch.Tensor, beta: float, n_samples: int, free_bits: float, c: torch.Tensor | None
) -> ELBOTerms:
    qz = model.q_z(x, c)
    pz = model.p_z(c)
    z = qz.rsample((n_samples,))  # (L, B, H)
    log_px_z = _mean_log_px_z(model, z, x, c)  # (B,); = model.p_x(z).log_prob(x), averaged over L
    if free_bits > 0:
        if not (_factorised(qz) and _factorised(pz)):
            raise ValueError("free bits need a KL per latent unit: use a diagonal posterior and the normal prior")
        kl_units = kl_per_unit(qz, pz, z)  # (B, H)
        kl_total = kl_units.sum(-1)  # (B,)
        # the floor acts on the batch mean of each unit, spread back over the examples
        floored = kl_units.mean(0).clamp(min=free_bits).sum()
        kl_term = kl_total - kl_total.mean() + floored
    else:
        kl_total = kl_term = kl(qz, pz, z)
    return ELBOTerms(elbo=log_px_z - kl_total, log_px_z=log_px_z, kl=kl_total, objective=log_px_z - beta * kl_term)


def _mean_log_px_z(model: Model, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``model.log_px_z(z, x, c).mean(0)``, the same values to float rounding; on a CPU without a graph
    (final metrics, ``evaluate``) through log p(x)'s own ``_log_px_z``, the fused paths of Bernoulli and
    categorical MLP decoders, else blocks of about ``CPU_LOGIT_BLOCK`` decoder outputs; less than one
    block's outputs in one plain call. (The default run's final metrics: 97 ms one draw at a time as
    before, 65 ms now.)
    All L draws at once make tensors of L x B decoder outputs (62 MB each for the default run's final
    metrics), whose fresh pages cost more than the work on them. (A GPU's caching allocator has no
    such cost, and there more, smaller kernels would only add launches.)"""
    if torch.is_grad_enabled() or z.device.type != "cpu" or z.dim() != 3:
        return model.log_px_z(z, x, c).mean(0)
    outputs = z.shape[0] * z.shape[1] * math.prod(model.likelihood.param_shape(tuple(model.data_shape or x.shape[1:])))
    if outputs < CPU_LOGIT_BLOCK:  # one block's worth (a validation batch): a plain call costs less setting up
        return model.log_px_z(z, x, c).mean(0)
    return _log_px_z(model, z, x, c).mean(0)


def _log_weights(
    model: Model,
    x: torch.Tensor,
    qz: Distribution,
    k: int,
    noise: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i|x) for k reparameterised draws: (k, B). With ``noise``
    (k, H) standard-normal draws, z_i = q's draw for noise_i (mu(x) + sigma(x) * noise_i for the
    diagonal Gaussian) for every example."""
    z, log_q = draw(qz, (k,), None if noise is None else noise.unsqueeze(1))  # (k, B, H)
    log_q = qz.log_prob(z) if log_q is None else log_q  # (k, B)
    return model.log_px_z(z, x, c) + model.p_z(c).log_prob(z) - log_q


def iwae_bound(model: Model, x: torch.Tensor, k: int = 5, c: torch.Tensor | None = None) -> torch.Tensor:
    """IWAE_k per example, (B,); differentiable, so it can be trained on. IWAE_1 = ELBO
    in expectation (with a Monte Carlo KL)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    log_w = _log_weights(model, x, model.q_z(x, c), k, c=c)
    return torch.logsumexp(log_w, 0) - math.log(k)


@dataclass
class LogMarginal:
    """Importance-sampled log p(x) per example with its Monte Carlo standard error."""

    log_px: torch.Tensor
    stderr: torch.Tensor
    k: int
    estimator: str = "importance sampling with q(z|x) as proposal (IWAE_k)"


# Decoder outputs held at once by log_marginal (and vaekit.evaluate) unless told otherwise:
# 2**24 float32 values are 64 MiB per tensor, a few hundred MiB with the temporaries. It is a
# fixed number, not read from the free memory, so the batch layout -- and with it the random
# draws -- is the same on every call and the same seed gives the same numbers.
DEFAULT_MAX_ELEMENTS = 2**24


def elements_per_draw(model: Model, x: torch.Tensor) -> int:
    """Values computed for one (draw, example) pair: the decoder's output, the per-element
    log-likelihood and a few latent-sized terms. The unit of ``max_elements``."""
    shape = tuple(model.data_shape or tuple(x.shape[1:]))
    return math.prod(model.likelihood.param_shape(shape)) + math.prod(shape) + 4 * model.latent_dim


def _diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    return Independent(Normal(loc, scale, validate_args=False), 1)


# one diagonal Gaussian per example, (loc, scale) each (N, latent_dim), or a mixture of them; a
# mixture component may also be a function (start, stop) -> the Distribution of examples start:stop
Component = tuple[torch.Tensor, torch.Tensor] | Callable[[int, int], Distribution]
Proposal = tuple[torch.Tensor, torch.Tensor] | Sequence[Component]


@torch.no_grad()
def log_marginal(
    model: Model,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    proposal: Proposal | None = None,
    noise: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
) -> LogMarginal:
    """log p(x) ~= logsumexp_i [log p(x, z_i) - log q(z_i|x)] - log k, z_i ~ q(z|x).

    Batched over examples and chunked over samples so that about ``max_elements`` values
    (see ``elements_per_draw``) are alive at a time, whatever k and the number of examples.
    ``batch_size=None`` picks the examples per batch from that budget (all k draws of a
    batch in one decoder call when they fit); a given ``batch_size`` is an upper bound.
    The k draws of a batch are made at once (k x B x latent_dim numbers), so the sample
    chunking never changes the result; the example batching does.

    ``proposal`` replaces the encoder: ``(loc, scale)``, each (N, latent_dim), a diagonal
    Gaussian per example; or a list of such pairs, a mixture whose components get k / C
    draws each, weighted by the mixture density (the balance heuristic of multiple
    importance sampling, Veach & Guibas 1995). A mixture that holds a wide component keeps
    the weights bounded when another component is narrower than the posterior. A mixture
    component may also be a function ``(start, stop)`` -> a Distribution over examples
    start:stop (batch shape (stop - start,)) with ``sample`` and an exact ``log_prob``, such as
    the model's own q(z|x) of any family.

    The standard error is the delta-method one, sqrt((E[w^2]/E[w]^2 - 1) / k), computed
    from running log-sums (for a mixture with stratified draws this errs on the large side).
    The estimate is IWAE_k: a lower bound on log p(x) in expectation (Burda et al. 2016)
    that tightens as k grows.

    ``noise`` (k, latent_dim) fixes the standard-normal draws behind z_i (encoder proposal
    only) and shares them by all examples (common random numbers): each example's estimate
    is then a function of that example alone, whatever batch it is in, and is still an
    unbiased estimate of p(x).

    ``c`` (N, condition_dim) or (N,) labels: the conditions of a conditional model; the estimate
    is then of log p(x|c). The proposal is the model's q, whatever its family (for two layers the
    joint q(z1|x) q(z2|z1)).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = x.shape[0]
    components = _check_proposal(proposal, n, model.latent_dim, k)
    if noise is not None:
        if components is not None:
            raise ValueError("noise applies to the encoder proposal; give either noise or proposal")
        if tuple(noise.shape) != (k, model.latent_dim):
            raise ValueError(
                f"noise must have shape (k, latent_dim) = {(k, model.latent_dim)}, got {tuple(noise.shape)}"
            )
    was_training = model.training
    model.eval()
    pairs = max(1, max_elements // elements_per_draw(model, x))  # (draw, example) pairs per decoder call
    batch = max(1, min(n, pairs // k, 4096))
    if batch_size is not None:
        batch = min(batch, batch_size)
    c = model.condition(c, n)
    prior = model.p_z() if c is None else None
    estimates, errors = [], []
    for start in range(0, n, batch):
        xb = x[start : start + batch]
        cb = None if c is None else c[start : start + batch]
        pz = prior if c is None else model.p_z(cb)
        if components is None:
            qz = model.q_z(xb, cb)
            # (k, B, H) and (k, B), drawn together (a flow's log q needs no inversion); common
            # random numbers when noise is given
            z_all, log_q_all = draw(qz, (k,), None if noise is None else noise.unsqueeze(1), reparameterised=False)
            log_q = qz.log_prob
        else:
            stop = start + xb.shape[0]
            qs = [
                part(start, stop) if callable(part) else _diagonal_normal(part[0][start:stop], part[1][start:stop])
                for part in components
            ]
            counts = [k // len(qs) + (j < k % len(qs)) for j in range(len(qs))]
            z_all = torch.cat([q.sample((m,)) for q, m in zip(qs, counts)])  # (k, B, H)
            log_share = torch.tensor([math.log(m / k) if m else -math.inf for m in counts], device=xb.device)

            log_q_all = None

            def log_q(z, qs=qs, log_share=log_share):  # log of the mixture density sum_c (k_c / k) q_c(z)
                return torch.logsumexp(torch.stack([q.log_prob(z) for q in qs]) + log_share.view(-1, 1, 1), 0)

        chunk = max(1, min(k, pairs // xb.shape[0]))
        lse1 = torch.full((xb.shape[0],), -math.inf, device=xb.device, dtype=torch.float64)
        lse2 = lse1.clone()
        for s in range(0, k, chunk):
            z = z_all[s : s + chunk]  # (n, B, H)
            log_qz = log_q(z) if log_q_all is None else log_q_all[s : s + chunk]
            # float64 for the sums: equal weights then give a standard error of ~0, not float32 noise
            log_w = (_log_px_z(model, z, xb, cb) + pz.log_prob(z) - log_qz).double()  # (n, B)
            lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        estimates.append(lse1 - math.log(k))
        ratio = k * torch.exp(lse2 - 2 * lse1)  # E[w^2] / E[w]^2
        errors.append(torch.sqrt((ratio - 1).clamp(min=0) / k))
    model.train(was_training)
    if components is None:
        what = "q(z|x)"
    elif len(components) == 1:
        what = "the given diagonal Gaussian" if not callable(components[0]) else "the given distribution"
    else:
        what = f"a {len(components)}-component mixture"
    out = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for a float64 model and data
    return LogMarginal(
        log_px=torch.cat(estimates).to(out),
        stderr=torch.cat(errors).to(out),
        k=k,
        estimator=f"importance sampling with {what} as proposal (IWAE_k), k={k}",
    )


def _log_px_z(model: Model, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``model.log_px_z(z, x, c)`` for draws z (n, B, H); for a Bernoulli decoder of a plain ``Model``,
    sum_d x_d l_d - softplus(l_d) over the logits l (equal to float rounding): through
    ``_bernoulli_mlp_log_px_z`` for a vaekit ``MLP`` decoder, else one batched product with x and one
    softplus pass instead of the elementwise BCE on x broadcast to every draw. Every other decoder goes
    through ``model.log_px_z`` on a CPU in blocks of draws of about ``CPU_LOGIT_BLOCK`` decoder outputs:
    a whole call's outputs are tens of MB, and fresh pages for them and each temporary made of them
    cost more than the arithmetic (the default digits run's log p(x) took 2.6x less time in blocks)."""
    plain = type(model).log_px_z is Model.log_px_z and type(model).decode_params is Model.decode_params
    lik = model.likelihood
    if c is None and plain and z.dim() == 3 and not model.condition_dim:
        fused = None
        if type(lik) is _Bernoulli:
            fused = _bernoulli_mlp_log_px_z(model.decoder, z, x)
        elif _plain_categorical(lik):
            fused = _categorical_mlp_log_px_z(model.decoder, lik, z, x)
        if fused is not None:
            return fused
    if z.device.type == "cpu" and z.dim() == 3:
        outputs = z.shape[1] * math.prod(model.likelihood.param_shape(tuple(model.data_shape or x.shape[1:])))
        step = max(1, CPU_LOGIT_BLOCK // max(1, outputs))  # draws per block
        if step < z.shape[0]:
            return torch.cat([_log_px_z_whole(model, z[s : s + step], x, c) for s in range(0, z.shape[0], step)])
    return _log_px_z_whole(model, z, x, c)


def _log_px_z_whole(model: Model, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """``_log_px_z`` for all draws z in one decoder call: the likelihood's ``log_prob_without_grad``, and for
    a Bernoulli decoder's logits one product with x."""
    lik = model.likelihood
    if type(model).log_px_z is not Model.log_px_z:  # a model with its own log p(x|z)
        return model.log_px_z(z, x, c)
    if c is not None or type(lik) is not _Bernoulli:
        return lik.log_prob_without_grad(model.decode_params(z) if c is None else model.decode_params(z, c), x)
    logits = model.decode_params(z)  # (n, B, *event)
    if logits.shape[1:] != x.shape or z.dim() != 3:
        return model.likelihood.log_prob(logits, x)
    flat = logits.reshape(*logits.shape[:2], -1)
    return torch.einsum("nbd,bd->nb", flat, x.reshape(x.shape[0], -1).to(flat.dtype)) - F.softplus(flat).sum(-1)


# activations applied elementwise: a constant pre-activation gives a constant output, which
# _bernoulli_mlp_log_px_z uses as the "1" of h1 = [h, 1]
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus)
# logits per row block on a CPU, about 4 MB of float32: the passes over a block's logits after their product
# read them from cache, not memory (bench/ab_log_marginal.py: 2**20 was 1.1x faster than 2**17-2**19 on the
# 784-100 decoder and equal on 784-400; one block per decoder call was 1.2x slower on both)
CPU_LOGIT_BLOCK = 2**20
_GROUP = 8  # logits per logarithm in _sum_softplus


class _MLPHead:
    """A vaekit ``MLP`` decoder seen from its last Linear: ``weight`` W1 = [W, b] (outputs x Hd + 1) and
    ``blocks`` of draws' last hidden layers h1 = [h, 1], so that the outputs are h1 @ W1^T, one matrix
    product with the bias inside it. When the last hidden layer is a Linear and an elementwise
    activation f, the "1" is an extra unit of that Linear (zero weights, bias 1) whose output f(1) is
    then a column of h (W1's bias column is divided by f(1)), and that Linear takes its own bias the
    same way, from a column of ones beside its input: no bias is copied into any product's output.
    ``of`` gives None for any other decoder, whose outputs then come from calling it."""

    def __init__(self, body, linear, with_ones, weight, append_ones) -> None:
        self.body, self.linear, self.with_ones, self.weight = body, linear, with_ones, weight
        self.append_ones = append_ones  # h1 = [h, 1] made after the body (no Linear there to make the 1)

    @classmethod
    def of(cls, decoder: torch.nn.Module, outputs: int) -> _MLPHead | None:
        layers = _plain_layers(decoder)
        if layers is None:
            return None
        *body, last = layers
        if type(last) is not nn.Linear or last.out_features != outputs:
            return None
        weight, bias = last._parameters["weight"], last._parameters["bias"]  # (D, Hd), (D,)
        linear = {id(m): (m._parameters["weight"], m._parameters["bias"]) for m in body if type(m) is nn.Linear}
        with_ones = None  # the Linear that takes its bias from a column of ones beside its input
        if bias is not None and len(body) >= 2 and type(body[-2]) is nn.Linear and type(body[-1]) in _ELEMENTWISE:
            pre_w, pre_b = linear[id(body[-2])]
            f_one = body[-1](pre_w.new_ones(1))  # f(1), the extra unit's output
            if bool(f_one.ne(0) & f_one.isfinite()):
                with_ones = id(body[-2])
                pre_b = pre_w.new_zeros(pre_w.shape[0]) if pre_b is None else pre_b
                extended = torch.cat(
                    [torch.cat([pre_w, pre_b.unsqueeze(1)], 1), pre_w.new_zeros(1, pre_w.shape[1] + 1)]
                )
                extended[-1, -1] = 1  # the extra unit: zero weights, bias 1
                linear[with_ones] = (extended, None)
                weight = torch.cat([weight, (bias / f_one).unsqueeze(1)], 1)  # W1; h's last column holds f(1)
        append_ones = bias is not None and with_ones is None
        if append_ones:
            weight = torch.cat([weight, bias.unsqueeze(1)], 1)  # W1 = [W, b], h1 = [h, 1] made in blocks
        return cls(body, linear, with_ones, weight, append_ones)

    def blocks(self, z: torch.Tensor, block: int):
        """(start, stop, h1) for the rows start:stop of the draws z (n, B, H) flattened, ``block`` rows
        at a time."""
        flat = z.reshape(-1, z.shape[-1])
        for start in range(0, flat.shape[0], block):
            stop = min(flat.shape[0], start + block)
            hidden, owned = flat[start:stop], False  # owned: a tensor made here, which may be overwritten
            for layer in self.body:
                kind = type(layer)
                if id(layer) == self.with_ones:
                    hidden, owned = torch.mm(_with_ones(hidden), self.linear[self.with_ones][0].t()), True
                elif kind is nn.Linear:
                    hidden, owned = F.linear(hidden, *self.linear[id(layer)]), True
                elif kind is nn.ReLU and owned:
                    hidden = torch.relu_(hidden)
                else:
                    hidden, owned = layer.forward(hidden), False
            yield start, stop, (_with_ones(hidden) if self.append_ones else hidden)


def _plain_categorical(lik) -> bool:
    """A categorical likelihood whose log p(x|z) is ``Categorical``'s own (a levels map at most)."""
    return (
        isinstance(lik, _CategoricalLikelihood)
        and type(lik).log_prob_without_grad is _CategoricalLikelihood.log_prob_without_grad
        and type(lik).log_prob is _CategoricalLikelihood.log_prob
        and type(lik)._logits is _CategoricalLikelihood._logits
    )


def _own_dot(hidden: torch.Tensor, per_example: torch.Tensor) -> torch.Tensor:
    """Each row's dot product with its own example's row of ``per_example`` (B, Hd1): the rows of a block
    are whole draws of the B examples in turn. Elementwise, not a product with every example's row
    and a gather: the default run's final metrics (B = 1437) made that 180x slower."""
    b = per_example.shape[0]
    return hidden.reshape(-1, b, hidden.shape[1]).mul(per_example).sum(-1).reshape(-1)


def _row_blocks(z: torch.Tensor, b: int, outputs: int) -> int:
    """Rows (draws x examples) per block: whole examples, about ``CPU_LOGIT_BLOCK`` outputs on a CPU."""
    rows = z.shape[0] * b
    return rows if z.device.type != "cpu" else max(b, CPU_LOGIT_BLOCK // outputs // b * b)


def _bernoulli_mlp_log_px_z(decoder: torch.nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """sum_d x_d l_d - softplus(l_d) for the logits l = W h + b of a vaekit ``MLP`` decoder (last hidden
    layer h), z (n, B, H) and x (B, D); None for any other decoder.

    The logits are one product h1 @ W1^T with the bias inside (``_MLPHead``), and x_b . l = (W1^T x_b) . h1
    is one dot product over the hidden units per draw. On a CPU the draws go in row blocks of about
    ``CPU_LOGIT_BLOCK`` logits, so that the passes over a block's logits after their product stay in
    cache. The sum of softplus is computed from -l (``_sum_softplus``). Equal to the decoder's own logits
    through the same sum to float rounding."""
    n, b = z.shape[:2]
    d = x[0].numel()
    head = _MLPHead.of(decoder, d) if x.shape[0] == b else None
    if head is None:
        return None
    weight = head.weight
    x_w = x.reshape(b, d).to(weight.dtype) @ weight  # (B, Hd1): rows W1^T x_b
    neg_weight_t = weight.t().neg()  # the blocks' logits are made as -l
    block = _row_blocks(z, b, d)
    out = torch.empty(n * b, dtype=weight.dtype, device=z.device)
    neg_logits = torch.empty(min(block, n * b), d, dtype=weight.dtype, device=z.device)
    for start, stop, hidden in head.blocks(z, block):
        x_dot_l = _own_dot(hidden, x_w)
        block_neg = torch.mm(hidden, neg_weight_t, out=neg_logits[: stop - start])
        out[start:stop] = x_dot_l - _sum_softplus(block_neg, hidden, weight)
    return out.view(n, b)


def _categorical_mlp_log_px_z(decoder: torch.nn.Module, lik, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """sum_e l_{x_e, e} - log sum_k exp(l_{k, e}) for the logits of a vaekit ``MLP`` decoder of a
    categorical likelihood (K classes, E values, logits laid out class-major as the likelihood reads
    them), z (n, B, H) and x (B, *event); None for any other decoder.

    - The observed classes' logits sum to h1 . (the sum of their rows of W1): ``embedding_bag`` sums
      each example's rows once, and one dot product over the hidden units gives each draw's sum.
    - The exponentials come from logits made in base 2: the product uses W1 log2(e), and ``exp2``
      is 3-4x faster than ``exp`` on these CPUs, exact to about one float rounding like it. Each block
      of them is written into one buffer, so no fresh pages are touched for them.
    - A pixel whose sum of exponentials overflows or is no longer a normal float (as in
      ``Categorical.log_prob_without_grad``) sends its row to torch's logsumexp of the logits.

    Equal to ``log_prob_without_grad`` of the decoder's own outputs to float rounding."""
    n, b = z.shape[:2]
    k, e = lik.num_classes, x[0].numel()
    head = _MLPHead.of(decoder, k * e) if x.shape[0] == b else None
    if head is None:
        return None
    weight = head.weight  # (K E, Hd1); row c E + j is class c of value j
    rows_seen = lik.index(x).reshape(b, e) * e + torch.arange(e, device=x.device)
    picked_w = F.embedding_bag(rows_seen, weight, mode="sum")  # (B, Hd1)
    weight2_t = (weight * (1 / math.log(2))).t()  # logits in base 2: l log2(e)
    block = _row_blocks(z, b, k * e)
    out = torch.empty(n * b, dtype=weight.dtype, device=z.device)
    buffer = torch.empty(min(block, n * b), k * e, dtype=weight.dtype, device=z.device)
    tiny = torch.finfo(weight.dtype).tiny * 2**24  # a sum below it has lost digits
    for start, stop, hidden in head.blocks(z, block):
        r = stop - start
        picked = _own_dot(hidden, picked_w)
        sums = torch.mm(hidden, weight2_t, out=buffer[:r]).exp2_().view(r, k, e).sum(1)  # (r, E)
        low = sums.amin(1)
        lse = sums.log_().sum(1)
        bad = ~(low > tiny) | ~lse.isfinite()  # a sum that lost digits, or one that overflowed
        if bool(bad.any()):
            redo = bad.nonzero().squeeze(1)
            logits = (hidden[redo] @ weight.t()).view(-1, k, e)
            lse[redo] = logits.logsumexp(1).sum(1)
        out[start:stop] = picked - lse
    return out.view(n, b)


def _with_ones(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([h, h.new_ones(h.shape[0], 1)], 1)


def _sum_softplus(neg_logits: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_d softplus(l_d) per row, from ``neg_logits`` = -l (r, D), which it overwrites.

    softplus(l) = -log sigmoid(-l), so the sum is -sum_g log prod_{d in g} sigmoid(-l_d), one logarithm
    per group g of ``_GROUP`` logits. Every factor is in (0, 1], so a product is exact to float rounding
    while it stays a normal float; the rare row with a product below that (logits summing past about
    80 in a group of float32 ones) is recomputed with torch's softplus from its hidden units (rows of
    ``hidden``, weights ``weight``)."""
    d = neg_logits.shape[1]
    sig = neg_logits.sigmoid_()
    groups = _GROUP if d >= _GROUP else 1
    whole = d // groups * groups
    products = sig[:, :whole].unflatten(1, (groups, d // groups)).prod(1)  # (r, D / groups)
    out = products.log().sum(1).neg_()
    if whole < d:
        out -= sig[:, whole:].log().sum(1)
    # a product that is no longer a normal float (2**24 of headroom) has lost digits: those rows exactly
    low = products.amin(1) < torch.finfo(products.dtype).tiny * 2**24
    if bool(low.any()):
        rows = low.nonzero().squeeze(1)
        out[rows] = F.softplus(hidden[rows] @ weight.t()).sum(1)
    return out


def _check_proposal(proposal, n: int, latent_dim: int, k: int):
    if proposal is None:
        return None
    components = [proposal] if isinstance(proposal[0], torch.Tensor) else list(proposal)
    if not components:
        raise ValueError("proposal needs at least one (loc, scale) pair")
    for part in components:
        if callable(part):
            continue
        loc, scale = part
        if loc.shape != (n, latent_dim) or scale.shape != loc.shape:
            raise ValueError(
                f"proposal needs loc and scale of shape ({n}, {latent_dim}), "
                f"got {tuple(loc.shape)} and {tuple(scale.shape)}"
            )
    if len(components) > k:
        raise ValueError(f"a {len(components)}-component proposal needs k >= {len(components)}, got {k}")
    return components


def loss(
    model: Model,
    x: torch.Tensor,
    beta: float = 1.0,
    n_samples: int = 1,
    free_bits: float = 0.0,
    iw_samples: int = 0,
    c: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ELBOTerms]:
    """The scalar training loss (negative mean objective) and the per-example terms.

    ``iw_samples >= 2`` trains on the IWAE bound instead of the (beta-)ELBO; the
    returned terms then hold the ELBO estimated from the same draws, for logging.
    """
    if iw_samples and iw_samples > 1:
        qz, pz = model.q_z(x, c), model.p_z(c)
        z, log_qz = draw(qz, (iw_samples,))  # (k, B, H)
        log_qz = qz.log_prob(z) if log_qz is None else log_qz  # (k, B)
        log_px_z = model.log_px_z(z, x, c)  # (k, B)
        log_pz = pz.log_prob(z)
        bound = torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(iw_samples)
        kl_total = kl(qz, pz, z)
        terms = ELBOTerms(elbo=log_px_z.mean(0) - kl_total, log_px_z=log_px_z.mean(0), kl=kl_total, objective=bound)
    else:
        terms = elbo(model, x, beta=beta, n_samples=n_samples, free_bits=free_bits, c=c)
    return -terms.objective.mean(), terms


# -- the training step's fast path ------------------------------------------------------------
def fast_step_supported(model: Model, free_bits: float = 0.0, iw_samples: int = 0, c=None) -> bool:
    """Whether ``fast_loss`` computes this model's training loss: an unconditional ``Model`` with the
    diagonal Gaussian posterior and the N(0, I) prior, trained on the (beta-)ELBO without free bits.
    Every likelihood qualifies (its own ``log_prob`` gives log p(x|z)); anything else takes ``loss``."""
    from .posteriors import Diagonal
    from .priors import StandardNormal

    return (
        type(model).q_z is Model.q_z
        and type(model).p_z is Model.p_z
        and type(model).log_px_z is Model.log_px_z
        and type(model).decode_params is Model.decode_params
        and type(model.posterior) is Diagonal
        and type(model.prior) is StandardNormal
        and model.condition_dim == 0
        and c is None
        and not free_bits
        and not (iw_samples and iw_samples > 1)
    )


def fast_loss(
    model: Model, x: torch.Tensor, beta: float = 1.0, n_samples: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss(model, x, beta, n_samples)`` for a model ``fast_step_supported`` accepts, from tensors alone:
    z = mu + sigma * eps (the same random numbers as ``q_z(x).rsample``), the closed-form
    KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1) / 2 - log sigma, and log p(x|z) from the
    likelihood (for Bernoulli, -BCE-with-logits summed over the batch in one operation). No
    Distribution objects and no per-example vectors are built. Returns the loss (the negative mean
    objective) and, detached, the batch sums of (objective, ELBO, log p(x|z), KL): shape (4,)."""
    lik = model.likelihood
    if lik.event_shape is None:
        lik.bind(tuple(x.shape[1:]))
    h = _forward(model.encoder, x)
    if h is None:
        h = model.encoder(x)
    if h.shape[-1] != 2 * model.latent_dim:
        model.q_z(x)  # raises the model's own error for an encoder of the wrong width
    if h.dtype in (torch.float16, torch.bfloat16):
        h = h.float()
    loc, log_scale = h.chunk(2, dim=-1)
    scale = log_scale.exp()
    if n_samples == 1:
        eps = torch.empty_like(loc).normal_()  # what Normal.rsample() draws
        params = _forward(model.decoder, torch.addcmul(loc, eps, scale))  # z = mu + sigma * eps
    else:
        eps = torch.empty((n_samples, *loc.shape), dtype=loc.dtype, device=loc.device).normal_()
        params = None
    if params is None:
        params = model.decode_params(torch.addcmul(loc, eps, scale))
    elif params.dtype in (torch.float16, torch.bfloat16):
        params = params.float()
    if type(lik) is _Bernoulli and params.shape == x.shape:
        nll = torch.nn.functional.binary_cross_entropy_with_logits(params, x, reduction="sum")
    else:
        nll = lik.log_prob(params, x).sum().neg()
    if n_samples != 1:
        nll = nll / n_samples
    # 2 KL + n = sum(sigma^2 + mu^2 - 2 log sigma), n = B * latent_dim
    n = loc.numel()
    twice_kl = torch.addcmul(loc * loc, scale, scale).sub_(log_scale, alpha=2).sum()
    # loss = (nll + beta KL) / B; the sums of (objective, ELBO, log p(x|z), KL) from (nll, 2 KL + n) in one op
    loss = torch.add(nll, twice_kl, alpha=0.5 * beta).sub_(0.5 * beta * n).div_(x.shape[0])
    offsets, matrix = _mix(n, beta, nll)
    # elementwise, not a matmul: autocast (--amp) leaves it in float32
    sums = torch.addcmul(offsets, torch.stack([nll, twice_kl]).detach().view(2, 1), matrix).sum(0)
    return loss, sums


_MIX_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mix(n: int, beta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (2, 4), matrix (2, 4)): (nll, 2 KL + n) -> (objective, ELBO, log p(x|z), KL), made once per
    (n, beta, dtype, device) and kept (a few at a time: the full batches' and the last one's)."""
    key = (n, float(beta), like.dtype, like.device)
    found = _MIX_CACHE.get(key)
    if found is None:
        if len(_MIX_CACHE) >= 8:  # a KL warm-up changes beta every step
            _MIX_CACHE.clear()
        offsets = torch.tensor([[0.5 * beta * n, 0.5 * n, 0.0, -0.5 * n], [0.0] * 4], dtype=like.dtype)
        matrix = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [-0.5 * beta, -0.5, 0.0, 0.5]], dtype=like.dtype)
        found = _MIX_CACHE[key] = (offsets.to(like.device), matrix.to(like.device))
    return found


def _forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``net(x)`` for a 2-d batch x and a vaekit ``MLP`` with flat input and output and no hooks anywhere,
    as its layers' ``forward`` one after the other: the same operations without the module-call and
    reshape overhead per layer (about a tenth of a small model's step). None for any other net."""
    layers = _plain_layers(net) if x.dim() == 2 else None
    if layers is None:
        return None
    for layer in layers:
        kind = type(layer)
        if kind is nn.Linear:  # nn.Linear.forward without the attribute lookups
            x = F.linear(x, layer._parameters["weight"], layer._parameters["bias"])
        elif kind is nn.ReLU and not layer.inplace:
            x = torch.relu(x)
        else:
            x = layer.forward(x)
    return x


def _plain_layers(net: torch.nn.Module):
    if type(net) is not MLP or len(net.in_shape) != 1 or len(net.out_shape) != 1:
        return None
    if (
        _hooks._global_forward_hooks
        or _hooks._global_forward_pre_hooks
        or _hooks._global_backward_hooks
        or _hooks._global_backward_pre_hooks
    ):
        return None
    seq = net._modules["net"]
    layers = seq._modules.values()
    for m in (net, seq, *layers):
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return None
    return layers
