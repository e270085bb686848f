"""``vaekit plot RUN [WHICH...]``: draw a run's figures into RUN/figures/."""

from __future__ import annotations

import argparse

from . import outputs
from .names import FIGURES
from .options import positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    kinds = "\n".join(f"  {name:16s}{description}" for name, description in FIGURES.items())
    p = sub.add_parser(
        "plot",
        help="draw a run's figures into RUN/figures/",
        description="Draw figures of a trained run as PNG files in RUN/figures/NAME.png. Without WHICH: "
        f"every figure that applies to the run. Figures:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    outputs.add_run_argument(p)
    p.add_argument("which", nargs="*", metavar="WHICH", help="figure names (see above) [default: all that apply]")
    p.add_argument("--list", action="store_true", help="list the figures and whether they apply to this run, then stop")
    p.add_argument("--dpi", type=positive_int, default=100, help="resolution of the PNG files")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import figures

    run_ = outputs.open_run(args)
    if args.list:
        v = figures.view(run_)
        defaults = set(figures.choose(v))
        for name, kind in figures.KINDS.items():
            why = kind.needs(v)
            state = (
                "drawn by default"
                if name in defaults
                else ("on request" if why is None else f"not for this run: {why}")
            )
            print(f"{name:16s}{state}")
        return 0
    pngs = figures.render(run_, args.which or None, dpi=args.dpi, processes=figures.processes_free())
    for path in figures.write(run_.path, pngs):
        print(path)
    return 0
