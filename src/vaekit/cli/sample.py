"""``vaekit sample RUN -n N``: generate new examples from a trained run."""

from __future__ import annotations

import argparse
import math

import numpy as np

from . import outputs
from .options import positive_int

DEFAULT_N = 64


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sample",
        help="generate examples: z ~ p(z), decoded",
        description="Draw z from the prior and decode it: the decoder's mean (default), a draw from "
        "p(x|z) (--draw) or the most probable value (--round: Bernoulli means rounded to 0/1). Writes "
        "an .npy array (for a run trained on a table: a CSV or Parquet table with the original columns) "
        "and, for image or 2-D data, a picture.",
    )
    outputs.add_run_argument(p)
    p.add_argument(
        "-n",
        "--n",
        type=positive_int,
        help=f"number of examples [default: {DEFAULT_N}; with --condition-file one per row of the file]",
    )
    p.add_argument(
        "--condition",
        type=int,
        metavar="K",
        help="a conditional run (trained with --condition label): sample class K, z ~ p(z|c=K) decoded under "
        "c=K [default: every class in turn, -n split evenly, one picture row per class; the classes go to "
        "OUT_classes.npy]",
    )
    outputs.add_condition_file_argument(
        p,
        "a run trained with --condition-columns: a table (.csv) of exactly those columns; one sample per row, "
        "z ~ p(z|c) decoded under that row's c, written beside its covariates [default: covariate rows drawn "
        "at random from the run's training rows]",
    )
    outputs.add_decode_arguments(p)
    p.add_argument(
        "-o",
        "--out",
        help="array file (.npy) [default: RUN/samples.npy]; for a table run a .csv or "
        ".parquet table [default: RUN/samples.csv] (.npy: the model-space numbers)",
    )
    outputs.add_png_arguments(p, "samples.png")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import generate, limits, plots, runs

    run_ = outputs.open_run(args)
    covariates = _covariates(run_, args)  # a run on table columns: the covariates of each sample
    if covariates is not None:
        args.n = len(covariates)
    elif args.n is None:
        args.n = DEFAULT_N
    shape = outputs.image_shape(run_)
    out = outputs.output_path(run_, args.out, "samples")
    png = outputs.png_path(run_, args, "samples.png", shape is not None or outputs.is_2d(run_))
    how = outputs.decode_how(args)
    model = run_.model
    # z, the decoder's output and the samples (twice: as a tensor and as written), 4 bytes a value
    per_example = (
        model.latent_dim + math.prod(model.likelihood.param_shape(model.data_shape)) + 2 * math.prod(model.data_shape)
    )
    limits.require_memory(4 * args.n * per_example, f"sample -n {args.n}", "use a smaller -n")
    classes, ncols = _classes(model, args.condition, args.n) if covariates is None else (None, None)
    cond = classes if covariates is None else torch.as_tensor(run_.covariates.encode(covariates, "the covariates"))
    outputs.seed_everything(args.seed)
    z = generate.prior_draws(model, args.n, c=cond)
    x = generate.decode(model, z, how=how, c=cond)
    written = outputs.write_data(run_, out, x.numpy(), covariates=covariates)
    given = "" if classes is None else (f" of class {args.condition}" if args.condition is not None else "")
    if covariates is not None:
        given = (
            f", one per covariate row of {args.condition_file}"
            if args.condition_file
            else f" under covariate rows drawn from the training rows (seed {args.seed})"
        )
    print(
        f"wrote {args.n} samples{given} ({outputs.DESCRIBE_HOW[how]}) of shape {tuple(x.shape[1:])} to {out} ({written})"
    )
    if classes is not None and args.condition is None:
        labels = out.with_name(out.stem + "_classes.npy")
        outputs.write_npy(labels, classes.numpy())
        print(f"one class after another ({ncols} or fewer of each of the {model.condition_dim}); the classes: {labels}")
    if png is not None:
        fit = runs.read_input(run_, None, which="train").x
        shown = min(args.n, outputs.MAX_TILES) if shape is not None else args.n
        tiles = x[:shown].numpy()
        if classes is not None and args.condition is None and shape is not None:
            ncols = min(ncols, max(1, outputs.MAX_TILES // model.condition_dim))
            tiles = _rows_per_class(x, classes, model.condition_dim, ncols)
            shown = int(np.isfinite(tiles[:, 0]).sum())
        title = f"{shown} samples: z ~ p(z), {outputs.DESCRIBE_HOW[how]}"
        if classes is not None:
            title = (
                f"{shown} samples of class {args.condition}"
                if args.condition is not None
                else f"{shown} samples, row k: class k (top row k=0)"
            ) + f", {outputs.DESCRIBE_HOW[how]}"
        if shape is not None:
            fig = plots.image_grid(
                tiles,
                shape,
                ncols=ncols if classes is not None and args.condition is None else None,
                value_range=(float(fit.min()), float(fit.max())),
                title=title,
            )
        else:
            fig = plots.points_over_data(x.numpy(), fit, colour=z[:, 0].cpu().numpy(), colour_name="$z_1$", title=title)
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0


def _covariates(run_, args):
    """The raw covariate rows of the samples of a run on table columns (None for other runs):
    the --condition-file's rows, or rows drawn at random from the training split."""
    from .. import runs

    if args.condition_file is not None:
        runs.check_condition_file(run_)
    if run_.condition_kind != "columns":
        return None
    if args.condition is not None:
        outputs.refuse_label_condition(run_, "--condition")
    if args.condition_file is None:
        return runs.training_covariates(run_, args.n or DEFAULT_N, args.seed)
    if args.n is not None:
        raise ValueError(
            "-n does not apply with --condition-file: one sample is drawn per row of the file; "
            "repeat a row in the file to draw more samples under it"
        )
    return run_.covariates.read_file(args.condition_file)


def _classes(model, condition: int | None, n: int):
    """The class of each sample (a (n,) tensor) for a conditional run, or None; and the samples per class."""
    import torch

    k = int(getattr(model, "condition_dim", 0) or 0)
    if not k:
        if condition is not None:
            raise ValueError(
                "--condition applies to a conditional run (trained with --condition label); this one is not"
            )
        return None, None
    if condition is not None:
        if not 0 <= condition < k:
            raise ValueError(f"--condition {condition} is out of range: this run was trained on classes 0..{k - 1}")
        return torch.full((n,), condition, dtype=torch.long), n
    per_class = -(-n // k)  # balanced: the first n mod k classes get one more
    return torch.sort(torch.arange(n) % k).values, per_class


def _rows_per_class(x, classes, k: int, per_class: int):
    """The samples laid out one row per class (a short row padded with blank tiles) for the picture."""
    x = x.reshape(len(x), -1).numpy()
    out = np.full((k * per_class, x.shape[1]), np.nan, dtype=np.float32)
    for j in range(k):
        mine = x[classes.numpy() == j][:per_class]
        out[j * per_class : j * per_class + len(mine)] = mine
    return out
