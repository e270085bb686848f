"""``vaekit train``: train a VAE and write a run folder.

The flags, their types, checks and help (defaults included) are generated from the settings
dataclasses (``vaekit.config``); this module imports torch only inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..config import RunConfig
from .options import add_setting, explicit, read_settings_file

S = argparse.SUPPRESS
_GROUPS = {"data": "data", "model": "model", "train": "training", None: "output"}
_SPEED = {"threads", "compile", "amp"}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a VAE and write a run folder",
        description="Train a VAE. With no arguments: scikit-learn's digits, written to runs/digits-TIME/. "
        "Settings come from defaults, then --config, then flags.",
        argument_default=S,
    )
    groups = {title: p.add_argument_group(title) for title in ("data", "model", "training", "speed", "output")}
    for section, f in RunConfig.section_fields():
        key = f.metadata.get("key") or f.name
        title = "speed" if key in _SPEED else _GROUPS[section]
        add_setting(groups[title], key, f)
    g = groups["output"]
    g.add_argument("--config", help="TOML or JSON file of settings (flag names as keys); flags override it")
    g.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the stopped run in this folder (only --epochs, --device, --lr and --progress may change)",
    )
    g.add_argument(
        "--no-figures",
        action="store_false",
        dest="figures",
        help="skip drawing figures/ and report.html at the end (make them later with 'vaekit report RUN')",
    )
    g.add_argument(
        "--log",
        choices=["tensorboard", "mlflow"],
        help="also log the history, figures and settings to "
        "TensorBoard (RUN/tensorboard/) or MLflow (pip install 'vaekit[tracking]')",
    )
    g.add_argument(
        "--log-uri", help="--log tensorboard: the event folder; --log mlflow: the tracking URI [default: ./mlruns]"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from .. import distributed

    # under torchrun every process runs this command; launch() joins them into one job
    with distributed.launch():
        return _run(args)


def _log(message: str) -> None:
    print(message, flush=True)


def _run(args: argparse.Namespace) -> int:
    from .. import distributed, runs

    given = explicit(args)
    draw = given.pop("figures", True)
    log, log_uri = (
        given.pop("log", None),
        given.pop("log_uri", None),
    )  # the tracker (vaekit.tracking), not a run setting
    if log_uri is not None and log is None:
        raise ValueError("--log-uri applies to --log tensorboard or --log mlflow")
    if log is not None:
        from .. import tracking

        tracking.check_available(log)
    start = time.perf_counter()
    if "resume" in given:
        allowed = {"resume", "epochs", "device", "progress", "lr"}  # a lower lr after a divergence
        extra = sorted(set(given) - allowed)
        if extra:
            raise ValueError(
                f"--resume continues a run with its own settings; cannot also change: {', '.join('--' + e.replace('_', '-') for e in extra)}"
            )
        result = runs.resume(
            given["resume"],
            epochs=given.get("epochs"),
            device=given.get("device"),
            progress=given.get("progress"),
            lr=given.get("lr"),
            log=_log,
        )
    else:
        settings = read_settings_file(given.pop("config")) if "config" in given else {}
        settings.update(given)
        result = runs.train(RunConfig.from_settings(settings), log=_log)
    # where the time went: the epochs' own seconds, the rest of runs.train (data, setup, final metrics), drawing
    run_s = time.perf_counter() - start  # a resumed history also holds earlier epochs: never more than this
    spent = {"train": min(run_s, sum(float(r.get("seconds") or 0) for r in result.history)), "run": run_s}
    # under torchrun the other processes are done once training is; only the main one draws
    code = _figures_and_report(result.run_dir, spent) if draw and distributed.current().is_main else 0
    if log is not None and distributed.current().is_main:
        print(f"logged: {tracking.log_run(result.run_dir, log, log_uri)}")
    return code


def _figures_and_report(run_dir, spent) -> int:
    from .. import report

    try:
        path, seconds = report.write_all(run_dir)
    except Exception as err:  # the run is trained and saved; a drawing failure must not hide that
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(
            f"vaekit train: the run in {run_dir} is complete, but drawing its figures failed "
            f"({type(err).__name__}: {err}); retry with 'vaekit report {run_dir}'",
            file=sys.stderr,
        )
        return 1
    print(f"figures and report: {path}")
    print(
        f"time: train {spent['train']:.1f} s, data + setup + final metrics {spent['run'] - spent['train']:.1f} s, "
        f"{report.describe_seconds(seconds)}"
    )
    return 0
