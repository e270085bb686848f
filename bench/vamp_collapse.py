"""Why the VampPrior row of bench_variants.py collapses on binarised digits: the same VAE written
again in plain torch (no vaekit model, objective or trainer code), with the prior swapped.

Each variant trains the bench's network (tanh MLPs 64-100-100-2x10 and 10-100-100-64, Bernoulli
decoder, Adam lr 1e-3, batch 100, the bench's split) and prints the training KL by epoch and the test
ELBO (one draw per image, nats) after the last epoch:

  gauss       a learned diagonal Gaussian prior N(m, diag s^2), single-draw Monte Carlo KL
  gauss-cf    the same prior, closed-form KL
  vamp        VampPrior with K pseudo-inputs (0.5 + 0.01 noise, as vaekit), Monte Carlo KL
  vamp-cf     VampPrior with K = 1: one Gaussian q(z|u), so the KL is in closed form
  vamp-data   VampPrior, pseudo-inputs = the first K training images, never updated
  vamp-copy   the pseudo-inputs go through a copy of the encoder (its own weights, started equal)
  vamp-beta   VampPrior trained with the KL weighted by --beta (e.g. 0.2)

    PYTHONPATH=src python bench/vamp_collapse.py vamp gauss vamp-cf vamp-copy --epochs 50
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_variants import digits_split  # noqa: E402

H = 10


def log_normal(z, m, log_s):
    return (-0.5 * ((z - m) / log_s.exp()) ** 2 - log_s - 0.5 * math.log(2 * math.pi)).sum(-1)


def mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, n_out))


def train(kind: str, epochs: int, k: int, beta: float) -> None:
    x_train, x_test = digits_split()
    torch.manual_seed(0)
    enc, dec = mlp(64, 2 * H), mlp(H, 64)
    k = 1 if kind == "vamp-cf" else k
    u = nn.Parameter(0.5 + 0.01 * torch.randn(k, 64))
    if kind == "vamp-data":
        u = x_train[:k].clone()  # real digits, not trained
    prior_net = copy.deepcopy(enc) if kind == "vamp-copy" else enc
    m_p, log_s_p = nn.Parameter(torch.zeros(H)), nn.Parameter(torch.zeros(H))
    params = [*enc.parameters(), *dec.parameters(), m_p, log_s_p]
    params += [u] if isinstance(u, nn.Parameter) else []
    params += list(prior_net.parameters()) if prior_net is not enc else []
    opt = torch.optim.Adam(params, lr=1e-3)
    weight = beta if kind == "vamp-beta" else 1.0

    def terms(x):
        m, log_s = enc(x).chunk(2, -1)
        z = m + log_s.exp() * torch.randn_like(m)
        rec = -nn.functional.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        if kind.startswith("gauss"):
            mp, lp = m_p, log_s_p
        else:
            mp, lp = prior_net(u).chunk(2, -1)  # (K, H)
        if kind in ("gauss-cf", "vamp-cf"):
            mp, lp = mp.reshape(H), lp.reshape(H)
            kl = (lp - log_s + (log_s.exp() ** 2 + (m - mp) ** 2) / (2 * (2 * lp).exp()) - 0.5).sum(-1)
        elif kind.startswith("gauss"):
            kl = log_normal(z, m, log_s) - log_normal(z, mp, lp)
        else:
            log_p = torch.logsumexp(log_normal(z.unsqueeze(1), mp, lp), 1) - math.log(mp.shape[0])
            kl = log_normal(z, m, log_s) - log_p
        return rec, kl

    g = torch.Generator().manual_seed(0)
    shown = {1, 2, 3, 5, 10, 20, 50, 100, 200, epochs}
    line = []
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x_train), generator=g)
        total = 0.0
        for i in range(0, len(x_train), 100):
            rec, kl = terms(x_train[perm[i : i + 100]])
            opt.zero_grad()
            (-(rec - weight * kl).mean()).backward()
            opt.step()
            total += float(kl.detach().sum())
        if epoch in shown:
            line.append(f"{epoch}:{total / len(x_train):.3f}")
    with torch.no_grad():
        torch.manual_seed(1)
        rec, kl = terms(x_test)
    label = f"{kind} (beta {beta})" if kind == "vamp-beta" else kind
    print(f"{label:<18} KL by epoch {' '.join(line)}; test ELBO {float((rec - kl).mean()):.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "kinds", nargs="+", choices=["gauss", "gauss-cf", "vamp", "vamp-cf", "vamp-data", "vamp-copy", "vamp-beta"]
    )
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--k", type=int, default=50, help="pseudo-inputs")
    ap.add_argument("--beta", type=float, default=0.2, help="KL weight of vamp-beta")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    for kind in args.kinds:
        train(kind, args.epochs, args.k, args.beta)


if __name__ == "__main__":
    main()
