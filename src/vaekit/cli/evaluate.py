"""``vaekit evaluate RUN``: log p(x), bounds, KL per unit, active units, collapse and the inference gaps."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from . import outputs
from .names import GAP_LR, GAP_STEPS
from .options import non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    from ..evaluation import Evaluation, Metric

EVALUATE_KEY = "evaluate"  # the section of the run's metrics.json this command owns


def _ks(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none"):
        return ()
    try:
        ks = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample counts like 5,50, got {text!r}") from None
    if any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"sample counts must be positive, got {text!r}")
    return ks


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="importance-sampled log p(x), ELBO, active units, posterior collapse, inference gaps",
        description="Evaluate a trained run on its held-out test split (or --data): log p(x) by importance "
        "sampling, ELBO and IWAE bounds, bits per dimension for images, KL per latent unit, active units, "
        "a posterior-collapse check and, with --gaps, the amortisation and approximation gaps. Prints a "
        'table (or JSON with --json) and writes the numbers to RUN/metrics.json under "evaluate".',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="a run folder written by 'vaekit train'")
    p.add_argument(
        "--data",
        default=argparse.SUPPRESS,
        help="a built-in data set name or a .npy/.npz/.csv file (default: the run's test split)",
    )
    p.add_argument(
        "--iw-samples",
        type=non_negative_int,
        default=1000,
        metavar="K",
        help="importance samples per example for log p(x) (0 skips it)",
    )
    p.add_argument(
        "--iwae", type=_ks, default="5,50", metavar="K1,K2", help="further IWAE_k bounds to report ('none' for none)"
    )
    p.add_argument("--elbo-samples", type=positive_int, default=10, metavar="L", help="Monte Carlo draws for the ELBO")
    p.add_argument("--gaps", action="store_true", help="also compute the amortisation and approximation gaps (slower)")
    p.add_argument(
        "--gap-steps", type=positive_int, default=GAP_STEPS, help="most refinement steps per example for --gaps"
    )
    p.add_argument("--gap-lr", type=positive_float, default=GAP_LR, help="Adam step size of the refinement")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw: the same seed gives the same numbers"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    outputs.add_condition_file_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--no-save", action="store_true", help="do not write the results into RUN/metrics.json")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint, runs
    from ..evaluation import GapConfig, evaluate
    from ..train import resolve_device

    device = resolve_device(args.device)
    opened = runs.open_run(args.run, device=device)
    source_arg = getattr(args, "data", None)
    data = runs.read_input(opened, source_arg, condition_file=args.condition_file)
    if len(data) == 0:
        raise ValueError(f"{args.run} holds no test examples (it was trained with --test-fraction 0); give --data")
    image = (
        bool(opened.config.get("data", {}).get("image_shape"))
        or data.image_shape is not None
        or len(opened.model.data_shape or ()) >= 2
    )
    gaps = GapConfig(steps=args.gap_steps, lr=args.gap_lr) if args.gaps else False
    c = runs.conditions(opened, data, "the evaluated data")  # a conditional run: its labels or covariates are c
    result = evaluate(
        opened.model,
        data,
        iw_samples=args.iw_samples,
        iwae_k=args.iwae,
        elbo_samples=args.elbo_samples,
        gaps=gaps,
        bits_per_dim=image,
        seed=args.seed,
        c=c,
    )
    source = f"{data.name} test split" if source_arg is None else str(source_arg)
    record = {"data": {"source": source, "n": len(data)}, "device": str(device), **result.to_dict()}
    words = outputs.condition_words(opened, args)
    if c is not None:
        record["condition"] = f"{words}: every number is conditional, log p(x|c)"
    if not args.no_save:
        opened.folder.merge_metrics(EVALUATE_KEY, record)  # training's "train" / "val" / "estimator" stay as they are
    if args.json:
        print(json.dumps(checkpoint._jsonable(record), indent=2))
    else:
        print(format_table(result, f"{args.run}: {source}, {len(data)} examples, seed {args.seed}", words or False))
        if not args.no_save:
            print(f'written to {opened.folder.metrics_path} under "{EVALUATE_KEY}"')
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _row(name: str, m: Metric) -> str:
    se = f"{m.mean_mc_stderr:9.4f}" if m.mean_mc_stderr is not None else f"{'-':>9}"
    return f"  {name:<24}{m.mean:12.4f} {se}   {m.estimator.split(': ', 1)[-1]}"


def format_table(r: Evaluation, title: str, conditional: bool | str = False) -> str:
    """The readable table ``vaekit evaluate`` prints: means over the examples, in nats per example.
    ``conditional``: a conditional run, every number given c (True: the class labels; or the words
    saying what c is)."""
    lines = [title]
    if conditional:
        what = conditional if isinstance(conditional, str) else "c = each example's class label"
        lines.append(f"  conditional run: {what}; log p(x|c), ELBO and KL are given c")
    lines.append(f"  {'':<24}{'mean':>12} {'MC s.e.':>9}   estimator (nats per example)")
    if r.log_px is not None:
        lines.append(_row("log p(x|c)" if conditional else "log p(x)", r.log_px))
    for k in sorted(r.iwae, reverse=True):
        lines.append(_row(f"IWAE_{k}", r.iwae[k]))
    lines.append(_row("ELBO", r.elbo))
    lines.append(_row("  E_q[log p(x|z)]", r.log_px_z))
    lines.append(_row("  KL(q(z|x,c) || p(z|c))" if conditional else "  KL(q(z|x) || p(z))", r.kl))
    if r.bits_per_dim is not None:
        lines.append(_row("bits/dim", r.bits_per_dim))
    lines.append("")
    counted = r.n_examples > 1  # a variance over the examples needs two of them
    active = f"{r.n_active} of {r.latent_dim} active" if counted else "active units not counted from 1 example"
    lines.append(
        f"latent units: {active} (Var_x E_q[z_j|x] > {r.active_threshold}, Burda et al. 2016); "
        f"posterior collapse: {r.collapse}"
    )
    width = 8
    lines.append("  " + f"{'unit':<16}" + "".join(f"{j + 1:>{width}}" for j in range(r.latent_dim)))
    if r.kl_per_unit is not None:
        lines.append("  " + f"{'KL (nats)':<16}" + "".join(f"{v:>{width}.3f}" for v in r.kl_per_unit.mean(0)))
    if counted:
        lines.append("  " + f"{'Var_x E_q[z]':<16}" + "".join(f"{v:>{width}.3f}" for v in r.posterior_mean_variance))
        lines.append("  " + f"{'active':<16}" + "".join(f"{('yes' if a else 'no'):>{width}}" for a in r.active_units))
    lines.append(f"  KL per unit: {r.kl_per_unit_estimator}")
    if r.gaps is not None:
        g = r.gaps
        lines.append("")
        lines.append(
            f"inference gaps (Cremer et al. 2018): q* refined per example from the encoder in its "
            f"family ({g.family}), "
            f"{100 * g.converged_fraction:.0f}% converged, {g.steps_taken.mean():.0f} steps on average "
            f"(at most {g.config.steps}, Adam lr {g.config.lr})"
        )
        lines.append(_row("log p(x|c) [mixture]" if conditional else "log p(x) [mixture]", g.log_px))
        lines.append(_row("L[q*]", g.elbo_refined))
        lines.append(_row("L[q_enc]", g.elbo_encoder))
        lines.append(_row("approximation gap", g.approximation))
        lines.append(_row("amortisation gap", g.amortisation))
    return "\n".join(lines)
