"""Table covariates: the columns of a table that condition a conditional VAE (``--condition-columns``).

The named columns become the condition c and leave the modelled x. Their encoding is fitted on the
training rows only, with the table preprocessing's own column types: a numeric column is
standardised by the training rows' mean and standard deviation, a categorical one is one-hot over
the categories seen in training, a binary one is coded 0 / 1. The fitted encoding is written to
the run folder (``covariates.json``, checksummed) so that every command rebuilds c the same way.

Covariates must be complete: a missing covariate cell, a category never seen in training or a
column that holds a single value in the training rows is refused in one line (a conditional model
has no c to use for such a row; drop or fill those rows first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.tables import Schema
from ..errors import DataError

COVARIATES_FILE = "covariates.json"
FORMAT = 1


@dataclass
class Covariates:
    """The fitted encoding of a table's condition columns. ``schema`` is a table ``Schema`` over the
    condition columns alone; ``table_columns`` is every column of the table in file order (the
    outputs put the condition columns back in their places)."""

    schema: Schema
    table_columns: list[str]

    @property
    def names(self) -> list[str]:
        return self.schema.names

    @property
    def width(self) -> int:
        """Values per example of c (a categorical column counts its categories)."""
        return self.schema.width

    @classmethod
    def fit(
        cls, frame, names, *, table_columns=None, numeric=(), binary=(), categorical=(), source: str = "the table"
    ) -> Covariates:
        """Fit the encoding of columns ``names`` of ``frame`` (the training rows)."""
        names = list(names)
        absent = [n for n in names if n not in frame.columns]
        if absent:
            raise DataError(
                f"--condition-columns names {', '.join(map(repr, absent))}, which {source} does not have; "
                f"its columns are: {', '.join(map(str, frame.columns))}"
            )
        sub = frame[names]
        for name in names:
            n_missing = int(sub[name].isna().sum())
            if n_missing:
                raise DataError(
                    f"condition column {name!r} has {n_missing} missing value(s) in the training rows of {source}; "
                    "covariates must be complete: fill or drop those rows"
                )
            if sub[name].nunique() < 2:
                raise DataError(
                    f"condition column {name!r} holds one value in the training rows of {source}, "
                    "so it cannot condition the model; drop it from --condition-columns"
                )
        schema = Schema.fit(
            sub,
            numeric=[n for n in numeric if n in names],
            binary=[n for n in binary if n in names],
            categorical=[n for n in categorical if n in names],
        )
        order = list(table_columns) if table_columns is not None else list(frame.columns)
        return cls(schema=Schema(columns=schema.columns), table_columns=[str(c) for c in order])

    def check_columns(self, frame, source: str) -> None:
        """Refuse a condition table whose columns are not exactly this run's condition columns."""
        unknown = [str(c) for c in frame.columns if c not in self.names]
        if unknown:
            raise DataError(
                f"{source} has column(s) {', '.join(map(repr, unknown))} that are not condition columns of this "
                f"run; it needs exactly: {', '.join(self.names)}"
            )
        absent = [n for n in self.names if n not in frame.columns]
        if absent:
            raise DataError(
                f"{source} lacks condition column(s) {', '.join(map(repr, absent))}; it needs: {', '.join(self.names)}"
            )

    def encode(self, frame, source: str = "the data") -> np.ndarray:
        """c (N, width) float32 from the raw condition columns of ``frame``: one-line ``DataError``
        for an absent column, a missing cell or a value never seen in training."""
        absent = [n for n in self.names if n not in frame.columns]
        if absent:
            raise DataError(
                f"{source} lack(s) the condition column(s) {', '.join(map(repr, absent))} of this run: add them, "
                "or give the covariates with --condition-file"
            )
        for name in self.names:
            missing = np.flatnonzero(frame[name].isna().to_numpy())
            if missing.size:
                raise DataError(
                    f"condition column {name!r} of {source} has {missing.size} missing value(s) (first in row "
                    f"{missing[0] + 1}); covariates must be complete"
                )
        try:
            c, report = self.schema.transform(frame[self.names], source)
        except DataError as err:
            raise DataError(f"condition column: {err}") from None
        for name, seen in (report.get("unknown") or {}).items():
            col = next(col for col in self.schema.columns if col["name"] == name)
            known = col.get("categories") or col.get("values")
            raise DataError(
                f"condition column {name!r} of {source} holds {next(iter(seen))!r}, which the training rows "
                f"never had; known values: {', '.join(map(str, known))}"
            )
        return c.astype(np.float32)

    def read_file(self, path, n: int | None = None, what: str = "--condition-file"):
        """The raw condition table of ``path`` (exactly the condition columns), checked to hold
        one row or ``n`` rows when ``n`` is given; returns the DataFrame (a single row repeated ``n`` times)."""
        from ..data.tables import TABLE_SUFFIXES, read_table

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{what} {path} does not exist")
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"{what} {path.name} must be a table (.csv, .tsv or .parquet)")
        frame, _, _ = read_table(path)
        self.check_columns(frame, f"{what} {path.name}")
        if n is not None and len(frame) not in (1, n):
            raise DataError(
                f"{what} {path.name} has {len(frame)} rows but the data have {n}; give one row for all or one per row"
            )
        if n is not None and len(frame) == 1 and n != 1:
            frame = frame.iloc[np.zeros(n, dtype=np.intp)].reset_index(drop=True)
        self.encode(frame, f"{what} {path.name}")  # refuses missing or unknown values before any work
        return frame[self.names]

    def merge(self, frame, covariates):
        """The table ``frame`` (the modelled columns) with the condition columns ``covariates`` (raw
        values, one row per row of ``frame``) put back in their original places."""
        import pandas as pd

        cov = covariates.reset_index(drop=True)
        out = pd.concat([frame.reset_index(drop=True), cov[self.names]], axis=1)
        order = [c for c in self.table_columns if c in out.columns]
        return out[order + [c for c in out.columns if c not in order]]

    def describe(self) -> str:
        parts = []
        for c in self.schema.columns:
            if c["kind"] == "numeric":
                parts.append(f"{c['name']} (numeric, standardised)")
            elif c["kind"] == "binary":
                parts.append(f"{c['name']} (binary, 0/1)")
            else:
                parts.append(f"{c['name']} (categorical, one-hot of {len(c['categories'])})")
        return f"c = {', '.join(parts)}: {self.width} values per example"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "covariates",
            "format_version": 2,  # a checksummed file: a missing checksum is then refused
            "format": FORMAT,
            "columns": [dict(c) for c in self.schema.columns],
            "table_columns": list(self.table_columns),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Covariates:
        if not isinstance(d, dict) or d.get("kind") != "covariates":
            raise DataError("this record is not a covariate encoding")
        if d.get("format", FORMAT) > FORMAT:
            raise DataError(f"this covariate encoding has format {d.get('format')}; upgrade vaekit to read it")
        return cls(schema=Schema(columns=[dict(c) for c in d["columns"]]), table_columns=list(d["table_columns"]))
