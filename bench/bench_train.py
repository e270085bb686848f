"""Training speed, memory and quality of vaekit beside the code people would otherwise write.

Every contender trains the same model with the same math: an MLP VAE 784-400-20 (ReLU; the
encoder gives the posterior mean and log scale, the decoder Bernoulli logits), the ELBO with one
reparameterised sample, batch 128, Adam with learning rate 1e-3, for the same number of epochs
on the same data:

  vaekit  vaekit.fit (data on the device, index batches, fused Adam)
  loop    a conventional PyTorch loop: DataLoader(TensorDataset, shuffle=True), torch.optim.Adam,
          loss.item() per step for the epoch loss (as in pytorch/examples' vae)
  pyro    Pyro's SVI with Trace_ELBO, model/guide as in Pyro's VAE tutorial, DataLoader batches,
          pyro.optim.Adam, validation checks off (its fastest setting)
  pythae  pythae's VAE (reconstruction_loss="bce") with its BaseTrainer, the same networks

The data (made here, offline, from a fixed seed): 60,000 training and 10,000 test binary 28 x 28
"stroke" images; each image draws three line segments with end points uniform in [4, 24]^2 and
turns on the pixels within 1.3 px of any of them (about 11% of the pixels are on). Their
intrinsic dimension is 12, so a 20-D latent can learn them.

Each contender runs in its own process (so peak memory is its own): peak RSS from
getrusage, and the increase over the process's RSS just before training. The contenders take
turns, ``--repeats`` rounds in a rotating order, and the table shows each one's best round (wall
clock) and its least CPU time: on a shared machine that drifts, this keeps the ratios fair. The test ELBO is each
library's own one-sample estimate, in nats per example (Pyro's has a Monte Carlo KL, the others
the closed form; all estimate the same bound).

Also measured: this machine's float32 matmul peak (best of several 2048^3 products) and the
fraction of it vaekit's training step reaches, with FLOPs per example counted from the layer
shapes as

    sum over linear layers of 2*in*out * (1 forward + 1 weight gradient + 1 input gradient),
    minus the input gradient of the first layer (the data need none)

(biases, activations, the likelihood and Adam are left out, so the fraction is a slight
underestimate); torch.compile against eager vaekit in one process (the second of two epochs
each, and the compilation time); log_marginal's throughput; and how vaekit's time and peak memory grow with the
number of examples N (data given as a memory-mapped .npy) and with the batch size. Every
contender's time includes its one-time set-up: creating the first torch optimiser imports
torch._dynamo, several seconds on a slow machine, which the "set-up" column of the N table shows.

    python bench/bench_train.py                       # default: 2 epochs, all sections
    python bench/bench_train.py --epochs 5 --only vaekit,loop
    pip install -e ".[bench]"                         # Pyro and pythae (skipped with a note if absent)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONTENDERS = ["vaekit", "loop", "pyro", "pythae"]
D, HIDDEN, LATENT = 784, 400, 20


# -- data ----------------------------------------------------------------------------------
def stroke_images(n: int, seed: int, size: int = 28, strokes: int = 3, width: float = 1.3) -> np.ndarray:
    """``n`` binary images (n, size*size) float32, each the union of ``strokes`` thick segments."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    pix = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)  # (P, 2)
    out = np.empty((n, size * size), np.float32)
    for start in range(0, n, 2000):
        m = min(2000, n - start)
        a = rng.uniform(4, size - 4, (m, strokes, 1, 2)).astype(np.float32)
        b = rng.uniform(4, size - 4, (m, strokes, 1, 2)).astype(np.float32)
        d = b - a
        t = np.clip(((pix - a) * d).sum(-1, keepdims=True) / np.maximum((d * d).sum(-1, keepdims=True), 1e-6), 0, 1)
        dist2 = ((pix - (a + t * d)) ** 2).sum(-1)  # (m, strokes, P)
        out[start : start + m] = (dist2 < width**2).any(1)
    return out


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def train_flops_per_example(layers: list[tuple[int, int]]) -> int:
    """Forward + backward matmul FLOPs of one example through linear layers (in, out)."""
    total = sum(6 * i * o for i, o in layers)
    return total - 2 * layers[0][0] * layers[0][1]  # no gradient w.r.t. the data


LAYERS = [(D, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, D)]


# -- workers (one process each) --------------------------------------------------------------
def _load(args):
    mode = "r" if args.mmap else None
    x = np.load(Path(args.data) / "train.npy", mmap_mode=mode)[: args.n]
    xt = np.load(Path(args.data) / "test.npy")
    return x, xt


def _set_threads(args):
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return torch.get_num_threads()


def work_vaekit(args) -> dict:
    import torch

    import vaekit
    from vaekit.train import TrainConfig, evaluate_elbo, fit

    x, xt = _load(args)
    torch.manual_seed(args.seed)
    spec = vaekit.ModelSpec(data_shape=(D,), latent_dim=LATENT, hidden=(HIDDEN,), activation="relu",
                            likelihood={"name": "bernoulli"})
    model = vaekit.build_model(spec)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=1e-3, device="cpu", progress=False,
                         seed=args.seed, threads=args.threads)
    base = rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    history = fit(model, x, config=config)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out = {"seconds": seconds, "cpu_seconds": cpu, "base_rss": base, "peak_rss": peak_rss_mb(), "threads": torch.get_num_threads(),
           "first_epoch_seconds": history[0]["seconds"], "last_epoch_seconds": history[-1]["seconds"],
           "setup_seconds": seconds - sum(r["seconds"] for r in history)}
    if not args.no_eval:
        torch.manual_seed(1)
        out["test_elbo"] = evaluate_elbo(model, torch.as_tensor(xt))["elbo"]
        xm = torch.as_tensor(xt[: args.lm_n])
        vaekit.log_marginal(model, xm[:8], k=50)  # warm-up
        started, cpu = time.perf_counter(), time.process_time()
        lm = vaekit.log_marginal(model, xm, k=args.lm_k)
        out["lm_seconds"] = time.perf_counter() - started
        out["lm_log_px"] = lm.log_px.mean().item()
    return out


def _torch_vae():
    import torch
    from torch import nn

    class MLPVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
            self.dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D))

        def forward(self, x):
            mu, log_sigma = self.enc(x).chunk(2, -1)
            z = mu + log_sigma.exp() * torch.randn_like(mu)
            logits = self.dec(z)
            rec = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            kl = 0.5 * ((2 * log_sigma).exp() + mu**2 - 1 - 2 * log_sigma).sum(-1)
            return rec - kl  # ELBO per example

    return MLPVAE()


def work_loop(args) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, xt = _load(args)
    torch.manual_seed(args.seed)
    model = _torch_vae()
    base = rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    loader = DataLoader(TensorDataset(torch.as_tensor(x)), batch_size=args.batch, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        epoch_loss = 0.0
        for (xb,) in loader:
            loss = -model(xb).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out = {"seconds": seconds, "cpu_seconds": cpu, "base_rss": base, "peak_rss": peak_rss_mb(), "threads": torch.get_num_threads()}
    torch.manual_seed(1)
    with torch.no_grad():
        out["test_elbo"] = model(torch.as_tensor(xt)).mean().item()
    return out


def work_pyro(args) -> dict:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    x, xt = _load(args)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    pyro.enable_validation(False)

    class PyroVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
            self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D))

        def model(self, xb):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", xb.shape[0]):
                loc = xb.new_zeros(xb.shape[0], LATENT)
                z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=xb)

        def guide(self, xb):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", xb.shape[0]):
                mu, log_sigma = self.encoder(xb).chunk(2, -1)
                pyro.sample("z", dist.Normal(mu, log_sigma.exp()).to_event(1))

    vae = PyroVAE()
    base = rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
    loader = DataLoader(TensorDataset(torch.as_tensor(x)), batch_size=args.batch, shuffle=True)
    for _ in range(args.epochs):
        epoch_loss = 0.0
        for (xb,) in loader:
            epoch_loss += svi.step(xb)  # the loss summed over the batch, as in Pyro's tutorial
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out = {"seconds": seconds, "cpu_seconds": cpu, "base_rss": base, "peak_rss": peak_rss_mb(), "threads": torch.get_num_threads()}
    pyro.set_rng_seed(1)
    xt_t = torch.as_tensor(xt)
    total = sum(svi.evaluate_loss(xt_t[i : i + 1000]) for i in range(0, len(xt_t), 1000))
    out["test_elbo"] = -total / len(xt_t)
    return out


def work_pythae(args) -> dict:
    import logging

    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from torch import nn

    logging.getLogger("pythae").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)
    x, xt = _load(args)
    torch.manual_seed(args.seed)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))

        def forward(self, xb):
            mu, log_var = self.net(xb.reshape(xb.shape[0], -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    model = VAE(VAEConfig(input_dim=(D,), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as tmp:
        base = rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        config = BaseTrainerConfig(output_dir=tmp, num_epochs=args.epochs, learning_rate=1e-3,
                                   per_device_train_batch_size=args.batch, optimizer_cls="Adam", no_cuda=True,
                                   keep_best_on_train=True, seed=args.seed)
        data = torch.as_tensor(x)
        trainer = BaseTrainer(model, train_dataset=BaseDataset(data, torch.zeros(len(data))), eval_dataset=None,
                              training_config=config)
        trainer.train()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out = {"seconds": seconds, "cpu_seconds": cpu, "base_rss": base, "peak_rss": peak_rss_mb(), "threads": torch.get_num_threads()}
    torch.manual_seed(1)
    model.eval()
    with torch.no_grad():
        xt_t = torch.as_tensor(xt)
        out["test_elbo"] = -model({"data": xt_t}).loss.item()  # mean over the test set of -(BCE + KL)
    return out


def work_compile(args) -> dict:
    """Eager and compiled vaekit, two epochs each on the same data, in one process."""
    import torch

    import vaekit
    from vaekit.train import TrainConfig, fit

    x, _ = _load(args)
    out = {}
    for compile_ in (False, True):
        torch.manual_seed(args.seed)
        spec = vaekit.ModelSpec(data_shape=(D,), latent_dim=LATENT, hidden=(HIDDEN,), activation="relu",
                                likelihood={"name": "bernoulli"})
        h = fit(vaekit.build_model(spec), x, config=TrainConfig(epochs=2, batch_size=args.batch, device="cpu",
                progress=False, seed=args.seed, threads=args.threads, compile=compile_))
        out["compiled" if compile_ else "eager"] = [r["seconds"] for r in h]
    return out


def work_peak(args) -> dict:
    """Best float32 matmul rate of this process (GFLOP/s)."""
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(args.peak_reps):
        started, cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return {"gflops": 2 * n**3 / best / 1e9, "threads": torch.get_num_threads()}


WORKERS = {"vaekit": work_vaekit, "loop": work_loop, "pyro": work_pyro, "pythae": work_pythae, "peak": work_peak,
           "compile": work_compile}
REQUIRES = {"pyro": "pyro", "pythae": "pythae"}


# -- driver ----------------------------------------------------------------------------------
def run_worker(name: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--data", args.data, "--epochs", str(args.epochs),
           "--batch", str(args.batch), "--n", str(args.n), "--threads", str(args.threads), "--seed", str(args.seed),
           "--lm-k", str(args.lm_k), "--lm-n", str(args.lm_n), "--peak-reps", str(args.peak_reps)]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail}


def available(name: str) -> bool:
    module = REQUIRES.get(name)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def conditions(args) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}; "
            f"threads: {'torch default' if args.threads == 0 else args.threads}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="rounds of the contenders (best round reported)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n", type=int, default=60000, help="training examples")
    p.add_argument("--threads", type=int, default=0, help="torch threads in every contender; 0: torch's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    p.add_argument("--no-scaling", action="store_true", help="skip the N and batch-size sections")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    p.add_argument("--compile-n", type=int, default=15000, help="examples for the torch.compile comparison")
    p.add_argument("--scaling-n", default="7500,15000,30000,60000")
    p.add_argument("--scaling-batch", default="32,128,512,2048")
    p.add_argument("--lm-k", type=int, default=1000, help="importance samples for the log_marginal throughput")
    p.add_argument("--lm-n", type=int, default=100, help="test examples for the log_marginal throughput")
    p.add_argument("--peak-reps", type=int, default=10)
    # internal
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--mmap", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-eval", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        _set_threads(args)
        print("RESULT " + json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0

    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contender(s): {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    started_at = time.strftime("%Y-%m-%d %H:%M")
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        args.data = tmp
        t = time.perf_counter()
        np.save(Path(tmp) / "train.npy", stroke_images(max(args.n, 60000 if not args.no_scaling else args.n), seed=1))
        np.save(Path(tmp) / "test.npy", stroke_images(10000, seed=2))
        print(f"data made in {time.perf_counter() - t:.1f} s; running {', '.join(names)} ...", file=sys.stderr)

        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_ in range(args.repeats):
            order = names[round_ % len(names):] + names[: round_ % len(names)]  # rotate: no one always goes first
            for name in order:
                if not available(name):
                    runs[name] = [{"skipped": f"{REQUIRES[name]} not installed (pip install -e '.[bench]')"}]
                    continue
                print(f"  round {round_ + 1}: {name} ...", file=sys.stderr)
                runs[name].append(run_worker(name, args))
        results = {}
        for name, rs in runs.items():
            good = [r for r in rs if "seconds" in r]
            if not good:
                results[name] = rs[-1]
                continue
            results[name] = {**min(good, key=lambda r: r["seconds"]),
                             "best_cpu_seconds": min(r["cpu_seconds"] for r in good), "rounds": len(good)}
        compiled = {} if args.no_compile else run_worker("compile", _with(args, n=min(args.n, args.compile_n)))
        peak = run_worker("peak", args)

        scaling_n, scaling_b = [], []
        if not args.no_scaling:
            for n in [int(v) for v in args.scaling_n.split(",")]:
                print(f"  vaekit N={n} ...", file=sys.stderr)
                scaling_n.append((n, run_worker("vaekit", _with(args, n=n, epochs=2), mmap=True, no_eval=True)))
            for b in [int(v) for v in args.scaling_batch.split(",")]:
                print(f"  vaekit batch={b} ...", file=sys.stderr)
                scaling_b.append((b, run_worker("vaekit", _with(args, n=15000, epochs=2, batch=b), no_eval=True)))
    load_after = load_average()

    samples = args.epochs * args.n
    flops = train_flops_per_example(LAYERS)
    print(f"\n## Training: MLP VAE 784-400-20, Bernoulli, batch {args.batch}, Adam 1e-3, {args.epochs} epochs "
          f"of {args.n} stroke images (started {started_at})\n")
    print(f"Machine: {conditions(args)}; load average (1/5/15 min) {load_before} before, {load_after} after.\n")
    ref = results.get("vaekit", {}).get("seconds")
    ref_cpu = results.get("vaekit", {}).get("best_cpu_seconds")
    print(f"Each contender's best of {args.repeats} rounds. Time ratios: contender / vaekit (above 1: slower than vaekit).\n")
    print("| contender | samples/s | time vs vaekit | CPU microseconds per sample | CPU time vs vaekit | "
          "peak RSS (MB) | RSS increase in training (MB) | test ELBO (nats) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        r = results[name]
        if "seconds" not in r:
            print(f"| {name} | skipped: {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        ratio = f"{r['seconds'] / ref:.2f}" if ref else "n/a"
        cpu_ratio = f"{r['best_cpu_seconds'] / ref_cpu:.2f}" if ref_cpu else "n/a"
        print(f"| {name} | {samples / r['seconds']:,.0f} | {ratio} | {r['best_cpu_seconds'] / samples * 1e6:.0f} | "
              f"{cpu_ratio} | {r['peak_rss']:,.0f} | {r['peak_rss'] - r['base_rss']:,.0f} | {r['test_elbo']:.2f} |")
    if "eager" in compiled:
        n_c = min(args.n, args.compile_n)
        eager, comp = n_c / compiled["eager"][-1], n_c / compiled["compiled"][-1]
        print(f"\ntorch.compile (vaekit --compile, {n_c} examples, second epoch): {comp:,.0f} samples/s against "
              f"{eager:,.0f} eager ({comp / eager:.2f}x); compiling took about "
              f"{compiled['compiled'][0] - compiled['compiled'][-1]:.0f} s (first epoch minus second).")
    elif compiled:
        print(f"\ntorch.compile comparison failed: {compiled.get('error')}")
    v = results.get("vaekit", {})
    if "gflops" in peak and "seconds" in v:
        achieved = flops * samples / v["seconds"] / 1e9
        print(f"\nMatmul peak of this machine: {peak['gflops']:.1f} GFLOP/s (float32, 2048^3, {peak['threads']} threads). "
              f"vaekit's training step: {flops / 1e6:.2f} MFLOP per example x {samples / v['seconds']:,.0f} examples/s "
              f"= {achieved:.1f} GFLOP/s = {achieved / peak['gflops']:.0%} of peak.")
    if "lm_seconds" in v:
        per_z = 2 * (LATENT * HIDDEN + HIDDEN * D)
        rate = args.lm_n * args.lm_k / v["lm_seconds"]
        extra = f" = {rate * per_z / 1e9:.1f} GFLOP/s in the decoder ({rate * per_z / 1e9 / peak['gflops']:.0%} of peak)" if "gflops" in peak else ""
        print(f"log_marginal (k={args.lm_k}, {args.lm_n} test examples): {args.lm_n / v['lm_seconds']:.1f} examples/s, "
              f"{rate:,.0f} importance samples/s{extra}; mean log p(x) {v['lm_log_px']:.2f} nats.")
    if scaling_n:
        print("\n### vaekit, time and memory against N (memory-mapped .npy, batch 128; the second of 2 epochs)\n")
        print("| N | set-up (s) | seconds per epoch | microseconds per example | peak RSS (MB) | RSS increase (MB) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n, r in scaling_n:
            if "error" in r:
                print(f"| {n} | error: {r['error']} | | | | |")
                continue
            e = r["last_epoch_seconds"]
            print(f"| {n:,} | {r['setup_seconds']:.2f} | {e:.2f} | {e / n * 1e6:.0f} | {r['peak_rss']:,.0f} | "
                  f"{r['peak_rss'] - r['base_rss']:,.0f} |")
    if scaling_b:
        print("\n### vaekit, time and memory against batch size (N = 15,000; the second of 2 epochs)\n")
        print("| batch | samples/s | peak RSS (MB) | RSS increase (MB) |")
        print("|---:|---:|---:|---:|")
        for b, r in scaling_b:
            if "error" in r:
                print(f"| {b} | error: {r['error']} | | |")
                continue
            print(f"| {b} | {15000 / r['last_epoch_seconds']:,.0f} | {r['peak_rss']:,.0f} | {r['peak_rss'] - r['base_rss']:,.0f} |")
    return 0


def _with(args, **changes):
    new = argparse.Namespace(**vars(args))
    for k, v in changes.items():
        setattr(new, k, v)
    return new


if __name__ == "__main__":
    raise SystemExit(main())
