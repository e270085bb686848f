"""Tables with mixed columns (CSV, Parquet): column types, the fitted preprocessing, and the way
back from the model's numbers to a table.

Each column becomes one of

- ``numeric``: standardised, (value - mean) / scale, one model column;
- ``binary``: two distinct values, coded 0 / 1 in sorted order, one model column;
- ``categorical``: one-hot over the categories seen in training, one model column each;
- ``constant``: a single value in training; not modelled, given back as that value.

Types are inferred (two distinct values -> binary, numbers -> numeric, anything else ->
categorical) unless named in ``numeric`` / ``binary`` / ``categorical``. A missing value
(empty cell, NA) becomes NaN in the model's numbers and drops out of the likelihood; a
category never seen in training is reported and treated as missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
KINDS = ("numeric", "binary", "categorical", "constant")


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is a dependency
        raise DataError("reading tables needs pandas: pip install pandas") from None
    return pandas


def _check_parquet_size(path: Path) -> None:
    """Refuse a Parquet file whose footer promises more than this machine's memory, before reading
    it: its row groups' uncompressed size plus a float64 copy of every cell."""
    import pyarrow.parquet as pq

    from ..limits import require_memory

    meta = pq.read_metadata(path)
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    try:
        require_memory(
            raw + 8 * meta.num_rows * meta.num_columns,
            f"reading {path.name} ({meta.num_rows} rows x {meta.num_columns} columns)",
            "use a sample of its rows",
        )
    except ValueError as err:
        raise DataError(str(err)) from None


def read_table(path: str | Path, label_column: str | None = None):
    """(features DataFrame, labels or None, info) from a CSV/TSV or Parquet file."""
    pd = _pandas()
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError("reading Parquet files needs pyarrow: pip install 'vaekit[parquet]'") from None
            _check_parquet_size(path)
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, skipinitialspace=True)
            _refuse_ragged_rows(path, sep)
            if all(_is_number(c) for c in frame.columns):  # no header row: the first row is data
                frame = pd.read_csv(path, sep=sep, skipinitialspace=True, header=None)
                frame.columns = [f"x{i}" for i in range(frame.shape[1])]
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name} is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path.name} has ragged rows ({str(err).strip().splitlines()[-1]}); every row needs the same "
            "number of fields"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    except Exception as err:  # pyarrow raises its own error types for broken files
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise DataError(f"{path.name} has repeated column names")
    if len(frame) == 0:
        raise DataError(f"{path.name} holds no rows")
    info: dict[str, Any] = {"path": str(path.resolve()), "rows": len(frame)}
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DataError(
                f"--label-column {label_column!r} is not a column of {path.name}; its columns are: "
                + ", ".join(frame.columns)
            )
        labels, names = encode_labels(frame[label_column])
        if names is not None:
            info["label_names"] = names
        info["label_column"] = label_column
        frame = frame.drop(columns=[label_column])
    if frame.shape[1] == 0:
        raise DataError(f"{path.name} has no columns left to model")
    return frame.reset_index(drop=True), labels, info


def _refuse_ragged_rows(path: Path, sep: str) -> None:
    """pandas reads a row with too few fields as missing values (and one with a field too many
    in every row as an index column); both are refused here, naming the line."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep, skipinitialspace=True)
        expected = None
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines are skipped, as pandas does
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                raise DataError(
                    f"{path.name} has ragged rows: line {reader.line_num} has {len(row)} fields, the first "
                    f"row has {expected}; every row needs the same number of fields (leave a missing "
                    "value empty, e.g. 1,,3)"
                )


def _is_number(text) -> bool:
    try:
        float(str(text))
        return True
    except ValueError:
        return False


def encode_labels(series) -> tuple[np.ndarray, list | None]:
    """Numeric labels as they are (integers when they are whole numbers); others as codes
    0..K-1 in sorted order, with the names. Missing labels: NaN, or -1 for coded ones."""
    pd = _pandas()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        v = series.to_numpy(dtype=np.float64)
        ok = ~np.isnan(v)
        if ok.all() and np.all(v == np.round(v)):
            return v.astype(np.int64), None
        return v, None
    names = sorted({_py(v) for v in series.dropna()}, key=_sort_key)
    lookup = {_key(v): i for i, v in enumerate(names)}
    codes = np.array([-1 if _missing(v) else lookup[_key(v)] for v in series], dtype=np.int64)
    return codes, names


# -- values ------------------------------------------------------------------------------
def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v)) or v is _pandas().NA or v is _pandas().NaT
    except TypeError:
        return False


def _py(v):
    """A plain JSON-able Python value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def _key(v) -> str:
    """How values are matched: 3, 3.0 and "3" are the same category; True and "True" too."""
    v = _py(v)
    return str(v).strip()


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _as_numbers(series) -> tuple[np.ndarray, list]:
    """float64 values (NaN for missing) and the cells that are not numbers."""
    pd = _pandas()
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64), []
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = [v for v, n in zip(series, numbers) if math.isnan(n) and not _missing(v)]
    return numbers, bad


# -- the schema ----------------------------------------------------------------------------
@dataclass
class Schema:
    """The fitted preprocessing of a table: one dict per feature column, in file order, with
    ``name``, ``kind`` and ``mean``/``scale``/``integer`` (numeric), ``values`` (binary: the value
    coded 0, the value coded 1), ``categories`` (categorical) or ``value`` (constant)."""

    columns: list[dict[str, Any]]
    label_column: str | None = None
    notes: list[str] = field(default_factory=list)

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frame,
        *,
        numeric: Iterable[str] = (),
        binary: Iterable[str] = (),
        categorical: Iterable[str] = (),
        label_column: str | None = None,
        max_categories: int = 100,
    ) -> Schema:
        forced = {}
        for kind, names in (("numeric", numeric), ("binary", binary), ("categorical", categorical)):
            for name in _names(names):
                if name not in frame.columns:
                    raise DataError(
                        f"--{kind} names column {name!r}, which the table does not have; its columns are: "
                        + ", ".join(frame.columns)
                    )
                if name in forced and forced[name] != kind:
                    raise DataError(f"column {name!r} is named both --{forced[name]} and --{kind}")
                forced[name] = kind
        columns, notes = [], []
        for name in frame.columns:
            col = _fit_column(name, frame[name], forced.get(name), len(frame), max_categories)
            if col["kind"] == "constant":
                notes.append(f"column {name!r} holds one value ({col['value']!r}) in the training rows: not modelled")
            columns.append(col)
        if all(c["kind"] == "constant" for c in columns):
            raise DataError("every column of the table holds a single value; there is nothing to model")
        return cls(columns=columns, label_column=label_column, notes=notes)

    # -- shapes ---------------------------------------------------------------------------
    @property
    def modelled(self) -> list[dict[str, Any]]:
        return [c for c in self.columns if c["kind"] != "constant"]

    @property
    def width(self) -> int:
        return sum(len(c["categories"]) if c["kind"] == "categorical" else 1 for c in self.modelled)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def likelihood_columns(self) -> list[dict[str, Any]]:
        """The column list of the ``Mixed`` likelihood that models this table."""
        out = []
        for c in self.modelled:
            entry = {"name": c["name"], "kind": c["kind"]}
            if c["kind"] == "numeric":
                entry["unit_scale"] = c["scale"]
            elif c["kind"] == "categorical":
                entry["size"] = len(c["categories"])
            out.append(entry)
        return out

    def likelihood(self):
        from ..likelihoods import Mixed

        return Mixed(self.likelihood_columns())

    # -- table -> numbers -----------------------------------------------------------------
    def transform(self, frame, source: str = "the table") -> tuple[np.ndarray, dict[str, Any]]:
        """(x (N, width) float32 with NaN for missing, report). The report lists unknown
        categories / binary values (set missing), the count of missing cells and extra columns."""
        absent = [c["name"] for c in self.columns if c["name"] not in frame.columns]
        if absent:
            raise DataError(f"{source} lacks column(s) {', '.join(map(repr, absent))} that the model was trained on")
        extra = [c for c in frame.columns if c not in self.names and c != self.label_column]
        n = len(frame)
        blocks, unknown = [], {}
        for c in self.modelled:
            series = frame[c["name"]]
            if c["kind"] == "numeric":
                v, bad = _as_numbers(series)
                if bad:
                    raise DataError(f"numeric column {c['name']!r} holds {bad[0]!r}, which is not a number")
                blocks.append(((v - c["mean"]) / c["scale"])[:, None])
                continue
            keys = [None if _missing(v) else _key(v) for v in series]
            known = c["values"] if c["kind"] == "binary" else c["categories"]
            lookup = {_key(v): i for i, v in enumerate(known)}
            codes = np.array([-2 if k is None else lookup.get(k, -1) for k in keys], dtype=np.int64)
            if (codes == -1).any():
                seen: dict[str, int] = {}
                for k, code in zip(keys, codes):
                    if code == -1:
                        seen[k] = seen.get(k, 0) + 1
                unknown[c["name"]] = seen
            if c["kind"] == "binary":
                blocks.append(np.where(codes >= 0, codes, np.nan)[:, None])
            else:
                block = np.full((n, len(known)), np.nan)
                ok = codes >= 0
                block[ok] = 0.0
                block[np.flatnonzero(ok), codes[ok].astype(np.intp)] = 1.0  # intp: empty frames give float codes
                blocks.append(block)
        x = np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.empty((n, 0), np.float32)
        if np.isinf(x).any():
            raise DataError(f"{source} holds infinite values; remove them or leave the cells empty (missing)")
        report = {"unknown": unknown, "extra_columns": extra, "missing_cells": self.missing_cells(x)}
        return x, report

    def missing_cells(self, x: np.ndarray) -> int:
        """How many cells of the table are missing in model-space rows ``x``: a categorical
        column's one-hot block counts once, as the one cell it came from."""
        x = np.asarray(x)
        count, pos = 0, 0
        for c in self.modelled:
            width = len(c["categories"]) if c["kind"] == "categorical" else 1
            count += int(np.isnan(x[:, pos]).sum())
            pos += width
        return int(count)

    # -- numbers -> table -----------------------------------------------------------------
    def inverse(self, x: np.ndarray):
        """A DataFrame with the original columns and values from model-space rows ``x`` (decoded
        means, draws, reconstructions): numeric de-standardised (rounded for integer columns),
        binary by P(1) >= 0.5, categorical the most probable category; NaN stays missing."""
        pd = _pandas()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise DataError(f"rows of {self.width} model columns are needed to make this table, got shape {x.shape}")
        out, pos = {}, 0
        for c in self.columns:
            kind = c["kind"]
            if kind == "constant":
                out[c["name"]] = [c["value"]] * len(x)
                continue
            if kind == "numeric":
                v = x[:, pos] * c["scale"] + c["mean"]
                if c.get("integer"):
                    v = np.round(v)
                out[c["name"]] = pd.array(v, dtype="Int64") if c.get("integer") and not np.isnan(v).any() else v
                pos += 1
            elif kind == "binary":
                v = x[:, pos]
                out[c["name"]] = [None if math.isnan(p) else c["values"][int(p >= 0.5)] for p in v]
                pos += 1
            else:
                k = len(c["categories"])
                block = x[:, pos : pos + k]
                missing = np.isnan(block).any(1)
                idx = np.nan_to_num(block, nan=-1.0).argmax(1)
                out[c["name"]] = [None if m else c["categories"][i] for m, i in zip(missing, idx)]
                pos += k
        return pd.DataFrame(out)

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "table",
            "columns": [dict(c) for c in self.columns],
            "label_column": self.label_column,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        if d.get("kind") != "table":
            raise DataError("this preprocessing record is not a table schema")
        return cls(
            columns=[dict(c) for c in d["columns"]], label_column=d.get("label_column"), notes=list(d.get("notes", []))
        )

    def describe(self) -> str:
        counts = {k: sum(c["kind"] == k for c in self.columns) for k in KINDS}
        return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def _names(names) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    return [str(n).strip() for n in names if str(n).strip()]


def _fit_column(name: str, series, forced: str | None, n_rows: int, max_categories: int) -> dict[str, Any]:
    pd = _pandas()
    present = series.dropna()
    if len(present) == 0:
        raise DataError(f"column {name!r} has no values in the training rows; drop it")
    distinct = sorted({_key(v): _py(v) for v in present}.values(), key=_sort_key)
    is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if forced is None:
        if len(distinct) == 1:
            return {"name": name, "kind": "constant", "value": distinct[0]}
        if len(distinct) == 2:
            forced = "binary"
        elif is_number:
            forced = "numeric"
        else:
            numbers, bad = _as_numbers(series)
            if not bad:
                forced = "numeric"
            elif len(distinct) > max_categories or (len(distinct) > 20 and len(distinct) > 0.5 * n_rows):
                raise DataError(
                    f"column {name!r} looks like free text or an identifier ({len(distinct)} different "
                    f"values in {n_rows} rows); drop it, use it as --label-column, or force it with "
                    f"--categorical {name}"
                )
            else:
                forced = "categorical"
    if forced == "numeric":
        v, bad = _as_numbers(series)
        if bad:
            raise DataError(f"column {name!r} is numeric but holds {bad[0]!r}, which is not a number")
        v = v[~np.isnan(v)]
        if np.isinf(v).any():
            raise DataError(f"column {name!r} holds infinite values; remove them or leave the cells empty")
        mean, std = float(v.mean()), float(v.std())
        return {
            "name": name,
            "kind": "numeric",
            "mean": mean,
            "scale": std if std > 0 else 1.0,
            "integer": bool(np.all(v == np.round(v))),
        }
    if forced == "binary":
        if len(distinct) > 2:
            raise DataError(
                f"column {name!r} is binary but holds {len(distinct)} different values "
                f"({', '.join(map(repr, distinct[:4]))}...); use --categorical {name}"
            )
        values = distinct if len(distinct) == 2 else distinct + [f"not {distinct[0]}"]
        return {"name": name, "kind": "binary", "values": values}
    if len(distinct) < 2:
        distinct = distinct + [f"not {distinct[0]}"]
    return {"name": name, "kind": "categorical", "categories": distinct}


def load_table(
    path: Path,
    *,
    label_column: str | None = None,
    numeric=(),
    binary=(),
    categorical=(),
    schema: Schema | dict | None = None,
):
    """(x, labels, info, frame, schema, report): the table read and put through ``schema`` (or a
    schema fitted on all of its rows)."""
    frame, labels, info = read_table(path, label_column)
    if schema is None:
        schema = Schema.fit(frame, numeric=numeric, binary=binary, categorical=categorical, label_column=label_column)
    elif isinstance(schema, dict):
        schema = Schema.from_dict(schema)
    x, report = schema.transform(frame, path.name)
    info["columns"] = list(schema.names)
    return x, labels, info, frame, schema, report


def unknown_summary(report: dict[str, Any]) -> str | None:
    """One line naming the unknown categories of a transform, or None."""
    unknown = report.get("unknown") or {}
    if not unknown:
        return None
    parts = []
    for col, seen in unknown.items():
        shown = ", ".join(f"{k!r} ({n}x)" for k, n in list(seen.items())[:3])
        more = f" and {len(seen) - 3} more" if len(seen) > 3 else ""
        parts.append(f"{col}: {shown}{more}")
    total = sum(sum(s.values()) for s in unknown.values())
    return f"{total} value(s) not seen in training were treated as missing: " + "; ".join(parts)
