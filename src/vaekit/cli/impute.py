"""``vaekit impute RUN --data x.csv [--multiple M] -o out.csv``: fill a table's missing cells (MIWAE)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import outputs
from .names import IMPUTE_K
from .options import positive_int

TABLE_OUTPUTS = (".csv", ".tsv")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "impute",
        help="fill the missing cells of a table (importance-weighted, MIWAE)",
        description="Fill the empty cells of a table with a run trained on a table. Single imputation: the "
        "importance-weighted conditional mean E[x_miss | x_obs] (K draws from q(z|x_obs) per row; categorical and "
        "binary cells get their most probable value). --multiple M: M completed tables by sampling importance "
        "resampling, in one file with an 'imputation' column (1..M), or M files with --separate. Observed cells "
        "are written back exactly as read; train with --iw-samples K for the MIWAE bound (Mattei & Frellsen 2019).",
    )
    outputs.add_run_argument(p)
    p.add_argument("--data", required=True, help="the table to complete (.csv, .tsv, .parquet) with the run's columns")
    p.add_argument("--multiple", type=positive_int, metavar="M", help="M imputations by sampling importance resampling")
    p.add_argument(
        "--separate",
        action="store_true",
        help="with --multiple: write OUT_1.csv ... OUT_M.csv instead of one file with an 'imputation' column",
    )
    p.add_argument("-k", "--k", type=positive_int, default=IMPUTE_K, help="importance samples per row")
    outputs.add_condition_file_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples and draws")
    p.add_argument("-o", "--out", help="output table (.csv or .tsv) [default: RUN/imputed.csv]")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import runs
    from ..checkpoint import atomic_write_text
    from ..data.tables import read_table
    from ..imputation import conditional_mean, fill_frame, multiple_imputations

    run_ = outputs.open_run(args)
    if run_.schema is None:
        raise ValueError(f"{args.run} was not trained on a table; 'vaekit impute' fills the missing cells of tables")
    if args.separate and not args.multiple:
        raise ValueError("--separate applies to --multiple M")
    out = Path(args.out) if args.out else run_.path / "imputed.csv"
    if out.suffix.lower() not in TABLE_OUTPUTS:
        raise ValueError(f"output file {out} must end in {' or '.join(TABLE_OUTPUTS)}")
    if not out.parent.exists():
        raise ValueError(f"the folder of the output file {out} does not exist; create it first")
    # checks the columns against the run and notes unknown values
    data = runs.read_input(run_, args.data, condition_file=args.condition_file)
    c = runs.conditions(run_, data, Path(args.data).name)  # a run on table columns: complete covariates
    frame, _, _ = read_table(args.data)  # every column as read, the label column too: the output keeps them
    if args.condition_file is not None and run_.condition_kind == "columns":
        # the covariates each row was filled under, in their places of the training table
        covariates = run_.covariates.read_file(args.condition_file, n=len(frame))
        frame = run_.covariates.merge(frame.drop(columns=run_.covariates.names, errors="ignore"), covariates)
    x = torch.as_tensor(np.asarray(data.x, dtype=np.float32), device=next(run_.model.parameters()).device)
    n_missing = int(sum(frame[c["name"]].isna().sum() for c in run_.schema.columns))
    sep = "\t" if out.suffix.lower() == ".tsv" else ","
    if not args.multiple:
        filled = conditional_mean(run_.model, x, k=args.k, seed=args.seed, c=c).cpu().numpy()
        atomic_write_text(out, fill_frame(run_.schema, frame, filled).to_csv(index=False, sep=sep))
        print(
            f"{n_missing} missing cells in {len(frame)} rows filled by the importance-weighted conditional mean "
            f"(K={args.k} draws from q(z|x_obs) per row): {out}"
        )
        return 0
    copies = multiple_imputations(run_.model, x, args.multiple, k=args.k, seed=args.seed, c=c).cpu().numpy()
    tables = [fill_frame(run_.schema, frame, c) for c in copies]
    how = f"{args.multiple} imputations by sampling importance resampling (K={args.k})"
    if args.separate:
        paths = [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(1, args.multiple + 1)]
        for path, table in zip(paths, tables):
            atomic_write_text(path, table.to_csv(index=False, sep=sep))
        print(f"{n_missing} missing cells in {len(frame)} rows, {how}: {paths[0]} ... {paths[-1]}")
        return 0
    import pandas as pd

    if "imputation" in frame.columns:
        raise ValueError("the table already has a column named 'imputation'; use --separate to write one file each")
    stacked = pd.concat([t.assign(imputation=i) for i, t in enumerate(tables, start=1)], ignore_index=True)
    stacked = stacked[["imputation", *frame.columns]]
    atomic_write_text(out, stacked.to_csv(index=False, sep=sep))
    print(f"{n_missing} missing cells in {len(frame)} rows, {how}, stacked with an 'imputation' column: {out}")
    return 0
