"""A run's data: the split it was trained on, new data passed through its preprocessing, and
model-space outputs turned back into the data's own form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import likelihoods
from ..data import Dataset
from ..data import load as load_data
from ..data import split as split_indices
from ..data.builtin import BUILTIN
from ..data.tables import Schema, unknown_summary
from ..errors import DataError
from ..model import Model
from ..train import History
from .covariates import Covariates
from .folder import RunFolder

COVARIATE_ENCODING = "covariate_encoding"  # the fitted ``Covariates`` of a split, in ``Dataset.info``


def load_splits(
    data_cfg: dict[str, Any], schema: Schema | None = None, covariates: Covariates | None = None
) -> dict[str, Dataset]:
    """The run's data (``DataConfig.to_dict()``, as in config.json), split exactly as when it was
    trained. A table's preprocessing (column types, scales, categories) is fitted on the training
    rows only, or ``schema`` is applied. With ``condition_columns`` those columns leave the table
    (``Dataset.covariates``) and their encoding is fitted on the training rows too, or
    ``covariates`` is applied. With dynamic binarisation the validation and test rows
    are binarised once (seeded), the training rows stay probabilities."""
    if data_cfg.get("source") == "array":  # written by vaekit.VAE.save: the rows were never stored
        raise DataError(
            "this run was trained on in-memory arrays (vaekit.VAE.save), so its data are not stored; "
            "give the data to use"
        )
    full = load_data(data_cfg["source"], **data_cfg.get("options", {}))
    idx = split_indices(len(full), tuple(data_cfg["split"]["fractions"]), data_cfg["split"]["seed"])
    parts = dict(zip(("train", "val", "test"), (full.subset(i) for i in idx)))
    if len(parts["train"]) == 0:
        raise DataError(f"{data_cfg['source']} leaves no training examples after the split")
    names = list(data_cfg.get("condition_columns") or ())
    if names and full.schema is None:
        raise DataError(f"condition columns apply to tables; {data_cfg['source']} is not one")
    if full.schema is not None:
        opts = data_cfg.get("options", {})
        if names:
            if covariates is None:
                covariates = Covariates.fit(
                    parts["train"].frame,
                    names,
                    table_columns=full.frame.columns,
                    numeric=opts.get("numeric", ()),
                    binary=opts.get("binary", ()),
                    categorical=opts.get("categorical", ()),
                    source=Path(data_cfg["source"]).name,
                )
            for part in parts.values():
                part.covariates = part.frame[covariates.names].reset_index(drop=True)
                part.frame = part.frame.drop(columns=covariates.names)
                part.info[COVARIATE_ENCODING] = covariates
            if parts["train"].frame.shape[1] == 0:
                raise DataError("every column of the table is a condition column; there is nothing left to model")
        if schema is None:
            schema = Schema.fit(
                parts["train"].frame,
                numeric=[n for n in opts.get("numeric", ()) if n not in names],
                binary=[n for n in opts.get("binary", ()) if n not in names],
                categorical=[n for n in opts.get("categorical", ()) if n not in names],
                label_column=opts.get("label_column"),
            )
        for name, part in parts.items():
            part.x, part.info["transform_report"] = schema.transform(part.frame, f"the {name} rows")
            part.schema = schema
    if data_cfg.get("dynamic_binarize"):
        x = parts["train"].x
        if hasattr(x, "chunks"):
            raise DataError(
                "binarize='dynamic' needs the data in memory; set stream to off, or binarise the file first"
            )
        likelihoods.check_unit_interval(x, "binarize='dynamic'")
        for k, name in enumerate(("val", "test"), start=1):
            parts[name].x = bernoulli_draw(parts[name].x, data_cfg["split"]["seed"] + k)
    return parts


LABEL_SOURCES = "digits, a folder of class sub-folders, an .npz with y, an IDX file with its labels file, or a table with --label-column"


def class_labels(data: Dataset, what: str = "the data") -> np.ndarray:
    """``data``'s class labels as int64 (N,), or one-line ``DataError`` when it has none or they are
    not classes 0..K-1 (the conditions of a run trained with ``condition="label"``)."""
    if data.labels is None:
        raise DataError(f"condition 'label' needs labelled data, but {what} have no labels: use {LABEL_SOURCES}")
    labels = np.asarray(data.labels)
    if labels.dtype.kind not in "iub" and not (
        labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    ):
        raise DataError(f"condition 'label' needs integer class labels 0..K-1, but {what} have {labels.dtype} labels")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"condition 'label' needs class labels 0..K-1, but {what} have label {labels.min()}")
    return labels


def part_conditions(part: Dataset, what: str = "the data") -> np.ndarray:
    """The conditions of one split of a conditional run as loaded by ``load_splits``: its encoded
    covariates (a run on table columns, (N, C) float32) or its class labels ((N,) int64)."""
    encoding = part.info.get(COVARIATE_ENCODING)
    if encoding is not None:
        return encoding.encode(part.covariates, what)
    return class_labels(part, what)


def conditions(run: Run, data: Dataset, what: str = "the data") -> np.ndarray | None:
    """The conditions c of ``data`` for ``run``'s model: its class labels for a run conditioned on
    labels (checked against the run's number of classes), its encoded covariates (N, C) for a run
    conditioned on table columns, None for an unconditional one."""
    k = int(getattr(run.model, "condition_dim", 0) or 0)
    if not k:
        return None
    if run.covariates is not None:
        if data.covariates is None:
            raise DataError(
                f"{what} lack the condition column(s) {', '.join(map(repr, run.covariates.names))} of this run: "
                "add them to the table, or give them with --condition-file"
            )
        return run.covariates.encode(data.covariates, what)
    labels = class_labels(data, what)
    if labels.size and labels.max() >= k:
        raise DataError(f"{what} have class label {labels.max()}, but this run was trained on classes 0..{k - 1}")
    return labels


def bernoulli_draw(p: np.ndarray, seed: int) -> np.ndarray:
    """A fixed (seeded) binarisation x ~ Bernoulli(p) of data holding probabilities."""
    p = np.asarray(p, dtype=np.float32)
    return (np.random.default_rng(seed).random(p.shape, dtype=np.float32) < p).astype(np.float32)


@dataclass
class Run:
    """An opened run folder: ``config`` is config.json as written (``folder.run_config()`` gives
    the checked ``RunConfig``)."""

    path: Path
    config: dict[str, Any]
    model: Model
    history: History = field(default_factory=History)
    schema: Schema | None = None  # a table's fitted preprocessing (preprocessing.json)
    covariates: Covariates | None = None  # a run on table columns: their encoding (covariates.json)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def condition_kind(self) -> str | None:
        """How the run is conditioned: "label", "columns" or None (not conditional)."""
        if not int(getattr(self.model, "condition_dim", 0) or 0):
            return None
        return "columns" if self.covariates is not None else "label"

    def data(self, which: str = "test") -> Dataset:
        return load_splits(self.config["data"], self.schema, self.covariates)[which]


def open_run(path, device: str | torch.device = "cpu") -> Run:
    folder = RunFolder.open(path)
    config = folder.read_config()
    model = folder.load_model(device)
    return Run(
        path=folder.path,
        config=config,
        model=model,
        history=folder.read_history(),
        schema=folder.read_preprocessing(),
        covariates=folder.read_covariates(),
    )


def read_schema(run_dir) -> Schema | None:
    """The fitted table preprocessing saved with a run, or None for other data."""
    return RunFolder(run_dir).read_preprocessing()


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def read_input(
    run: Run,
    source: str | None = None,
    which: str = "test",
    log: Callable[[str], None] | None = _stderr,
    condition_file: str | None = None,
) -> Dataset:
    """Data to feed a trained run's model (evaluate, encode, reconstruct, score): a built-in
    name or a file, or the run's own split ``which`` when ``source`` is None. The data pass
    through the run's fitted preprocessing (a table's column scales and categories, static
    or dynamic binarisation) and are checked against the model. Values of a table never seen
    in training are treated as missing and reported through ``log`` (not an error).

    A run conditioned on table columns takes them from the data (``Dataset.covariates``), or from
    ``condition_file`` (a table of exactly those columns, one row for all examples or one per
    example), which replaces the data's own."""
    data_cfg = run.config["data"]
    if condition_file is not None:
        check_condition_file(run)
    if source is None:
        data = run.data(which)
        if which == "train" and data_cfg.get("dynamic_binarize") and not hasattr(data.x, "chunks"):
            # training saw fresh Bernoulli draws of these probabilities; outside training use one fixed draw
            data.x = bernoulli_draw(data.x, data_cfg["split"]["seed"])
    elif source in BUILTIN:
        data = load_data(source, **(data_cfg.get("options", {}) if source == data_cfg["source"] else {}))
    else:
        options = {k: v for k, v in data_cfg.get("options", {}).items() if k != "stream"}
        if run.schema is not None:
            options["schema"] = run.schema
            options["label_column"] = run.schema.label_column
        if not Path(source).exists():
            raise DataError(f"no data set or file named {source!r}")
        data = load_data(source, strict=False, **options)
        if run.schema is not None and data.schema is None:
            raise DataError(
                f"this run was trained on a table; {Path(source).name} is not one (use .csv, .tsv or .parquet)"
            )
        if run.schema is None and data.schema is not None:
            raise DataError(f"this run was not trained on a table; {Path(source).name} is one")
        if run.covariates is not None and data.frame is not None:
            present = [n for n in run.covariates.names if n in data.frame.columns]
            if present and len(present) < len(run.covariates.names) and condition_file is None:
                run.covariates.encode(data.frame, Path(source).name)  # names the absent columns
            if len(present) == len(run.covariates.names):
                data.covariates = data.frame[run.covariates.names].reset_index(drop=True)
            data.frame = data.frame.drop(columns=present)
        if data_cfg.get("dynamic_binarize") and not hasattr(data.x, "chunks"):
            likelihoods.check_unit_interval(data.x, "this run's dynamic binarisation")
            data.x = bernoulli_draw(data.x, data_cfg["split"]["seed"])
    report = data.info.get("transform_report") or {}
    note = unknown_summary(report)
    if note and log is not None:
        log(f"vaekit: note: {note}")
    shape = tuple(run.model.data_shape or ())
    if tuple(data.x.shape[1:]) != shape:
        raise DataError(
            f"the data have shape {tuple(data.x.shape[1:])} per example, but this run's model takes {shape}"
        )
    run.model.likelihood.validate(data.x)
    if condition_file is not None:
        data.covariates = run.covariates.read_file(condition_file, len(data))
    return data


def check_condition_file(run: Run, flag: str = "--condition-file") -> None:
    """Refuse a file of covariates for a run that is not conditioned on table columns."""
    kind = run.condition_kind
    if kind == "label":
        raise DataError(
            f"{flag} applies to a run trained with --condition-columns; this run is conditioned on class "
            "labels: use --condition K (or --as-condition K)"
        )
    if kind is None:
        raise DataError(f"{flag} applies to a run trained with --condition-columns; this run is not conditional")


def training_covariates(run: Run, n: int, seed: int) -> Any:
    """``n`` rows of condition columns drawn at random (seeded, with replacement) from the run's
    training rows: the covariates of samples when none are given."""
    train = run.data("train")
    pick = np.random.default_rng(seed).integers(0, len(train), size=n)
    return train.covariates.iloc[pick].reset_index(drop=True)


def format_output(run: Run, x, covariates=None):
    """Model-space arrays (samples, reconstructions, imputations) back in the data's own form:
    for a table, a pandas DataFrame with the original column names, values and categories (a run
    on table columns: ``covariates``, the raw condition columns of these rows, in their places);
    otherwise the array itself."""
    if run.schema is not None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        frame = run.schema.inverse(np.asarray(x))
        if run.covariates is not None and covariates is not None:
            frame = run.covariates.merge(frame, covariates)
        return frame
    return x
