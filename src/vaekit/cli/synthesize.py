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
        "A --label-column is not modelled and not written, except for a run trained with --condition label: its "
        "rows are drawn under a class, written in that column.",
    )
    outputs.add_run_argument(p)
    p.add_argument(
        "-n", "--n", type=positive_int, help="number of rows (required, except with --condition-file: one per row)"
    )
    p.add_argument("-o", "--out", help="output table (.csv or .tsv) [default: RUN/synthetic.csv]")
    p.add_argument("--no-missing", action="store_true", help="complete rows: no missing cells")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument(
        "--condition",
        type=int,
        metavar="K",
        help="a run trained with --condition label: every row of class K, x ~ p(x|z, c=K), z ~ p(z|c=K) "
        "[default: each row's class drawn at random from the training rows' labels]",
    )
    outputs.add_condition_file_argument(
        p,
        "a run trained with --condition-columns: a table (.csv) of exactly those columns; one synthetic row per "
        "row of it, x ~ p(x|z, c), z ~ p(z|c), written beside its covariates [default: covariate rows drawn at "
        "random from the run's training rows]",
    )
    return p


def run(args: argparse.Namespace) -> int:
    import torch

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
    if args.condition is not None:
        outputs.refuse_label_condition(run_, "--condition")
        k = int(getattr(run_.model, "condition_dim", 0) or 0)
        if run_.condition_kind != "label":
            raise ValueError("--condition applies to a run trained with --condition label; this one is not")
        if not 0 <= args.condition < k:
            raise ValueError(
                f"--condition {args.condition} is out of range: this run was trained on classes 0..{k - 1}"
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
    classes = None
    if run_.condition_kind == "label":
        classes = _classes(run_, args.condition, args.n, args.seed)
        c = torch.as_tensor(classes)
    table = synthesize(run_.model, run_.schema, args.n, patterns=patterns, seed=args.seed, c=c)
    if covariates is not None:
        table = run_.covariates.merge(table, covariates)
    if classes is not None:
        name = (run_.config["data"].get("options") or {}).get("label_column") or "label"
        if name in table.columns:
            raise ValueError(f"the table already has a column named {name!r}, the run's label column")
        table[name] = classes
    atomic_write_text(out, table.to_csv(index=False, sep="\t" if out.suffix.lower() == ".tsv" else ","))
    holes = int(table.isna().to_numpy().sum())
    print(
        f"{args.n} synthetic rows of {len(table.columns)} columns "
        + ("(x ~ p(x|z), z ~ p(z)), " if c is None else f"(x ~ p(x|z, c), z ~ p(z|c), c {_what_c(args, classes)}), ")
        + f"{holes} missing cells drawn from the training rows' patterns: {out}"
    )
    return 0


def _classes(run_, condition: int | None, n: int, seed: int):
    """Each synthetic row's class: ``condition`` for all, or drawn at random (seeded, with replacement)
    from the run's training labels, so that the classes keep their training frequencies."""
    import numpy as np

    from .. import runs

    if condition is not None:
        return np.full(n, condition, dtype=np.int64)
    labels = runs.class_labels(run_.data("train"), "the run's training rows")
    return labels[np.random.default_rng(seed).integers(0, len(labels), size=n)]


def _what_c(args, classes) -> str:
    if classes is None:
        return f"the covariates of {args.condition_file or 'random training rows'}"
    if args.condition is not None:
        return f"= class {args.condition}"
    return "= classes drawn from the training rows' labels"
