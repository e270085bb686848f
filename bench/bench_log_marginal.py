"""Benchmark: vaekit.log_marginal (batched over examples, chunked over samples) against a plain
per-example loop, for k importance samples on N examples of 784 binary dimensions.

    python bench/bench_log_marginal.py             # N=10000, k=1000; times subsets (about 2 minutes on 2 CPU cores)
    python bench/bench_log_marginal.py --full      # times log_marginal on all N (about 12 minutes on 2 busy CPU cores)
    python bench/bench_log_marginal.py --device cuda --full
    python bench/bench_log_marginal.py --n 400 --time-n 200 --loop-n 20    # a quick look
    OMP_NUM_THREADS=1 python bench/bench_log_marginal.py --n 400 --time-n 400 --loop-n 5 --k 500 --rounds 5

Besides examples/s, each row gives the fraction of the decoder's matmul bound: the time its GEMMs
alone take for the same N x k draws (timed at log_marginal's shapes: the faster of its whole decoder
call and the row blocks it computes the logits in on a CPU) over the method's time.

The model is a small MLP VAE with a Bernoulli decoder (784 -> 100 -> 2x8, 8 -> 100 -> 784) with
random weights; the data are random binary vectors made here (the cost does not depend on training).
The per-example loop -- for each x: encode, draw its k z's, decode them in one call, logsumexp -- is
timed on ``--loop-n`` examples and extrapolated linearly to N. Without ``--full``, log_marginal is
timed on the first ``--time-n`` examples and extrapolated the same way: its batches have a fixed
size, so its work is linear in N. The table says which rows are measured and which extrapolated.
Both compute the same estimator; the script checks that log_marginal gives the estimates of torch's distributions on the same draws.

``--rounds R`` times log_marginal, the plain batched loop and the decoder's GEMMs in turn, R times,
and reports each one's median, so that a machine whose speed drifts (other work on it) shifts all of
them alike. The last lines split log_marginal's time per 1000 draws into its parts, timed alone at
its shapes: the GEMMs and the rest.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

import vaekit
from vaekit.nets import MLP


def build(dims: int, latent: int, hidden: int, device: str, classes: int = 0) -> vaekit.Model:
    """The benchmark's model: Bernoulli, or with ``classes`` a categorical likelihood (the digits run's kind)."""
    torch.manual_seed(0)
    lik = vaekit.likelihoods.Categorical(classes) if classes else vaekit.likelihoods.Bernoulli()
    encoder = MLP(dims, 2 * latent, hidden=(hidden,), activation="relu")
    decoder = MLP(latent, dims * (classes or 1), hidden=(hidden,), activation="relu")
    model = vaekit.Model(encoder, decoder, lik, latent_dim=latent, data_shape=(dims,))
    return model.to(device).eval()


@torch.no_grad()
def per_example_loop(model: vaekit.Model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain way: one example at a time, its k draws in one decoder call."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        qz = model.q_z(xi)
        z = qz.sample((k,))  # (k, 1, H)
        log_w = model.p_x(z).log_prob(xi) + model.p_z().log_prob(z) - qz.log_prob(z)  # (k, 1)
        out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.cat(out)


@torch.no_grad()
def same_draws_reference(model: vaekit.Model, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """log p(x) estimated on the draws z = mu(x) + sigma(x) * noise_i that log_marginal takes for
    ``noise``, through torch's distributions, the log-mean-exp in float64."""
    qz = model.q_z(x)
    z = qz.base_dist.loc + qz.base_dist.scale * noise.unsqueeze(1)  # (k, B, H)
    log_w = model.p_x(z).log_prob(x) + model.p_z().log_prob(z) - qz.log_prob(z)
    return torch.logsumexp(log_w.double(), 0) - math.log(noise.shape[0])


@torch.no_grad()
def plain_batched_loop(model: vaekit.Model, x: torch.Tensor, k: int, batch: int = 20) -> torch.Tensor:
    """The plain batched way: ``batch`` examples x k draws per decoder call, torch distributions."""
    out = []
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch]
        qz = model.q_z(xb)
        z = qz.sample((k,))  # (k, B, H)
        log_w = model.p_x(z).log_prob(xb) + model.p_z().log_prob(z) - qz.log_prob(z)  # (k, B)
        out.append(torch.logsumexp(log_w.double(), 0) - math.log(k))
    return torch.cat(out)


def decoder_gemm_seconds(model: vaekit.Model, rows: int, block: int, reps: int = 5) -> float:
    """Seconds for the decoder's matmuls alone on ``rows`` latent draws, at their real shapes, in row
    blocks of ``block`` draws (best of ``reps``)."""
    weights = [m.weight.detach() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    block = min(block, rows)
    z = torch.randn(block, weights[0].shape[1], device=weights[0].device)
    ins = [z] + [torch.randn(block, w.shape[0], device=w.device) for w in weights[:-1]]
    outs = [torch.empty(block, w.shape[0], device=w.device) for w in weights]
    sizes = [min(block, rows - start) for start in range(0, rows, block)]

    def once():
        for size in sizes:
            for a, w, o in zip(ins, weights, outs):
                torch.mm(a[:size], w.t(), out=o[:size])

    once()
    best = math.inf
    for _ in range(reps):
        _sync(weights[0].device)
        start = time.perf_counter()
        once()
        _sync(weights[0].device)
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="examples")
    p.add_argument("--k", type=int, default=1000, help="importance samples per example")
    p.add_argument("--dims", type=int, default=784)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument(
        "--classes", type=int, default=0, help="a categorical likelihood of this many classes (0: Bernoulli)"
    )
    p.add_argument("--loop-n", type=int, default=100, help="examples the per-example loop is timed on")
    p.add_argument("--time-n", type=int, default=1000, help="examples log_marginal is timed on (without --full)")
    p.add_argument("--full", action="store_true", help="time log_marginal on all N examples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=1, help="rotating rounds of the timed contenders (medians)")
    args = p.parse_args()

    model = build(args.dims, args.latent, args.hidden, args.device, args.classes)
    g = torch.Generator().manual_seed(1)
    if args.classes:
        x = torch.randint(0, args.classes, (args.n, args.dims), generator=g).float().to(args.device)
    else:
        x = (torch.rand(args.n, args.dims, generator=g) > 0.5).float().to(args.device)
    per = vaekit.objectives.elements_per_draw(model, x)
    budget = vaekit.objectives.DEFAULT_MAX_ELEMENTS
    batch = max(1, min(args.n, budget // per // args.k, 4096))
    print(
        f"log p(x) with k={args.k} on N={args.n} examples of {args.dims} dims; model {args.dims}-{args.hidden}-"
        f"2x{args.latent} / {args.latent}-{args.hidden}-{args.dims * (args.classes or 1)} "
        f"({f'categorical, {args.classes} classes' if args.classes else 'Bernoulli'}); device {args.device}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"log_marginal budget: {budget} values ({per} per draw) -> {batch} examples x {args.k} draws per decoder call"
    )

    torch.manual_seed(2)
    vaekit.log_marginal(model, x[: min(args.n, 2 * batch)], k=args.k)  # warm-up
    torch.manual_seed(2)
    loop_x = x[: args.loop_n]
    per_example_loop(model, loop_x[:5], args.k)  # warm-up

    timed_x = x if args.full else x[: min(args.n, args.time_n)]
    plain_x = x[: min(args.n, args.time_n)]
    chunk_rows = batch * min(args.k, max(1, budget // per // batch))
    outputs = args.dims * (args.classes or 1)  # decoder outputs per draw
    block_rows = chunk_rows if args.device != "cpu" else max(1, vaekit.objectives.CPU_LOGIT_BLOCK // outputs)
    seconds: dict[str, list[float]] = {"batched": [], "plain": [], "gemm": []}
    for _ in range(max(1, args.rounds)):  # rotating rounds: every contender once per round
        torch.manual_seed(3)
        batched, t_part = timed(lambda: vaekit.log_marginal(model, timed_x, k=args.k), args.device)
        seconds["batched"].append(t_part)
        torch.manual_seed(3)
        plain, t_plain_part = timed(lambda: plain_batched_loop(model, plain_x, args.k), args.device)
        seconds["plain"].append(t_plain_part)
        # the bound: the GEMMs at the faster of two shapes, log_marginal's whole decoder call and the row
        # blocks it computes the logits in on a CPU
        seconds["gemm"].append(min(decoder_gemm_seconds(model, chunk_rows, size) for size in (chunk_rows, block_rows)))
    t_part, t_plain_part, t_gemm = (statistics.median(seconds[key]) for key in ("batched", "plain", "gemm"))
    t_batched = t_part * args.n / timed_x.shape[0]
    torch.manual_seed(3)
    looped, t_loop_part = timed(lambda: per_example_loop(model, loop_x, args.k), args.device)
    t_loop = t_loop_part * args.n / loop_x.shape[0]

    # the same estimator: on the same k draws, log_marginal and torch's distributions in float64 give the
    # same estimates to float rounding (the two loops' own draws differ, and on an untrained model the
    # weights' heavy tails put their estimates apart by more than the delta-method standard error)
    noise = torch.randn(args.k, model.latent_dim, device=x.device)
    same = vaekit.log_marginal(model, loop_x, k=args.k, noise=noise).log_px.double()
    largest = float((same - same_draws_reference(model, loop_x, noise)).abs().max())

    t_plain = t_plain_part * args.n / plain_x.shape[0]
    # the decoder's matmul bound: its GEMMs on N x k draws, at log_marginal's shapes
    t_bound = t_gemm * args.n * args.k / chunk_rows

    rows = [
        (
            "vaekit.log_marginal (batched + chunked)",
            f"{t_batched:.1f} s (measured, all {args.n})"
            if timed_x.shape[0] == args.n
            else f"{t_batched:.1f} s (timed on {timed_x.shape[0]}, x {args.n / timed_x.shape[0]:g})",
            args.n / t_batched,
            t_bound / t_batched,
        ),
        (
            "plain batched loop (20 examples x k draws per call)",
            f"{t_plain:.1f} s (timed on {plain_x.shape[0]}, x {args.n / plain_x.shape[0]:g})",
            args.n / t_plain,
            t_bound / t_plain,
        ),
        (
            "per-example loop",
            f"{t_loop:.1f} s (timed on {loop_x.shape[0]}, x {args.n / loop_x.shape[0]:g})",
            args.n / t_loop,
            t_bound / t_loop,
        ),
    ]
    print()
    print(f"| method | time for N={args.n}, k={args.k} | examples / s | fraction of the decoder's matmul bound |")
    print("|---|---|---|---|")
    for name, t, rate, frac in rows:
        print(f"| {name} | {t} | {rate:.1f} | {frac:.2f} |")
    print()
    print(
        f"mean log p(x) (batched): {batched.log_px.mean():.3f} nats, largest standard error {batched.stderr.max():.4f}; "
        f"on the same {args.k} draws of {loop_x.shape[0]} examples, log_marginal against torch distributions "
        f"in float64: largest difference {largest:.2g} nats"
    )
    print(
        f"log_marginal vs the plain batched loop: {t_plain / t_batched:.2f}x its speed; load average "
        f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(f"batched throughput: {args.n * args.k / t_batched:,.0f} decoded draws / s")
    per_1000 = 1000 / (args.n * args.k)
    whole, gemms = t_batched * per_1000, t_bound * per_1000
    print(
        f"per 1000 draws: log_marginal {whole * 1e3:.2f} ms = decoder GEMMs {gemms * 1e3:.2f} ms + the rest "
        f"{(whole - gemms) * 1e3:.2f} ms (decoder calls of {chunk_rows} draws, logits in blocks of {block_rows}; "
        f"medians of {max(1, args.rounds)} rounds)"
    )


if __name__ == "__main__":
    main()
