"""``vaekit traverse RUN``: move one latent unit at a time, the others fixed, and decode."""

from __future__ import annotations

import argparse

import numpy as np

from . import outputs


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated unit numbers like 1,2,3, got {text!r}") from None
    if not units:
        raise argparse.ArgumentTypeError("give at least one unit")
    return units


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two probabilities like 0.05,0.95, got {text!r}") from None
    if not 0 < low < high < 1:
        raise argparse.ArgumentTypeError(f"expected 0 < low < high < 1, got {low}, {high}")
    return low, high


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "traverse",
        help="latent traversals: one unit at a time through the prior's quantiles",
        description="Start from z = 0 (the prior's median) or the encoder mean of one example (--example), "
        "move each chosen unit through the prior's quantiles Phi^-1(p), p evenly spaced in --range, with "
        "the other units fixed, and decode. Writes an array of shape (units, steps, *example shape) and, "
        "for image or 2-D data, a picture (one row or curve per unit).",
    )
    outputs.add_run_argument(p)
    p.add_argument(
        "--units",
        type=_units,
        help="latent units, counted from 1 as in every title and table, e.g. 1,4,6 [default: all, at most 10]",
    )
    p.add_argument("--steps", type=outputs.positive_steps, default=9, help="values per unit")
    p.add_argument(
        "--range",
        type=_range,
        default=(0.05, 0.95),
        metavar="LOW,HIGH",
        help="prior probabilities of the first and last value [default: 0.05,0.95]",
    )
    p.add_argument(
        "--example",
        type=int,
        metavar="I",
        help="start from the encoder mean of example I of --data / --split instead of z = 0",
    )
    p.add_argument(
        "--condition",
        type=int,
        metavar="K",
        help="a conditional run: decode under class K (a traversal per class) [default with --example: the "
        "example's own label]",
    )
    outputs.add_condition_file_argument(
        p,
        "a run trained with --condition-columns: a table (.csv) of exactly those columns with one row, the "
        "covariates to decode under [default with --example: the example's own]",
    )
    outputs.add_data_arguments(p, "take --example from")
    outputs.add_decode_arguments(p)
    p.add_argument(
        "-o",
        "--out",
        help="array file (.npy) [default: RUN/traversal.npy]; for a table run a .csv or "
        ".parquet table, one row per point with its unit and value [default: RUN/traversal.csv]",
    )
    outputs.add_png_arguments(p, "traversal.png")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import generate, runs

    run_ = outputs.open_run(args)
    model = run_.model
    shape = outputs.image_shape(run_)
    out = outputs.output_path(run_, args.out, "traversal")
    png = outputs.png_path(run_, args, "traversal.png", shape is not None or outputs.is_2d(run_))
    numbers = args.units if args.units is not None else list(range(1, min(model.latent_dim, 10) + 1))
    bad = [u for u in numbers if not 1 <= u <= model.latent_dim]
    if bad:
        raise ValueError(
            f"latent unit(s) {bad} out of range: this model has units 1..{model.latent_dim} (counted from 1)"
        )
    units = [u - 1 for u in numbers]  # array indices
    k = int(getattr(model, "condition_dim", 0) or 0)
    if run_.condition_kind == "columns" or args.condition_file is not None:
        return _run_on_covariates(args, run_, numbers, units, shape, out, png)
    if not k and args.condition is not None:
        raise ValueError("--condition applies to a conditional run (trained with --condition label); this one is not")
    if k and args.condition is not None and not 0 <= args.condition < k:
        raise ValueError(f"--condition {args.condition} is out of range: this run was trained on classes 0..{k - 1}")
    if k and args.condition is None and args.example is None:
        raise ValueError(f"a conditional run: give --condition K, the class to decode under (0..{k - 1})")
    decode_c = args.condition
    base = torch.zeros(model.latent_dim)
    if args.example is not None:
        data = outputs.input_data(run_, args)
        if not -len(data) <= args.example < len(data):
            raise ValueError(f"example index {args.example} is out of range: the data hold {len(data)} examples")
        own = None
        if k:  # encode under the example's own label
            own = int(runs.conditions(run_, data, "the input data")[args.example % len(data)])
            decode_c = own if decode_c is None else decode_c
        base, _ = generate.encode(model, outputs.rows(data.x, [args.example % len(data)]), c=own)
        base = base[0]
    elif args.data or args.split:
        raise ValueError("--data / --split choose where --example comes from; give --example I as well")
    start = "z = 0" if args.example is None else f"the encoder mean of example {args.example}"
    if decode_c is not None:
        start += f", decoded under class {decode_c}"
    return _finish(args, run_, base, numbers, units, decode_c, None, start, shape, out, png)


def _run_on_covariates(args, run_, numbers, units, shape, out, png) -> int:
    """traverse for a run on table columns: decoded under one row of covariates (--condition-file, or
    the --example's own), written beside them."""
    import torch

    from .. import generate, runs

    if args.condition_file is not None:
        runs.check_condition_file(run_)
    if args.condition is not None:
        outputs.refuse_label_condition(run_, "--condition")
    model = run_.model
    if args.example is None and args.condition_file is None:
        raise ValueError(
            "a run on table columns: give --condition-file TABLE (one row of "
            f"{', '.join(run_.covariates.names)}) to decode under, or --example I"
        )
    if args.example is None and (args.data or args.split):
        raise ValueError("--data / --split choose where --example comes from; give --example I as well")
    covariates = None if args.condition_file is None else run_.covariates.read_file(args.condition_file)
    if covariates is not None and len(covariates) != 1:
        raise ValueError(f"--condition-file {args.condition_file} has {len(covariates)} rows; traverse takes one")
    base = torch.zeros(model.latent_dim)
    start = "z = 0"
    if args.example is not None:
        data = outputs.input_data(run_, argparse.Namespace(data=args.data, split=args.split))
        if not -len(data) <= args.example < len(data):
            raise ValueError(f"example index {args.example} is out of range: the data hold {len(data)} examples")
        i = args.example % len(data)
        own = runs.conditions(run_, data, "the input data")[[i]]  # encode under the example's own covariates
        base = generate.encode(model, outputs.rows(data.x, [i]), c=own)[0][0]
        start = f"the encoder mean of example {args.example}"
        if covariates is None:
            covariates = data.covariates.iloc[[i]].reset_index(drop=True)
    c = torch.as_tensor(run_.covariates.encode(covariates, "the covariates"))[0]
    start += f", decoded under the covariates {covariates.iloc[0].to_dict()}"
    return _finish(args, run_, base, numbers, units, c, covariates, start, shape, out, png)


def _finish(args, run_, base, numbers, units, decode_c, covariates, start, shape, out, png) -> int:
    """Decode the traversal from ``base`` under ``decode_c``, write it and its picture."""
    from .. import generate, plots, runs

    low, high = args.range
    values = generate.prior_quantiles(args.steps, low, high)
    z = generate.traverse(base, units, values)  # validates the units
    how = outputs.decode_how(args)
    outputs.seed_everything(args.seed)
    x = generate.decode(run_.model, z, how=how, c=decode_c).numpy()
    lead = {"unit": np.repeat(numbers, len(values)), "value": np.tile(values.numpy(), len(units))}
    if covariates is not None:  # every point of the traversal was decoded under the one row
        covariates = covariates.iloc[np.zeros(x.shape[0] * x.shape[1], dtype=np.intp)].reset_index(drop=True)
    written = outputs.write_data(run_, out, x, lead=lead, covariates=covariates)
    print(
        f"traversed units {', '.join(f'z{u}' for u in numbers)} over {args.steps} values from {start} "
        f"({outputs.DESCRIBE_HOW[how]}), array shape {x.shape}, to {out} ({written})"
    )
    if png is not None:
        fit = runs.read_input(run_, None, which="train").x
        fig = plots.traversal_figure(
            x,
            units,
            values.numpy(),
            image_shape=shape,
            data=None if shape is not None else fit,
            value_range=(float(fit.min()), float(fit.max())),
            at_zero=args.example is None,
            quantiles=(low, high),
        )
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0
