"""``vaekit sample RUN -n N``: generate new examples from a trained run."""

from __future__ import annotations

import argparse
import math

from .. import generate, limits, plots, runs
from . import outputs
from .options import positive_int


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
    p.add_argument("-n", "--n", type=positive_int, default=64, help="number of examples")
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
    run_ = outputs.open_run(args)
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
    outputs.seed_everything(args.seed)
    z = model.p_z().sample((args.n,))
    x = generate.decode(model, z, how=how)
    written = outputs.write_data(run_, out, x.numpy())
    print(f"wrote {args.n} samples ({outputs.DESCRIBE_HOW[how]}) of shape {tuple(x.shape[1:])} to {out} ({written})")
    if png is not None:
        fit = runs.read_input(run_, None, which="train").x
        shown = min(args.n, outputs.MAX_TILES) if shape is not None else args.n
        title = f"{shown} samples: z ~ p(z), {outputs.DESCRIBE_HOW[how]}"
        if shape is not None:
            fig = plots.image_grid(
                x[:shown].numpy(), shape, value_range=(float(fit.min()), float(fit.max())), title=title
            )
        else:
            fig = plots.points_over_data(x.numpy(), fit, colour=z[:, 0].cpu().numpy(), colour_name="$z_1$", title=title)
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0
