"""Training speed of vaekit.fit beside the loops people write by hand, on the same math.

Every contender trains a Bernoulli MLP VAE (ReLU; the encoder gives the posterior mean and log
scale, the decoder logits) on the ELBO with one reparameterised draw, batch 128, Adam 1e-3:

  vaekit      vaekit.fit
  lean        the leanest hand-written loop: the data as one tensor, batches by randperm +
              index_select, a functional MLP with the mean and log-variance heads fused in one
              Linear, BCE-with-logits summed, fused Adam, no host sync inside an epoch
  dataloader  pytorch/examples' vae style: DataLoader(TensorDataset, shuffle=True), nn.Modules,
              loss.item() every step
  pyro        Pyro's SVI with Trace_ELBO (model and guide as in Pyro's VAE tutorial), when installed
  pythae      pythae's VAE (BCE) with its BaseTrainer, when installed

Models: "large" 784-400-20 on 60,000 synthetic binary 28 x 28 stroke images (made here from a fixed
seed, --n to use fewer) and "small" 64-128-8 on scikit-learn's digits (binarised).

Each (model, threads, contender) run is its own process, so every contender pays its own one-time
costs; contenders take turns in rotating rounds within one invocation and the table shows medians
over rounds. "steady" is samples/s over the epochs after the first; "whole run" is examples x
epochs over the wall time of the whole training call (optimiser creation, data placement, vaekit's
thread trial included). "bound" is the fraction of the step's matmul bound: the step's own GEMMs
(forward, weight and input gradients at their real shapes, timed just before and after each run
in the same process and thread count) over the measured steady step time.

    python bench/bench_train.py --quick            # about 5 minutes on 2 cores
    python bench/bench_train.py                    # 60,000 examples, 3 rounds
    python bench/bench_train.py --threads-bench    # the automatic thread choice, idle and beside 2 busy processes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONTENDERS = ["vaekit", "lean", "dataloader", "pyro", "pythae"]
MODELS = {"large": (784, 400, 20), "small": (64, 128, 8)}
BATCH, LR = 128, 1e-3


# -- data --------------------------------------------------------------------------------------
def stroke_images(n: int, seed: int = 0, size: int = 28, strokes: int = 3, width: float = 1.3) -> np.ndarray:
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
        out[start : start + m] = (((pix - (a + t * d)) ** 2).sum(-1) < width**2).any(1)
    return out


def make_data(folder: Path, n: int) -> None:
    np.save(folder / "large.npy", stroke_images(n))
    from sklearn.datasets import load_digits

    np.save(folder / "small.npy", (load_digits().data > 7).astype(np.float32))


# -- the step's matmul bound -------------------------------------------------------------------
def gemm_seconds(
    dims: tuple[int, int, int], batch: int, reps: int = 20, device: str = "cpu", dtype: str = "float32"
) -> float:
    """Seconds per training step spent in its GEMMs alone, at their real shapes and layouts (on
    ``device``, in ``dtype``: float32, or bfloat16 for autocast's products)."""
    import torch

    d, h, latent = dims
    kind = getattr(torch, dtype)
    layers = [(d, h), (h, 2 * latent), (latent, h), (h, d)]
    ops = []

    def rand(*shape):
        return torch.rand(*shape, device=device, dtype=kind)

    for i, (n_in, n_out) in enumerate(layers):
        x, w, g = rand(batch, n_in), rand(n_out, n_in), rand(batch, n_out)
        ops.append((x, w.t(), torch.empty_like(g)))  # forward x W^T
        ops.append((g.t(), x, torch.empty_like(w)))  # weight gradient g^T x
        if i:  # the data need no gradient
            ops.append((g, w, torch.empty_like(x)))  # input gradient g W
    for a, b, out in ops:
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(3):
        sync(device)
        started = time.perf_counter()
        for _ in range(reps):
            for a, b, out in ops:
                torch.mm(a, b, out=out)
        sync(device)
        best = min(best, (time.perf_counter() - started) / reps)
    return best


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU needs nothing)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- contenders (one process each); each returns per-epoch seconds and the whole call's ----------
def run_vaekit(x, dims, epochs, threads, seed, device="cpu", batch=BATCH, amp=None, compile=False):
    import torch

    import vaekit
    from vaekit.train import TrainConfig, fit

    torch.manual_seed(seed)
    d, h, latent = dims
    model = vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=(d,), latent_dim=latent, hidden=(h,), activation="relu", likelihood={"name": "bernoulli"}
        )
    )
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        lr=LR,
        device=device,
        progress=False,
        seed=seed,
        threads=threads,
        amp=amp,
        compile=compile,
    )
    started = time.perf_counter()
    result = fit(model, x, config=config)
    return [r["seconds"] for r in result.history], time.perf_counter() - started, result.threads


def run_lean(x, dims, epochs, threads, seed, device="cpu", batch=BATCH, amp=None, compile_mode=None):
    """The lean loop; on ``device``, ``amp="bf16"`` autocasts the products to bfloat16 (the loss in
    float32, as vaekit's), ``compile_mode`` (e.g. "reduce-overhead": CUDA graphs) compiles its step."""
    import contextlib

    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    d, h, latent = dims

    def linear(n_in, n_out):  # nn.Linear's initialisation
        bound = 1 / n_in**0.5
        return [
            ((torch.rand(n_out, n_in) * 2 - 1).mul_(bound)).to(device).requires_grad_(),
            ((torch.rand(n_out) * 2 - 1).mul_(bound)).to(device).requires_grad_(),
        ]

    w1, b1 = linear(d, h)
    w2, b2 = linear(h, 2 * latent)  # mean and log-variance heads in one Linear
    w3, b3 = linear(latent, h)
    w4, b4 = linear(h, d)
    params = [w1, b1, w2, b2, w3, b3, w4, b4]
    device_type = torch.device(device).type

    def autocast():
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=torch.bfloat16)

    def step_loss(xb):
        with autocast():
            heads = F.linear(F.relu(F.linear(xb, w1, b1)), w2, b2)
            mu, logvar = (heads if amp is None else heads.float()).chunk(2, -1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = F.linear(F.relu(F.linear(z, w3, b3)), w4, b4)
            logits = logits if amp is None else logits.float()
        rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (rec + kl) / xb.shape[0]

    if compile_mode is not None:
        step_loss = torch.compile(step_loss, mode=compile_mode)
    started = time.perf_counter()
    data = torch.as_tensor(x).to(device)
    n = data.shape[0]
    optimizer = torch.optim.Adam(params, lr=LR, fused=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for s in range(0, n, batch):
            xb = data.index_select(0, perm[s : s + batch])
            loss = step_loss(xb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        total.item()  # the one host sync per epoch
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - started, threads


def _modules(dims):
    from torch import nn

    d, h, latent = dims
    return (
        nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * latent)),
        nn.Sequential(nn.Linear(latent, h), nn.ReLU(), nn.Linear(h, d)),
    )


def run_dataloader(x, dims, epochs, threads, seed):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    encoder, decoder = _modules(dims)
    params = [*encoder.parameters(), *decoder.parameters()]
    started = time.perf_counter()
    loader = DataLoader(TensorDataset(torch.as_tensor(x)), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.Adam(params, lr=LR)
    times = []
    for _ in range(epochs):
        t0, epoch_loss = time.perf_counter(), 0.0
        for (xb,) in loader:
            mu, logvar = encoder(xb).chunk(2, -1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            rec = F.binary_cross_entropy_with_logits(decoder(z), xb, reduction="sum")
            loss = (rec - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / xb.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - started, threads


def run_pyro(x, dims, epochs, threads, seed):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from torch.utils.data import DataLoader, TensorDataset

    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    pyro.enable_validation(False)
    encoder, decoder = _modules(dims)
    latent = dims[2]

    def model(xb):
        pyro.module("decoder", decoder)
        with pyro.plate("data", xb.shape[0]):
            loc = xb.new_zeros(xb.shape[0], latent)
            z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=xb)

    def guide(xb):
        pyro.module("encoder", encoder)
        with pyro.plate("data", xb.shape[0]):
            mu, log_sigma = encoder(xb).chunk(2, -1)
            pyro.sample("z", dist.Normal(mu, log_sigma.exp()).to_event(1))

    started = time.perf_counter()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss=Trace_ELBO())
    loader = DataLoader(TensorDataset(torch.as_tensor(x)), batch_size=BATCH, shuffle=True)
    times = []
    for _ in range(epochs):
        t0, epoch_loss = time.perf_counter(), 0.0
        for (xb,) in loader:
            epoch_loss += svi.step(xb)
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - started, threads


def run_pythae(x, dims, epochs, threads, seed):
    import logging

    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    logging.disable(logging.WARNING)
    torch.manual_seed(seed)
    enc_net, dec_net = _modules(dims)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = enc_net

        def forward(self, xb):
            mu, log_var = self.net(xb.reshape(xb.shape[0], -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = dec_net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    model = VAE(
        VAEConfig(input_dim=(dims[0],), latent_dim=dims[2], reconstruction_loss="bce"),
        encoder=Encoder(),
        decoder=Decoder(),
    )
    times = []

    class Timer:  # pythae's callback hooks give the epoch boundaries
        def __getattr__(self, name):
            return lambda *a, **kw: None

        def on_epoch_begin(self, *a, **kw):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, *a, **kw):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        config = BaseTrainerConfig(
            output_dir=tmp,
            num_epochs=epochs,
            learning_rate=LR,
            per_device_train_batch_size=BATCH,
            optimizer_cls="Adam",
            no_cuda=True,
            keep_best_on_train=True,
            seed=seed,
        )
        data = torch.as_tensor(x)
        trainer = BaseTrainer(
            model, train_dataset=BaseDataset(data, torch.zeros(len(data))), training_config=config, callbacks=[Timer()]
        )
        trainer.train()
        total = time.perf_counter() - started
    return times, total, threads


RUNNERS = {"vaekit": run_vaekit, "lean": run_lean, "dataloader": run_dataloader, "pyro": run_pyro, "pythae": run_pythae}


def worker(args) -> dict:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    x = np.load(Path(args.data) / f"{args.model}.npy")[: args.n]
    dims = MODELS[args.model]
    before = gemm_seconds(dims, BATCH)
    times, total, threads = RUNNERS[args.worker](x, dims, args.epochs, args.threads, args.seed)
    torch.set_num_threads(threads or torch.get_num_threads())
    after = gemm_seconds(dims, BATCH)
    return {
        "epoch_seconds": times,
        "total": total,
        "gemm": (before + after) / 2,
        "n": len(x),
        "steps": -(-len(x) // BATCH),
        "threads": threads,
    }


# -- driver ------------------------------------------------------------------------------------
def spawn(name, args, model, threads, epochs, n, env=None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--data",
        args.data,
        "--model",
        model,
        "--threads",
        str(threads),
        "--epochs",
        str(epochs),
        "--n",
        str(n),
        "--seed",
        str(args.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def available(name: str) -> bool:
    import importlib.util

    module = {"pyro": "pyro", "pythae": "pythae"}.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def steady(r: dict) -> float:
    times = r["epoch_seconds"][1:] or r["epoch_seconds"]
    return r["n"] / statistics.median(times)


def train_table(args) -> None:
    contenders = [c for c in args.only.split(",") if c]
    missing = [c for c in contenders if not available(c)]
    for c in missing:
        print(f"({c} is not installed: skipped; pip install -e '.[bench]')")
    contenders = [c for c in contenders if c not in missing]
    for model in args.models.split(","):
        epochs, n = (args.epochs, args.n) if model == "large" else (args.small_epochs, 1797)
        for threads in (1, 2):
            results: dict[str, list[dict]] = {c: [] for c in contenders}
            for r in range(args.rounds):
                for c in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
                    results[c].append(spawn(c, args, model, threads, epochs, n))
            print(
                f"\n{model} model {'-'.join(map(str, MODELS[model]))}, N={n}, {epochs} epochs, {threads} thread(s), "
                f"{args.rounds} rounds; load {load()}"
            )
            print("| contender | steady samples/s | vs lean | whole-run samples/s | vs lean | bound |")
            print("|---|---|---|---|---|---|")
            rows = {}
            for c, rs in results.items():
                ok = [x for x in rs if "error" not in x]
                if not ok:
                    print(f"| {c} | failed: {rs[0]['error'][:80]} | | | | |")
                    continue
                s = statistics.median(steady(x) for x in ok)
                w = statistics.median(x["n"] * len(x["epoch_seconds"]) / x["total"] for x in ok)
                b = statistics.median(x["gemm"] * x["steps"] / (x["n"] / steady(x)) for x in ok)
                rows[c] = (s, w, b)
            lean = rows.get("lean", (float("nan"),) * 3)
            for c, (s, w, b) in rows.items():
                print(f"| {c} | {s:,.0f} | {s / lean[0]:.2f} | {w:,.0f} | {w / lean[1]:.2f} | {b:.2f} |")


def threads_table(args) -> None:
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores})
    for loaded in (False, True):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if loaded else 0)]
        try:
            for model in args.models.split(","):
                epochs, n = (args.epochs, args.n) if model == "large" else (args.small_epochs, 1797)
                results: dict[int, list[dict]] = {t: [] for t in [0, *counts]}
                for r in range(args.rounds):
                    order = [0, *counts]
                    for t in order[r % len(order) :] + order[: r % len(order)]:
                        results[t].append(spawn("vaekit", args, model, t, epochs, n))
                whole = {t: statistics.median(x["total"] for x in rs if "error" not in x) for t, rs in results.items()}
                best = min(whole[t] for t in counts)
                chosen = sorted({x["threads"] for x in results[0] if "error" not in x})
                print(
                    f"\nthreads, {model} model, {'2 busy processes beside' if loaded else 'idle'} (load {load()}): "
                    + ", ".join(f"{t} thread(s) {whole[t]:.2f} s" for t in counts)
                    + f"; automatic {whole[0]:.2f} s (chose {chosen}), {whole[0] / best:.2f}x the best"
                )
        finally:
            for p in busy:
                p.kill()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="10,000 examples, 2 rounds: about 5 minutes on 2 cores")
    p.add_argument("--threads-bench", action="store_true", help="only the automatic thread choice, idle and loaded")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs of the large model")
    p.add_argument("--small-epochs", type=int, default=30, help="epochs of the small model")
    p.add_argument("--n", type=int, default=60000, help="training examples of the large model")
    p.add_argument("--models", default="large,small")
    p.add_argument("--only", default=",".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0
    if args.quick:
        args.n, args.rounds, args.epochs, args.small_epochs = min(args.n, 10000), 2, 2, 12
        if args.only == ",".join(CONTENDERS):
            args.only = "vaekit,lean,dataloader"
    print(f"python bench/bench_train.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{os.cpu_count()} logical CPUs; load average {load()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        args.data = tmp
        make_data(Path(tmp), args.n)
        if args.threads_bench:
            threads_table(args)
        else:
            train_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
