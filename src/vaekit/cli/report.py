"""``vaekit report RUN``: one self-contained report.html for a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import outputs
from .options import positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="write RUN/report.html: configuration, data, history, metrics and figures in one file",
        description="Draw the run's figures (also written to RUN/figures/) and gather them with the "
        "configuration, a data summary, the training history and the final metrics (including "
        "'vaekit evaluate' numbers when present) in one HTML file that needs no network access.",
    )
    outputs.add_run_argument(p)
    p.add_argument("-o", "--out", help="HTML file to write [default: RUN/report.html]")
    p.add_argument("--dpi", type=positive_int, default=100, help="resolution of the embedded figures")
    return p


def prepare(args: argparse.Namespace) -> None:
    """Before torch is imported: fork the process that draws the figures (``vaekit.drawing``), which
    imports matplotlib on the other core while this one imports torch."""
    from ..drawing import DrawingServer

    args._drawing_server = DrawingServer.start()


def run(args: argparse.Namespace) -> int:
    from .. import figures, report

    server = getattr(args, "_drawing_server", None)
    try:
        run_ = outputs.open_run(args)
        if args.out:
            out = Path(args.out)
            if out.suffix.lower() not in (".html", ".htm"):
                raise ValueError(f"report file {out} must end in .html")
            if not out.parent.exists():
                raise ValueError(f"the folder of the report file {out} does not exist; create it first")
        served = figures.ServedDrawing(run_, server, dpi=args.dpi) if server is not None and server.alive() else None
        path, _ = report.write_all(run_, dpi=args.dpi, out=args.out, processes=figures.processes_free(), drawing=served)
    finally:
        if server is not None:
            server.close()
    print(path)
    return 0
