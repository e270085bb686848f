"""``vaekit synthesize RUN -n N -o synth.csv``: synthetic rows of a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DataError
from . import outputs
from .options import positive_int

TABLE_OUTPUTS = (".csv", ".tsv")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synthesize",
        help="synthetic rows of a table: the original columns, categories and missing-value rates",
        description="Draw N synthetic rows from a run trained on a table: z ~ p(z), x ~ p(x|z), written with the "
        "original columns, value types and categories. Missing cells are put back by drawing whole missingness "
        "patterns of the run's training rows (each column keeps its missing rate; independent of the values). "
        "A --label-column is not modelled and not written.",
    )
    outputs.add_run_argument(p)
    p.add_argument(
        "-n", "--n", type=positive_int, help="number of rows (required, except with --condition-file: one per row)"
    )
    p.add_argument("-o", "--out", help="output table (.csv or .tsv) [default: RUN/synthetic.csv]")
    p.add_argument("--no-missing", action="store_true", help="complete rows: no missing cells")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    outputs.add_condition_file_argument(
        p,
        "a run trained with --condition-columns: a table (.csv) of exactly those columns; one synthetic row per "
        "row of it, x ~ p(x|z, c), z ~ p(z|c), written beside its covariates [default: covariate rows drawn at "
        "random from the run's training rows]",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from .. import runs
    from ..checkpoint import atomic_write_text
    from ..synthesis import missing_patterns, synthesize

    run_ = outputs.open_run(args)
    if run_.schema is None:
        raise ValueError(f"{args.run} was not trained on a table; use 'vaekit sample' for other data")
    if args.condition_file is not None:
        runs.check_condition_file(run_)
        if args.n is not None:
            raise ValueError(
                "-n does not apply with --condition-file: one row is drawn per row of the file; "
                "repeat a row in the file to draw more rows under it"
            )
    elif args.n is None:
        raise ValueError("give -n N, the number of rows to draw")
    if run_.condition_kind == "label":
        raise ValueError(
            "synthesize does not take class labels yet; use 'vaekit sample RUN --condition K' for a run "
            "trained with --condition label"
        )
    out = Path(args.out) if args.out else run_.path / "synthetic.csv"
    if out.suffix.lower() not in TABLE_OUTPUTS:
        raise ValueError(f"output file {out} must end in {' or '.join(TABLE_OUTPUTS)}")
    if not out.parent.exists():
        raise ValueError(f"the folder of the output file {out} does not exist; create it first")
    patterns = None
    if not args.no_missing:
        try:
            train = run_.data("train")
        except (DataError, OSError) as err:
            raise DataError(
                f"the run's training table cannot be read for its missing-value rates ({err}); "
                "use --no-missing for complete rows"
            ) from None
        patterns = missing_patterns(run_.schema, train.frame)
    covariates, c = None, None
    if run_.condition_kind == "columns":
        covariates = (
            run_.covariates.read_file(args.condition_file)
            if args.condition_file
            else runs.training_covariates(run_, args.n, args.seed)
        )
        args.n = len(covariates)
        c = run_.covariates.encode(covariates, "the covariates")
    table = synthesize(run_.model, run_.schema, args.n, patterns=patterns, seed=args.seed, c=c)
    if covariates is not None:
        table = run_.covariates.merge(table, covariates)
    atomic_write_text(out, table.to_csv(index=False, sep="\t" if out.suffix.lower() == ".tsv" else ","))
    holes = int(table.isna().to_numpy().sum())
    print(
        f"{args.n} synthetic rows of {len(table.columns)} columns "
        + (
            "(x ~ p(x|z), z ~ p(z)), "
            if c is None
            else f"(x ~ p(x|z, c), z ~ p(z|c), c the covariates of {args.condition_file or 'random training rows'}), "
        )
        + f"{holes} missing cells drawn from the training rows' patterns: {out}"
    )
    return 0
