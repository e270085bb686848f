"""Command line: ``vaekit COMMAND ...``. Each command is a module with ``add_parser`` and ``run``.

Errors the user can fix (bad arguments, bad data, unreadable files) end with one line on
stderr and exit code 2; a training run that diverges ends with one line and exit code 1.
Set VAEKIT_DEBUG=1 to see the full traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..errors import TrainingError

# command modules, in the order --help lists them
COMMANDS = [
    "train",
    "demo",
    "evaluate",
    "sample",
    "reconstruct",
    "encode",
    "interpolate",
    "traverse",
    "plot",
    "report",
    "score",
    "impute", "synthesize",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaekit",
        description="Variational autoencoders: train, evaluate, sample, encode and score.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        command = module.add_parser(sub)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("vaekit: interrupted; the last checkpoint is kept (resume with 'vaekit train --resume RUN')", file=sys.stderr)
        return 130
    except TrainingError as err:
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(f"vaekit {args.command}: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"vaekit {args.command}: error: {message}", file=sys.stderr)
        return 2
