"""``vaekit score``: anomaly scores of a trained run's model, one row per example."""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np

from . import outputs
from .names import ANOMALY_SCORES, SPLITS
from .options import positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="anomaly scores (log p(x), reconstruction probability, KL) for data under a trained run",
        description="Score every example with a trained run's model and write a CSV: log_px (importance-sampled "
        "log p(x)), recon_log_px_z (reconstruction log-probability, An & Cho 2015) and/or kl (KL(q(z|x) || p(z))), "
        "all in nats. Low log_px / recon_log_px_z and high kl mean anomalous. With labels, AUROC and average "
        "precision are printed (anomaly = 1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run folder written by 'vaekit train' or VAE.save")
    p.add_argument("--data", help="built-in data set or .npy/.npz/.csv file to score (default: the run's own split)")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="the run's split to score when --data is not given",
    )
    p.add_argument("--score", choices=[*ANOMALY_SCORES, "all"], default="logpx", help="which score(s) to compute")
    p.add_argument(
        "--iw-samples",
        type=positive_int,
        default=1000,
        metavar="K",
        help="importance samples for logpx, and z draws for recon",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help=".npy/.csv/.txt with one label per example (default: the data's own labels, if any)",
    )
    p.add_argument(
        "--anomaly-label",
        action="append",
        metavar="VALUE",
        help="label value that marks an anomaly (repeatable); default: labels must be 0/1 with 1 = anomaly",
    )
    outputs.add_condition_file_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo draws")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.add_argument(
        "-o",
        "--out",
        metavar="CSV",
        help="where to write the scores (default: standard output, with the summary on standard error)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import anomaly, checkpoint, limits, runs
    from ..batches import inference
    from ..generate import model_batches, placement
    from ..train import resolve_device

    device = resolve_device(args.device)
    opened = runs.open_run(args.run, device=device)
    model = opened.model
    _, dtype = placement(model)
    # the shared draws (K, latent_dim), made in float64 then cast to the model's dtype
    noise_bytes = args.iw_samples * model.latent_dim * (8 + torch.finfo(dtype).bits // 8)
    limits.require_memory(noise_bytes, f"--iw-samples {args.iw_samples}", "use a smaller --iw-samples")
    data = runs.read_input(opened, args.data, which=args.split, condition_file=args.condition_file)
    n = len(data)
    if n == 0:
        raise ValueError(f"the run's {args.split} split is empty; choose another --split or give --data")
    labels, is_anomaly = _labels(args, data.labels, n)
    kinds = list(anomaly.SCORES) if args.score == "all" else [args.score]

    c = runs.conditions(opened, data, "the scored data")  # a conditional run: its labels or covariates are c
    noise = anomaly.common_noise(args.iw_samples, model.latent_dim, args.seed, device, dtype=dtype)
    columns: dict[str, np.ndarray] = {}
    with inference(model):
        for kind in kinds:
            values = [
                anomaly.raw_score(
                    model,
                    xb,
                    kind,
                    args.iw_samples,
                    noise,
                    None if c is None else c[i * args.batch_size : i * args.batch_size + len(xb)],
                )
                for i, xb in enumerate(model_batches(model, data.x, args.batch_size))
            ]  # from disk too, batch by batch
            columns[anomaly.SCORES[kind][0]] = torch.cat(values).double().cpu().numpy()

    draws = f"; K = L = {args.iw_samples} draws" if kinds != ["kl"] else ""
    lines = [
        f"scored {n} examples of {data.name} with {opened.path}: {'; '.join(anomaly.SCORES[k][2] for k in kinds)}"
        f"{draws}; nats per example"
        + (
            f"; conditional run: every score is given {outputs.condition_words(opened, args)} (log p(x|c))"
            if c is not None
            else ""
        )
    ]
    if is_anomaly is not None:
        lines += _summaries(kinds, columns, is_anomaly)

    text = _csv(columns, labels)
    if args.out:
        checkpoint.atomic_write_text(args.out, text)
        lines.append(f"wrote {args.out}")
        print("\n".join(lines))
    else:
        sys.stdout.write(text)
        print("\n".join(lines), file=sys.stderr)
    return 0


def _labels(args, own: np.ndarray | None, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(labels as given, 0/1 anomaly indicator); either may be None."""
    if args.labels:
        raw = _read_labels(args.labels)
        source = args.labels
    elif own is not None:
        raw, source = np.asarray(own), "the data's own labels"
    else:
        if args.anomaly_label:
            raise ValueError("--anomaly-label needs labels: the data carry none, so give --labels FILE")
        return None, None
    if raw.shape[0] != n:
        raise ValueError(
            f"{source} has {raw.shape[0]} labels but the data have {n} examples; give one label per example"
        )
    if args.anomaly_label:
        wanted = [_as_label(v, raw) for v in args.anomaly_label]
        missing = [str(v) for v in wanted if not np.any(raw == v)]
        if missing:
            present = ", ".join(str(v) for v in np.unique(raw)[:20])
            raise ValueError(f"--anomaly-label {', '.join(missing)} does not occur in {source} (values: {present})")
        is_anomaly = np.isin(raw, wanted).astype(int)
    else:
        values = set(np.unique(raw).tolist())
        if not values <= {0, 1}:
            if not args.labels:  # a labelled data set (digits, pinwheel): scores only, with a hint
                print(
                    f"vaekit score: note: {source} are classes {sorted(values)[:10]}, not 0/1; "
                    "give --anomaly-label VALUE to print AUROC",
                    file=sys.stderr,
                )
                return raw, None
            raise ValueError(
                f"{source} holds values other than 0/1; say which mark anomalies with --anomaly-label VALUE"
            )
        is_anomaly = raw.astype(int)
    if is_anomaly.min() == is_anomaly.max():
        kind = "anomalies" if is_anomaly[0] else "normal examples"
        raise ValueError(f"the labels mark only {kind}; AUROC needs both anomalies and normal examples")
    return raw, is_anomaly


def _read_labels(path: str) -> np.ndarray:
    from ..data import read_array

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"labels file {path} does not exist")
    if p.suffix.lower() == ".txt":
        try:
            raw = np.loadtxt(p, ndmin=1)
        except ValueError as err:
            raise ValueError(f"cannot read labels from {path}: {str(err).splitlines()[0]}") from None
    else:
        raw, _ = read_array(p)
    raw = np.asarray(raw)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise ValueError(f"labels file {path} must hold one column, got shape {raw.shape}")
    if np.all(raw == np.round(raw)):
        raw = raw.astype(np.int64)
    return raw


def _as_label(text: str, raw: np.ndarray):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--anomaly-label takes a number, got {text!r}") from None
    return int(value) if raw.dtype.kind in "iu" and value == int(value) else value


def _summaries(kinds, columns, y: np.ndarray) -> list[str]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from .. import anomaly

    out = [f"labels: {int(y.sum())} anomalies among {len(y)} examples"]
    for kind in kinds:
        name, sign, _ = anomaly.SCORES[kind]
        outlying = -sign * columns[name]  # higher = more anomalous
        out.append(
            f"{name}: AUROC {roc_auc_score(y, outlying):.4f}, average precision {average_precision_score(y, outlying):.4f}"
        )
    return out


def _csv(columns: dict[str, np.ndarray], labels: np.ndarray | None) -> str:
    buf = io.StringIO()
    names = ["index", *columns, *(["label"] if labels is not None else [])]
    buf.write(",".join(names) + "\n")
    n = len(next(iter(columns.values())))
    for i in range(n):
        row = [str(i)] + [_fmt(columns[c][i]) for c in columns]
        if labels is not None:
            row.append(str(labels[i]))
        buf.write(",".join(row) + "\n")
    return buf.getvalue()


def _fmt(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ("-inf" if v < 0 else "nan")
