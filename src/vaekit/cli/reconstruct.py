"""``vaekit reconstruct RUN --data ...``: examples beside their reconstructions."""

from __future__ import annotations

import argparse

import numpy as np

from . import outputs
from .options import positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reconstruct",
        help="encode and decode examples: originals beside reconstructions",
        description="Encode each example, take z ~ q(z|x) (or its mean with --mean-z) and decode it. "
        "Writes an .npz holding 'original' and 'reconstruction' (or only the reconstructions to an .npy) "
        "and, for image data, originals and reconstructions as paired grids (2-D data: both over the data). "
        "For a run trained on a table: the reconstructed table as CSV or Parquet (by the extension of -o; "
        ".npz/.npy give the model-space numbers) and the table with its missing cells filled by "
        "reconstruction, OUT_imputed.csv.",
    )
    outputs.add_run_argument(p)
    outputs.add_data_arguments(p, "reconstruct")
    p.add_argument("-n", "--n", type=positive_int, help="only the first N examples [default: all]")
    p.add_argument(
        "--as-condition",
        type=int,
        metavar="K",
        help="a conditional run: encode each example under its own class label, decode under class K "
        "(a counterfactual: the example as class K) [default: decode under its own label]",
    )
    outputs.add_condition_file_argument(p)
    p.add_argument(
        "--as-condition-file",
        metavar="TABLE",
        help="a run trained with --condition-columns: encode each row under its own covariates, decode under "
        "the covariates in this table (exactly the condition columns; one row for all or one per example): a "
        "counterfactual. The output's condition columns then hold these covariates",
    )
    p.add_argument("--mean-z", action="store_true", help="decode the posterior mean instead of a draw z ~ q(z|x)")
    outputs.add_decode_arguments(p)
    p.add_argument(
        "-o",
        "--out",
        help="output file: .npz (original and reconstruction) or .npy (reconstructions) "
        "[default: RUN/reconstructions.npz]; for a table run also .csv or .parquet "
        "[default: RUN/reconstructions.csv]",
    )
    outputs.add_png_arguments(p, "reconstructions.png")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import generate, plots, runs

    run_ = outputs.open_run(args)
    shape = outputs.image_shape(run_)
    out = outputs.output_path(run_, args.out, "reconstructions", numeric=(".npz", ".npy"))
    png = outputs.png_path(run_, args, "reconstructions.png", shape is not None or outputs.is_2d(run_))
    if args.as_condition_file is not None:
        runs.check_condition_file(run_, "--as-condition-file")
    if args.as_condition is not None:
        outputs.refuse_label_condition(run_, "--as-condition", "--as-condition-file")
    data = outputs.input_data(run_, args)
    x = outputs.rows(data.x, slice(0, args.n))  # in memory: the originals are written too
    how = outputs.decode_how(args)
    c, decode_c, under = _conditions(run_, data, args.as_condition, len(x))
    covariates = None if data.covariates is None else data.covariates.iloc[: len(x)]
    if args.as_condition_file is not None:  # the counterfactual: decode under the file's covariates
        covariates = run_.covariates.read_file(args.as_condition_file, len(x), "--as-condition-file")
        decode_c = run_.covariates.encode(covariates, f"--as-condition-file {args.as_condition_file}")
        under = f", encoded under each row's own covariates, decoded under those of {args.as_condition_file}"
    elif c is not None and run_.condition_kind == "columns":
        under = f", encoded and decoded under {outputs.condition_words(run_, args)}"
    outputs.seed_everything(args.seed)
    rec = generate.reconstruct(run_.model, x, how=how, sample_z=not args.mean_z, c=c, decode_c=decode_c).numpy()
    if out.suffix.lower() == ".npz":
        outputs.write_npz(out, original=x, reconstruction=rec)
    else:
        outputs.write_data(run_, out, rec, covariates=covariates)
    z_how = "the posterior mean" if args.mean_z else "z ~ q(z|x)"
    diff = (rec.reshape(len(x), -1) - x.reshape(len(x), -1)).astype(np.float64)
    observed = ~np.isnan(diff)  # a table's missing cells have nothing to compare with
    mse = float(np.mean(diff[observed] ** 2)) if observed.any() else float("nan")
    mae = float(np.mean(np.abs(diff[observed]))) if observed.any() else float("nan")
    print(
        f"reconstructed {len(x)} examples ({outputs.DESCRIBE_HOW[how]} of {z_how}{under}) to {out}; "
        f"mean squared difference {mse:.4g}, mean absolute {mae:.4g} (in the model's data space"
        f"{', observed values' if not observed.all() else ''})"
    )
    if run_.schema is not None:  # a table: also fill its missing values by reconstruction
        _write_imputed(run_, x, out, c, data.covariates)
    if png is not None:
        if shape is not None:
            shown = min(len(x), outputs.MAX_TILES // 2)
            lo, hi = float(min(x.min(), rec.min())), float(max(x.max(), rec.max()))
            fig = plots.reconstruction_grid(x[:shown], rec[:shown], shape, value_range=(lo, hi))
        else:
            fig = plots.points_over_data(
                rec, x, title=f"{len(x)} reconstructions over their originals (grey)", label="reconstructions"
            )
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0


def _write_imputed(run_, x, out, c=None, covariates=None) -> None:
    """The table with every missing value replaced by its reconstruction (observed values kept),
    in the original columns and categories, as OUT_imputed.csv (a run on table columns: encoded
    and decoded under each row's own covariates ``c``, which are copied through)."""
    from .. import runs
    from ..checkpoint import atomic_write_text
    from ..tabular import impute

    filled = impute(run_.model, x, c=c).cpu().numpy()
    path = out.with_name(out.stem + "_imputed.csv")
    cov = None if covariates is None else covariates.iloc[: len(x)]
    atomic_write_text(path, runs.format_output(run_, filled, cov).to_csv(index=False))
    cells = run_.schema.missing_cells(x)  # cells of the table, not model columns (a category is one cell)
    print(f"{cells} missing cell(s) of {len(x)} x {len(run_.schema.names)} filled by reconstruction: {path}")


def _conditions(run_, data, as_condition: int | None, n: int):
    """A conditional run's conditions: the examples' labels to encode under, the class to decode under
    (None: their own), and the words for it; (None, None, "") for an unconditional run."""
    from .. import runs

    k = int(getattr(run_.model, "condition_dim", 0) or 0)
    if not k:
        if as_condition is not None:
            raise ValueError(
                "--as-condition applies to a conditional run (trained with --condition label); this one is not"
            )
        return None, None, ""
    if run_.condition_kind == "columns":
        return runs.conditions(run_, data, "the input data")[:n], None, ""
    if as_condition is not None and not 0 <= as_condition < k:
        raise ValueError(f"--as-condition {as_condition} is out of range: this run was trained on classes 0..{k - 1}")
    labels = runs.conditions(run_, data, "the input data")[:n]
    if as_condition is None:
        return labels, None, ", encoded and decoded under each example's own label"
    return labels, as_condition, f", encoded under each example's own label, decoded as class {as_condition}"
