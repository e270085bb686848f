"""``vaekit train``: train a VAE and write a run folder."""
from __future__ import annotations

import argparse
import os
import sys

from .. import distributed, runs
from ..likelihoods import REGISTRY
from ..nets import ACTIVATIONS
from ..spec import NETWORKS
from .options import explicit, non_negative_float, positive_float, positive_int, read_config_file

S = argparse.SUPPRESS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a VAE and write a run folder",
        description="Train a VAE. With no arguments: scikit-learn's digits, written to runs/digits-TIME/. "
        "Settings come from defaults, then --config, then flags.",
        argument_default=S,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = runs.DEFAULTS
    g = p.add_argument_group("data")
    g.add_argument("--data", help="a built-in data set (sine, pinwheel, digits), a .npy/.npz array, a .csv/.tsv/.parquet "
                   "table, an IDX file (MNIST's ...-idx3-ubyte[.gz]) or a folder of images (class sub-folders give "
                   f"labels) [default: {d['data']}]")
    g.add_argument("--binarize", nargs="?", const="static", choices=["static", "dynamic"],
                   help="pixels to 0/1: static thresholds once (> 0.5; digits: > 8); dynamic draws a fresh "
                   "Bernoulli(pixel) every batch (validation/test drawn once, seeded) [default: off; alone: static]")
    g.add_argument("--label-column", help="tables: the column holding labels, kept out of training (for plots and scores)")
    g.add_argument("--numeric", metavar="COLS", help="tables: comma-separated columns to treat as numeric")
    g.add_argument("--binary", metavar="COLS", help="tables: columns to treat as binary (two values)")
    g.add_argument("--categorical", metavar="COLS", help="tables: columns to treat as categorical")
    g.add_argument("--stream", choices=["auto", "on", "off"],
                   help="read a .npy file from disk batch by batch (memory stays flat); auto: when larger than 1 GiB "
                   "[default: auto]")
    g.add_argument("--val-fraction", type=non_negative_float, help=f"share of the data held out for validation [default: {d['val_fraction']}]")
    g.add_argument("--test-fraction", type=non_negative_float, help=f"share held out for testing [default: {d['test_fraction']}]")
    g.add_argument("--split-seed", type=int, help="seed of the train/validation/test split [default: 0]")
    g = p.add_argument_group("model")
    g.add_argument("--likelihood", choices=["auto", *sorted(REGISTRY)],
                   help="observation model; auto: binary -> bernoulli, few integer levels -> categorical, "
                   "values in [0,1] -> continuous_bernoulli, other reals -> gaussian with learned scale [default: auto]")
    g.add_argument("--scale", type=positive_float, help="fixed standard deviation of a Gaussian likelihood (default: learned)")
    g.add_argument("--latent-dim", type=positive_int, help=f"size of z [default: {d['latent_dim']}]")
    g.add_argument("--hidden", help="hidden layer sizes of the encoder (the decoder mirrors them), e.g. 32,32; "
                   f"'linear' for none [default: {','.join(map(str, d['hidden']))}]")
    g.add_argument("--activation", choices=sorted(ACTIVATIONS), help=f"hidden-layer activation [default: {d['activation']}]")
    g.add_argument("--network", choices=["auto", *sorted(NETWORKS)],
                   help="encoder/decoder: auto picks conv for images (C,H,W), table for tables, mlp otherwise [default: auto]")
    g.add_argument("--channels", help="conv network: channels of its stride-2 convolutions, e.g. 32,64 "
                   f"[default: {','.join(map(str, d['channels']))}]")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help=f"passes over the training data [default: {d['epochs']}]")
    g.add_argument("--batch-size", type=positive_int, help=f"examples per step [default: {d['batch_size']}]")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate [default: {d['lr']}]")
    g.add_argument("--beta", type=non_negative_float, help="weight of the KL term (beta-VAE) [default: 1]")
    g.add_argument("--warmup", type=non_negative_float, help="epochs of linear KL warm-up from 0 to beta [default: 0]")
    g.add_argument("--free-bits", type=non_negative_float, help="KL floor in nats per latent unit [default: 0]")
    g.add_argument("--n-samples", type=positive_int, help="z samples per example in the ELBO [default: 1]")
    g.add_argument("--iw-samples", type=int, help="train on the IWAE bound with this many samples (>= 2) [default: off]")
    g.add_argument("--grad-clip", type=positive_float, help="clip the gradient norm to this value [default: off]")
    g.add_argument("--early-stopping", type=positive_int, metavar="PATIENCE",
                   help="stop after this many epochs without a better validation ELBO [default: off]")
    g.add_argument("--seed", type=int, help="seed for initial weights, shuffling and sampling [default: 0]")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:1 or mps [default: auto]")
    g = p.add_argument_group("speed")
    g.add_argument("--threads", type=int, help="CPU threads; 0: automatic (1 for small models) [default: 0]")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step (falls back if it fails)")
    g.add_argument("--amp", choices=["bf16"], help="bfloat16 autocast for the networks; likelihood and KL stay float32")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run folder to create (default: runs/DATA-TIME)")
    g.add_argument("--checkpoint-every", type=positive_int, help="epochs between checkpoints [default: 1]")
    g.add_argument("--config", help="TOML or JSON file of settings (flag names as keys); flags override it")
    g.add_argument("--resume", metavar="RUN", help="continue the stopped run in this folder (only --epochs, --device and --lr may change)")
    g.add_argument("--progress", action="store_true", dest="progress", help="always show a progress bar")
    g.add_argument("--no-progress", action="store_false", dest="progress", help="never show a progress bar")
    g.add_argument("--no-figures", action="store_false", dest="figures",
                   help="skip drawing figures/ and report.html at the end (make them later with 'vaekit report RUN')")
    return p


def run(args: argparse.Namespace) -> int:
    # under torchrun every process runs this command; launch() joins them into one job
    with distributed.launch():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    given = explicit(args)
    draw = given.pop("figures", True)
    if "resume" in given:
        allowed = {"resume", "epochs", "device", "progress", "lr"}  # a lower lr after a divergence
        extra = sorted(set(given) - allowed)
        if extra:
            raise ValueError(f"--resume continues a run with its own settings; cannot also change: {', '.join('--' + e.replace('_', '-') for e in extra)}")
        result = runs.resume(given["resume"], epochs=given.get("epochs"), device=given.get("device"), progress=given.get("progress"),
                             lr=given.get("lr"))
    else:
        settings = read_config_file(given.pop("config")) if "config" in given else {}
        settings.update(given)
        result = runs.train(settings)
    # under torchrun the other processes are done once training is; only the main one draws
    return _figures_and_report(result.run_dir) if draw and distributed.current().is_main else 0


def _figures_and_report(run_dir) -> int:
    from .. import figures, report

    try:
        pngs = figures.render(run_dir)
        figures.write(run_dir, pngs)
        path = report.write(run_dir, pngs)
    except Exception as err:  # the run is trained and saved; a drawing failure must not hide that
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(f"vaekit train: the run in {run_dir} is complete, but drawing its figures failed "
              f"({type(err).__name__}: {err}); retry with 'vaekit report {run_dir}'", file=sys.stderr)
        return 1
    print(f"figures and report: {path}")
    return 0
