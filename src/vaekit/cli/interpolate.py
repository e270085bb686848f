"""``vaekit interpolate RUN``: decode straight lines between the codes of two examples."""

from __future__ import annotations

import argparse

import numpy as np

from . import outputs


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "interpolate",
        help="decode points between the encoder means of pairs of examples",
        description="Encode pairs of examples (their posterior means), walk the straight line between the "
        "two codes in --steps points (both ends included) and decode each. Writes an array of shape "
        "(pairs, steps, *example shape) (for a run trained on a table: a CSV or Parquet table, one row per "
        "point, its pair and step in front of the original columns) and, for image or 2-D data, a picture.",
    )
    outputs.add_run_argument(p)
    outputs.add_data_arguments(p, "take the examples from")
    p.add_argument(
        "--pair",
        nargs=2,
        type=int,
        action="append",
        metavar=("I", "J"),
        help="indices of two examples in the data; repeat for more rows [default: 0 1]",
    )
    p.add_argument("--steps", type=outputs.positive_steps, default=8, help="points on each line, ends included")
    outputs.add_decode_arguments(p)
    p.add_argument(
        "-o",
        "--out",
        help="array file (.npy) [default: RUN/interpolation.npy]; for a table run a .csv "
        "or .parquet table [default: RUN/interpolation.csv] (.npy: the model-space numbers)",
    )
    outputs.add_png_arguments(p, "interpolation.png")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import generate, plots, runs

    run_ = outputs.open_run(args)
    shape = outputs.image_shape(run_)
    out = outputs.output_path(run_, args.out, "interpolation")
    png = outputs.png_path(run_, args, "interpolation.png", shape is not None or outputs.is_2d(run_))
    if getattr(run_.model, "condition_dim", 0):
        flag = "--condition-file TABLE" if run_.condition_kind == "columns" else "--condition K"
        counter = "--as-condition-file TABLE" if run_.condition_kind == "columns" else "--as-condition K"
        raise ValueError(
            f"interpolate is not available for a conditional run yet; use 'vaekit traverse RUN {flag}' "
            f"or 'vaekit reconstruct RUN {counter}'"
        )
    data = outputs.input_data(run_, args)
    pairs = args.pair or [[0, 1]]
    bad = [i for pair in pairs for i in pair if not -len(data) <= i < len(data)]
    if bad:
        raise ValueError(f"example index {bad[0]} is out of range: the data hold {len(data)} examples")
    a = torch.as_tensor(outputs.rows(data.x, [p[0] % len(data) for p in pairs]))
    b = torch.as_tensor(outputs.rows(data.x, [p[1] % len(data) for p in pairs]))
    how = outputs.decode_how(args)
    outputs.seed_everything(args.seed)
    za, _ = generate.encode(run_.model, a)
    zb, _ = generate.encode(run_.model, b)
    z = generate.interpolate(za, zb, args.steps).transpose(0, 1)  # (P, S, H)
    x = generate.decode(run_.model, z, how=how).numpy()
    index = np.indices(x.shape[:2]).reshape(2, -1)  # the pair and step of each point
    written = outputs.write_data(run_, out, x, lead={"pair": index[0], "step": index[1]})
    print(
        f"wrote {len(pairs)} interpolation(s) of {args.steps} points ({outputs.DESCRIBE_HOW[how]}), "
        f"array shape {x.shape}, to {out} ({written})"
    )
    if png is not None:
        fit = runs.read_input(run_, None, which="train").x
        fig = plots.interpolation_figure(
            a.numpy(),
            b.numpy(),
            x,
            image_shape=shape,
            data=None if shape is not None else fit,
            value_range=(float(fit.min()), float(fit.max())),
        )
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0
