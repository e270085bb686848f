"""``vaekit demo sine|pinwheel``: rerun a seed experiment and compare with its reported numbers."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="rerun a seed experiment (sine, pinwheel) and compare with its numbers",
        description="Rerun a seed experiment (sine, pinwheel) with vaekit and compare its ELBO with "
        "the numbers the original code reported (see vaekit.demos).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=["sine", "pinwheel"])
    p.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and sampling")
    p.add_argument("--epochs", type=int, default=None, help="override the seed's number of epochs")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None)
    return p


def run(args: argparse.Namespace) -> int:
    from .. import demos

    result = demos.run(args.name, seed=args.seed, epochs=args.epochs, progress=args.progress)
    f, rep = result.final, result.experiment.reported
    print(
        f"{args.name}: after {len(result.history)} epochs, on all {len(result.experiment.data)} points "
        "(100-sample Monte Carlo, closed-form KL), in nats per example:"
    )
    print(f"  ELBO {f['elbo']:.3f} = log p(x|z) {f['log_px_z']:.3f} - KL {f['kl']:.3f}")
    if "log_normaliser" in f:
        c = f["log_normaliser"]
        print(
            f"  without the Gaussian's constant {c:.3f}: ELBO {f['elbo'] - c:.3f}, log p(x|z) {f['log_px_z'] - c:.3f}"
        )
    if args.name == "sine":
        print(
            f"  seed 000 reports ELBO {rep['elbo_without_log2pi']} (recon {rep['log_px_z_without_log2pi']}, "
            f"KL {rep['kl']}) without the constant, i.e. a true ELBO of {rep['elbo']:.3f}"
        )
    else:
        c = f.get("log_normaliser", 0.0)
        print(
            f"  loss -(log p(x|z) - 0.25 KL) = {-f['objective']:.3f}; without the constant: {-(f['objective'] - c):.3f}"
        )
        print(f"  seed 004 reports loss {rep['loss']} (recon {rep['recon']}, KL {rep['kl']})")
    return 0
