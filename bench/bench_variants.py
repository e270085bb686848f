"""Test log p(x) of vaekit's variants, at equal epochs and at an equal wall-clock budget, with pythae rows.

Rows (one process, in turn, the same data, split, optimiser and epochs for all):

  VAE              one stochastic layer, diagonal Gaussian q, N(0, I) prior, trained on the ELBO
  IWAE k=5 / k=50  the same model trained on the IWAE bound (Burda et al. 2016)
  VampPrior        the VAE with a VampPrior of 50 pseudo-inputs (Tomczak & Welling 2018)
  IAF              the VAE with 2 IAF steps on q (Kingma et al. 2016)
  full covariance  the VAE with a full-covariance Gaussian q
  2 layers         x <-> z1 <-> z2, the IWAE paper's architecture, on the ELBO
  2 layers + IWAE  the same, trained on IWAE_50
  pythae ...       pythae's IWAE (k=5), VAMP (K=50) and VAE_IAF (2 MADE blocks) on the same networks,
                   trained by pythae's BaseTrainer (``--pythae``, when pythae is installed: the bench extra)

Data (``--data``):
  digits   sklearn's 1797 digits, pixels > 8 of 16 set to 1 (a fixed binarisation), a fixed random
           split of 1437 training and 360 test images
  strokes  the 60,000 x 784 binary benchmark set of bench_train.py (synthetic 28 x 28 stroke images
           from a fixed seed) for training, and ``--test-n`` more images from the same generator as
           the test set

Networks: tanh MLPs with two hidden layers of ``--hidden`` units; ``--latent`` units in z (z1 for two
layers, z2 has half as many). Adam, learning rate 1e-3, batch 100.

Equal epochs: every row trains ``--epochs`` epochs. Equal budget (``--budget S``): every vaekit row
trains again from the same initialisation until its training time reaches S seconds (checked at
the end of each epoch, so a row may overrun by up to one epoch; the table gives its epochs and
seconds). pythae's trainer has no time budget, so its rows are at equal epochs only.

Test log p(x): importance sampling with the model's own q as proposal, ``--k`` draws per example
(IWAE_k, a lower bound in expectation), in nats per image, every constant kept, by vaekit's one
evaluator (``vaekit.log_marginal``); pythae's models are evaluated by it through their own encoder,
decoder, prior and flow (wrapped as a vaekit ``Model``). The "+-" is the standard error of the test
mean; "MC se" is the mean per-image Monte Carlo standard error of the estimate (delta method).
Training time is wall-clock seconds on this machine as loaded when run (the load average is printed
beside it); compare the rows' ratios, not the absolute numbers.

    PYTHONPATH=src python bench/bench_variants.py --epochs 300 --k 1000
    PYTHONPATH=src python bench/bench_variants.py --data strokes --hidden 200 --latent 50 \
        --epochs 2 --budget 60 --k 1000 --test-n 1000 --pythae
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily

from vaekit import Model, ModelSpec, build_model, fit, log_marginal
from vaekit.config import TrainConfig
from vaekit.posteriors import DiagonalGaussian, _NoiseDistribution
from vaekit.priors import Prior

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import stroke_images  # noqa: E402  (the same 60,000 x 784 set as the training benchmark)

ROWS = [
    ("VAE", {}, 0),
    ("IWAE k=5", {}, 5),
    ("IWAE k=50", {}, 50),
    ("VampPrior (K=50)", dict(prior="vamp", n_components=50), 0),
    ("IAF (2 steps)", dict(posterior="iaf", iaf_steps=2), 0),
    ("full covariance", dict(posterior="full"), 0),
    ("2 layers", dict(layers=2), 0),
    ("2 layers + IWAE k=50", dict(layers=2), 50),
]
PYTHAE_ROWS = ["pythae IWAE k=5", "pythae VAMP (K=50)", "pythae VAE_IAF (2 blocks)"]
BATCH, LR = 100, 1e-3


# -- data --------------------------------------------------------------------------------------
def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits

    x = (load_digits().data > 8).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    return torch.as_tensor(x[order[:1437]]), torch.as_tensor(x[order[1437:]])


def strokes_split(n_train: int, n_test: int):
    x = stroke_images(n_train + n_test)  # the first n_train are bench_train.py's set
    return torch.as_tensor(x[:n_train]), torch.as_tensor(x[n_train:])


# -- vaekit rows -------------------------------------------------------------------------------
class Budget:
    """fit callback: stop once ``seconds`` of training have passed (checked after each epoch)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = float(seconds), time.perf_counter()

    def __call__(self, model, state) -> None:
        if time.perf_counter() - self.started >= self.seconds:
            state.stopped_early = True


def vaekit_row(name, variant, iw, data, args, epochs: int, budget: float | None):
    train, test = data
    torch.manual_seed(0)
    if variant.get("layers") == 2:
        variant = {**variant, "top_dim": max(1, args.latent // 2)}
    spec = ModelSpec(
        data_shape=tuple(train.shape[1:]),
        latent_dim=args.latent,
        hidden=(args.hidden, args.hidden),
        activation="tanh",
        likelihood="bernoulli",
        **variant,
    )
    model = build_model(spec)
    config = TrainConfig(
        epochs=epochs, batch_size=BATCH, lr=LR, iw_samples=iw, seed=0, progress=False, threads=args.threads
    )
    callbacks = [] if budget is None else [Budget(budget)]
    started = time.perf_counter()
    result = fit(model, train, config=config, callbacks=callbacks)
    seconds = time.perf_counter() - started
    return evaluate_row(name, model, test, args.k, seconds, len(result.history))


# -- pythae rows -------------------------------------------------------------------------------
class _Logits(nn.Module):
    """A pythae decoder's network without its final sigmoid: vaekit's Bernoulli takes logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z):
        return self.net(z)


class _MuLogScale(nn.Module):
    """A pythae encoder as a vaekit encoder: (mu, log var) -> (mu, log sigma)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        out = self.encoder(x)
        return torch.cat([out.embedding, 0.5 * out.log_covariance], -1)


class _PythaeVamp(Prior):
    """pythae's VAMP prior: the mixture of q(z|u_k) at its pseudo-inputs u = hardtanh(W I + b)."""

    def __init__(self, vamp) -> None:
        super().__init__()
        self.vamp, self.latent_dim = vamp, vamp.latent_dim

    def forward(self, c=None, q_z=None):
        u = self.vamp.pseudo_inputs(self.vamp.idle_input).reshape(self.vamp.number_components, -1)
        components = q_z(u)
        weights = Categorical(logits=torch.zeros(self.vamp.number_components), validate_args=False)
        return MixtureSameFamily(weights, components, validate_args=False)


class _PythaeIAFGaussian(_NoiseDistribution):
    """pythae's VAE_IAF posterior: z0 ~ N(mu, sigma^2), z = iaf_flow.inverse(z0);
    log q(z) = log N(z0) - log|det dz/dz0| (pythae's own sign convention)."""

    def __init__(self, base: DiagonalGaussian, flow: nn.Module) -> None:
        self.base, self.flow, self._like = base, flow, base.base_dist.loc
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _draw(self, eps):
        z0 = self.base.from_noise(eps)
        out = self.flow.inverse(z0.reshape(-1, z0.shape[-1]))
        z = out.out.reshape(z0.shape)
        return z, self.base.log_prob(z0) - out.log_abs_det_jac.reshape(z0.shape[:-1])

    def _log_prob(self, value):
        raise ValueError("pythae's IAF has no inverse here: use the log q of the draws")


class _PythaeIAFPosterior(nn.Module):
    def __init__(self, flow: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.flow, self.latent_dim = flow, latent_dim

    def n_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, h):
        loc, log_scale = h.chunk(2, -1)
        return _PythaeIAFGaussian(DiagonalGaussian(loc, log_scale.exp()), self.flow)


def _mlp(sizes: list[int], last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def pythae_row(name, data, args, epochs: int):
    from pythae.data.datasets import BaseDataset
    from pythae.models import IWAE, VAE_IAF, VAMP, IWAEConfig, VAE_IAF_Config, VAMPConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    logging.disable(logging.WARNING)
    train, test = data
    d, h, latent = train.shape[1], args.hidden, args.latent
    torch.manual_seed(0)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = _mlp([d, h, h, 2 * latent])

        def forward(self, xb):
            mu, log_var = self.net(xb.reshape(xb.shape[0], -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = _mlp([latent, h, h, d])

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    common = dict(input_dim=(d,), latent_dim=latent, reconstruction_loss="bce")
    if name.startswith("pythae IWAE"):
        model = IWAE(IWAEConfig(number_samples=5, **common), encoder=Encoder(), decoder=Decoder())
    elif name.startswith("pythae VAMP"):
        model = VAMP(VAMPConfig(number_components=50, **common), encoder=Encoder(), decoder=Decoder())
    else:
        model = VAE_IAF(VAE_IAF_Config(n_made_blocks=2, **common), encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(
            output_dir=tmp,
            num_epochs=epochs,
            learning_rate=LR,
            per_device_train_batch_size=BATCH,
            optimizer_cls="Adam",
            no_cuda=True,
            keep_best_on_train=False,
            seed=0,
        )
        trainer = BaseTrainer(model, train_dataset=BaseDataset(train, torch.zeros(len(train))), training_config=config)
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # pythae's per-epoch progress bars
            trainer.train()
        seconds = time.perf_counter() - started
    model = model.cpu().eval()
    prior = _PythaeVamp(model) if isinstance(model, VAMP) else None
    posterior = _PythaeIAFPosterior(model.iaf_flow, latent) if isinstance(model, VAE_IAF) else None
    wrapped = Model(
        _MuLogScale(model.encoder),
        _Logits(model.decoder.net),
        "bernoulli",
        prior,
        posterior=posterior,
        latent_dim=latent,
        data_shape=(d,),
    )
    return evaluate_row(name, wrapped, test, args.k, seconds, epochs)


# -- evaluation and the table ------------------------------------------------------------------
def evaluate_row(name, model, test, k, seconds, epochs) -> dict:
    torch.manual_seed(1)
    lm = log_marginal(model, test, k=k)
    values = lm.log_px.double()
    return {
        "name": name,
        "log_px": float(values.mean()),
        "se": float(values.std() / math.sqrt(len(values))),
        "mc_se": float(lm.stderr.mean()),
        "seconds": seconds,
        "epochs": epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def run(args) -> tuple[list[dict], list[dict]]:
    if args.data == "digits":
        data = digits_split()
    else:
        data = strokes_split(args.n, args.test_n)
    # one-time set-up (imports, the first optimiser) before any row's clock starts
    fit(
        build_model(ModelSpec(data_shape=tuple(data[0].shape[1:]), latent_dim=2, hidden=(8,), likelihood="bernoulli")),
        data[0][:100],
        config=TrainConfig(epochs=1, progress=False, threads=args.threads),
    )
    chosen = [(n, v, iw) for n, v, iw in ROWS if not args.only or any(o.lower() in n.lower() for o in args.only)]
    equal_epochs, equal_budget = [], []
    for name, variant, iw in chosen:
        equal_epochs.append(vaekit_row(name, variant, iw, data, args, args.epochs, None))
        print("  epochs  " + _line(equal_epochs[-1]), flush=True)  # each row as soon as it is done
        if args.budget:
            equal_budget.append(vaekit_row(name, variant, iw, data, args, 100_000, args.budget))
            print("  budget  " + _line(equal_budget[-1]), flush=True)
    if args.pythae:
        try:
            import pythae  # noqa: F401
        except ImportError:
            print("  pythae is not installed (pip install -e '.[bench]'): no pythae rows")
        else:
            for name in PYTHAE_ROWS:
                if args.only and not any(o.lower() in name.lower() for o in args.only):
                    continue
                equal_epochs.append(pythae_row(name, data, args, args.epochs))
                print("  epochs  " + _line(equal_epochs[-1]), flush=True)
    return equal_epochs, equal_budget


def table(rows: list[dict], k: int, title: str) -> str:
    lines = [
        title,
        "",
        f"| model | test log p(x), nats (k={k}) | MC se | epochs | training s | parameters | load |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_line(r) for r in rows]
    return "\n".join(lines)


def _line(r: dict) -> str:
    return (
        f"| {r['name']} | {r['log_px']:.2f} +- {r['se']:.2f} | {r['mc_se']:.3f} | {r['epochs']} "
        f"| {r['seconds']:.1f} | {r['params']} | {r['load']:.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "strokes"], default="digits")
    ap.add_argument("--n", type=int, default=60_000, help="strokes: training images")
    ap.add_argument("--test-n", type=int, default=1000, help="strokes: test images")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--budget", type=float, default=0.0, help="also train each vaekit row for this many seconds")
    ap.add_argument("--k", type=int, default=1000, help="importance samples for test log p(x)")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pythae", action="store_true", help="add pythae's IWAE, VAMP and VAE_IAF rows")
    ap.add_argument("--only", nargs="*", help="rows whose name contains one of these")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, data {args.data}, load average {load:.1f} at the start")
    equal_epochs, equal_budget = run(args)
    print(table(equal_epochs, args.k, f"Equal epochs ({args.epochs}):"))
    if equal_budget:
        print()
        print(table(equal_budget, args.k, f"Equal training budget ({args.budget:.0f} s each, checked per epoch):"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
