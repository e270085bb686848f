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
    p.add_argument(
        "--condition",
        type=int,
        metavar="K",
        help="a run trained with --condition label: decode every line under class K (each end is encoded "
        "under its own label) [default: the pair's own label, which both ends must share]",
    )
    outputs.add_condition_file_argument(
        p,
        "a run trained with --condition-columns: a table (.csv) of those columns with one row, the covariates "
        "to decode every line under [default: the pair's own covariates, which both ends must share]",
    )
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
    if args.condition_file is not None:
        runs.check_condition_file(run_)
    if args.condition is not None:
        outputs.refuse_label_condition(run_, "--condition")
        if run_.condition_kind is None:
            raise ValueError(
                "--condition applies to a conditional run (trained with --condition label); this one is not"
            )
        k = int(run_.model.condition_dim)
        if not 0 <= args.condition < k:
            raise ValueError(
                f"--condition {args.condition} is out of range: this run was trained on classes 0..{k - 1}"
            )
    data = outputs.input_data(run_, argparse.Namespace(data=args.data, split=args.split))
    pairs = args.pair or [[0, 1]]
    bad = [i for pair in pairs for i in pair if not -len(data) <= i < len(data)]
    if bad:
        raise ValueError(f"example index {bad[0]} is out of range: the data hold {len(data)} examples")
    ia, ib = [p[0] % len(data) for p in pairs], [p[1] % len(data) for p in pairs]
    a = torch.as_tensor(outputs.rows(data.x, ia))
    b = torch.as_tensor(outputs.rows(data.x, ib))
    ca, cb, line_c, covariates, under = _conditions(run_, data, args, ia, ib)
    how = outputs.decode_how(args)
    outputs.seed_everything(args.seed)
    za, _ = generate.encode(run_.model, a, c=ca)
    zb, _ = generate.encode(run_.model, b, c=cb)
    z = generate.interpolate(za, zb, args.steps).transpose(0, 1)  # (P, S, H)
    steps_c = None
    if line_c is not None:  # each pair's condition at every step of its line
        line_c = torch.as_tensor(np.asarray(line_c))
        steps_c = line_c[:, None].expand(-1, args.steps, *line_c.shape[1:])
    x = generate.decode(run_.model, z, how=how, c=steps_c).numpy()
    index = np.indices(x.shape[:2]).reshape(2, -1)  # the pair and step of each point
    if covariates is not None:
        covariates = covariates.iloc[index[0]].reset_index(drop=True)
    written = outputs.write_data(run_, out, x, lead={"pair": index[0], "step": index[1]}, covariates=covariates)
    print(
        f"wrote {len(pairs)} interpolation(s) of {args.steps} points ({outputs.DESCRIBE_HOW[how]}{under}), "
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


def _conditions(run_, data, args, ia, ib):
    """A conditional run's conditions for the pairs (ends ``ia``, ``ib``): each end's own to encode
    under, the one each line is decoded under (``--condition`` / ``--condition-file``, or the
    pair's own when both ends share it), the raw covariates of each line (a run on table columns)
    and the words for the message. All None (and "") for an unconditional run."""
    from .. import runs

    kind = run_.condition_kind
    if kind is None:
        return None, None, None, None, ""
    c = runs.conditions(run_, data, "the input data")
    ca, cb = c[ia], c[ib]
    covariates = None
    if kind == "label":
        if args.condition is not None:
            return ca, cb, np.full(len(ia), args.condition), None, f", decoded under class {args.condition}"
        differ = [(int(x), int(y)) for x, y in zip(ca, cb) if x != y]
        if differ:
            raise ValueError(
                f"the two examples of a pair have different labels ({differ[0][0]} and {differ[0][1]}); "
                "give --condition K, the class to decode the line under"
            )
        return ca, cb, ca, None, ", each line decoded under its pair's label"
    if args.condition_file is not None:
        covariates = run_.covariates.read_file(args.condition_file)
        if len(covariates) != 1:
            raise ValueError(
                f"--condition-file {args.condition_file} has {len(covariates)} rows; interpolate takes one"
            )
        line = np.repeat(run_.covariates.encode(covariates, "the covariates"), len(ia), axis=0)
        covariates = covariates.iloc[np.zeros(len(ia), dtype=np.intp)].reset_index(drop=True)
        return ca, cb, line, covariates, f", decoded under the covariates of {args.condition_file}"
    if not np.array_equal(ca, cb):
        raise ValueError(
            "the two examples of a pair have different covariates; give --condition-file TABLE (one row of "
            f"{', '.join(run_.covariates.names)}) to decode the line under"
        )
    covariates = data.covariates.iloc[ia].reset_index(drop=True)
    return ca, cb, ca, covariates, ", each line decoded under its pair's covariates"
