"""``vaekit train``: train a VAE and write a run folder.

The flags, their types, checks and help (defaults included) are generated from the settings
dataclasses (``vaekit.config``); this module imports torch only inside ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
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


def prepare(args: argparse.Namespace) -> None:
    """Before torch is imported: where this process will draw the figures, fork the process that draws
    them (``vaekit.drawing``), so that it imports matplotlib on the other core while this one imports
    torch."""
    if getattr(args, "figures", True) and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        from ..drawing import DrawingServer

        args._drawing_server = DrawingServer.start()


def _log(message: str) -> None:
    print(message, flush=True)


def run(args: argparse.Namespace) -> int:
    from .. import cli, distributed, runs

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
    # interpreter, torch and vaekit imports, before any of the run's work (for the command, not a call from Python)
    startup = _since_process_start() if cli.AS_COMMAND else None
    loggers = []  # the tracker, made once the run folder exists: it logs each epoch as it ends

    def trackers(path):
        logger = tracking.run_logger(path, log, log_uri)
        logger.log_history(runs.RunFolder(path).read_history())  # a resumed run's earlier epochs
        loggers.append(logger)
        return [logger]

    drawing = _EarlyDrawing(
        getattr(args, "_drawing_server", None)
    )  # the figures: drawing starts once the model is saved
    # under torchrun every process runs this command; launch() joins them into one job for the training
    # alone, and every process leaves the job together once it is trained, before the main one draws
    with distributed.launch() as job:
        main = job.is_main
        try:
            result = _train_or_resume(
                runs,
                given,
                trackers if log is not None else None,
                drawing if draw and main and not job.active else None,  # no fork beside the job's threads
            )
        except BaseException:
            drawing.cancel()
            for logger in loggers:  # flush and close what the epochs so far logged
                with contextlib.suppress(Exception):
                    logger.finish()
            raise
    # where the time went: start-up, then runs.train's own split (epochs, checkpoints, final metrics), drawing
    spent = {"startup": startup, **result.seconds, "run": time.perf_counter() - start, "drawing": drawing.seconds}
    # under torchrun the other processes are done once training is; only the main one draws
    code = 0
    try:
        if draw and main:
            with runs.torch_threads(result.threads):  # small batches of the model just trained: its thread count
                code = _figures_and_report(result.run_dir, spent, drawing, start)
    except KeyboardInterrupt:  # the run itself is complete: only its figures and report are missing
        print(
            f"vaekit train: interrupted while drawing; the run in {result.run_dir} is complete "
            f"(draw its figures and report with 'vaekit report {result.run_dir}')",
            file=sys.stderr,
        )
        code = 130
    finally:
        drawing.cancel()
    if loggers:
        print(f"logged: {tracking.finish_run(loggers[0], result.run_dir)}")
    return code


class _EarlyDrawing:
    """``runs.train``'s ``saved`` hook: once the final weights are in the run folder, drawing starts
    in a second process while this one computes the final metrics.

    - With the drawing process forked at start-up (``prepare``), which has matplotlib warm: every
      figure's arrays are computed here and sent to it (``figures.ServedDrawing``). This process then
      never imports matplotlib.
    - Else, where two cores are free, a copy of this process forked now draws the figures
      (``figures.SharedDrawing``) and ``_figures_and_report`` draws the rest here after the metrics.

    Nothing of drawing is imported or drawn beside training: a thread that imported matplotlib and
    drew a first figure there (0.43 s of work) made the epochs of the default run 0.2-0.5 s longer
    (it holds the interpreter lock), at 1 training thread as at 2, for 0.3 s less drawing."""

    def __init__(self, server=None) -> None:
        self.server = server  # drawing.DrawingServer, forked before torch was imported, or None
        self.shared = None  # figures.ServedDrawing or figures.SharedDrawing once started
        self.seconds = 0.0  # spent here (recording the figures, or the fork), counted with the figures

    def __call__(self, path) -> int | None:
        """Start drawing; the final metrics then take 1 thread (a step of 2 threads on 2 cores beside the
        other process waits at every barrier for the thread that is not running: 3x slower seen)."""
        from .. import figures

        started = time.perf_counter()
        try:
            if self.server is not None and self.server.alive():
                self.shared = figures.ServedDrawing(path, self.server)
            elif figures.processes_free() >= 2:
                self.shared = figures.SharedDrawing(path)
        except Exception:  # noqa: BLE001 - the run goes on to its metrics; drawing after it reports this
            self.shared = None
        self.seconds = time.perf_counter() - started
        return 1 if self.shared is not None else None

    def cancel(self) -> None:
        if self.shared is not None:
            self.shared.cancel()
        if self.server is not None:
            self.server.close()


def _train_or_resume(runs, given, track, saved=None):
    if "resume" in given:
        allowed = {"resume", "epochs", "device", "progress", "lr"}  # a lower lr after a divergence
        extra = sorted(set(given) - allowed)
        if extra:
            raise ValueError(
                f"--resume continues a run with its own settings; cannot also change: {', '.join('--' + e.replace('_', '-') for e in extra)}"
            )
        return runs.resume(
            given["resume"],
            epochs=given.get("epochs"),
            device=given.get("device"),
            progress=given.get("progress"),
            lr=given.get("lr"),
            log=_log,
            callbacks=track,
            saved=saved,
        )
    else:
        settings = read_settings_file(given.pop("config")) if "config" in given else {}
        settings.update(given)
        return runs.train(RunConfig.from_settings(settings), log=_log, callbacks=track, saved=saved)


def _since_process_start() -> float | None:
    """Seconds since this process started (Linux ``/proc``, 10 ms ticks), or None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields from the 3rd on; the 22nd is the start time
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _figures_and_report(run_dir, spent, drawing: _EarlyDrawing, start) -> int:
    from .. import figures, report

    began = time.perf_counter()
    try:
        # not started early under torchrun: drawn now, in two processes where two cores are free
        free = figures.processes_free() if drawing.shared is None else 1
        path, seconds = report.write_all(run_dir, drawing=drawing.shared, processes=free)
        seconds["figures"] = time.perf_counter() - began - seconds["report"] + spent["drawing"]
    except Exception as err:  # the run is trained and saved; a drawing failure must not hide that
        drawing.cancel()
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(
            f"vaekit train: the run in {run_dir} is complete, but drawing its figures failed "
            f"({type(err).__name__}: {err}); retry with 'vaekit report {run_dir}'",
            file=sys.stderr,
        )
        return 1
    print(f"figures and report: {path}")
    print(describe_time(spent, seconds, time.perf_counter() - start))
    return 0


def describe_time(spent: dict, seconds: dict, since_start: float) -> str:
    """'time: 7.0 s = start-up 1.3 s + data and setup 0.3 s + train 4.2 s + ... ; wall / train 1.67'. The
    wall time runs from the process's start when known (else from the command's), to the report."""
    from .. import report

    startup = spent.get("startup")
    wall = since_start + (startup or 0.0)
    train = spent.get("train", 0.0)
    setup = (
        spent["run"]
        - train
        - spent.get("checkpoints", 0.0)
        - spent.get("final_metrics", 0.0)
        - spent.get("drawing", 0.0)
    )
    parts = [f"start-up {startup:.1f} s"] if startup is not None else []
    parts += [
        f"data and setup {max(setup, 0.0):.1f} s",
        f"train {train:.1f} s",
        f"checkpoints {spent.get('checkpoints', 0.0):.1f} s",
        f"final metrics {spent.get('final_metrics', 0.0):.1f} s",
        report.describe_seconds(seconds).replace(", report", " + report"),
    ]
    ratio = f"{wall / train:.2f}" if train > 0 else "n/a (no epochs run)"
    return f"time: {wall:.1f} s wall = " + " + ".join(parts) + f"; wall / train {ratio}"
