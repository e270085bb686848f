"""Command line: ``vaekit COMMAND ...``. Each command is a module with ``add_parser`` and ``run``.

Commands are registered by name: the parser imports only the module of the command being run,
and command modules import torch and friends inside ``run``, so ``vaekit --help``,
``vaekit COMMAND --help`` and argument errors stay instant. A command module may also have
``prepare(args)``, which the ``vaekit`` process calls before it imports torch.

Errors the user can fix (bad arguments, bad data, unreadable files) end with one line on
stderr and exit code 2; a training run that diverges ends with one line and exit code 1; any
other failure ends with one line and a hint to rerun with ``--debug`` (or VAEKIT_DEBUG=1) for the
full traceback. A closed stdout (``vaekit train ... | head -1``) is ignored quietly.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from .._version import __version__
from ..errors import TrainingError

# command -> one-line help, in the order --help lists them (the module is vaekit.cli.COMMAND)
COMMANDS: dict[str, str] = {
    "train": "train a VAE and write a run folder",
    "demo": "rerun a seed experiment (sine, pinwheel) and compare with its numbers",
    "evaluate": "log p(x), ELBO, KL per unit, active units and gaps of a trained run",
    "sample": "generate new examples from a trained run",
    "reconstruct": "reconstruct data through a trained run (a table's missing values are filled in)",
    "encode": "posterior means E[z|x] of data",
    "interpolate": "decode a straight line between two examples' codes",
    "traverse": "decode a sweep of each latent unit",
    "plot": "draw one of a run's figures",
    "report": "write a run's figures and self-contained report.html",
    "score": "anomaly scores of data under a trained run",
    "impute": "fill the missing cells of a table (MIWAE), once or as multiple imputations",
    "synthesize": "synthetic rows of a table: its columns, categories and missing-value rates",
}


class UsageError(Exception):
    """A bad command line (argparse's complaint), reported as one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, just what is wrong and where to look."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, message)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (the others are listed by name)."""
    parser = Parser(prog="vaekit", description="Variational autoencoders: train, evaluate, sample, encode and score.")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an unexpected error (or set VAEKIT_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, help_text in COMMANDS.items():
        if name == command:
            module = importlib.import_module(f".{name}", __name__)
            module.add_parser(sub).set_defaults(_run=module.run, _prepare=getattr(module, "prepare", None))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _QuietStdout:
    """stdout that ignores a closed pipe (``| head``): the command finishes, its output is dropped."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.closed_pipe = False

    def _drop(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        if self.closed_pipe:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def __getattr__(self, name):
        return getattr(self._stream, name)


AS_COMMAND = False  # whether this process is the ``vaekit`` command (main() read sys.argv), not a call from Python


def main(argv: list[str] | None = None) -> int:
    global AS_COMMAND
    AS_COMMAND = AS_COMMAND or argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("VAEKIT_DEBUG"))
    argv = [a for a in argv if a != "--debug"]
    stdout = sys.stdout
    sys.stdout = _QuietStdout(stdout)
    alone = AS_COMMAND and int(os.environ.get("WORLD_SIZE", "1")) == 1
    try:
        code = _main(argv, debug)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout
        if alone:
            # the process ends next: freezing the objects alive now spares the interpreter's final garbage
            # collections, which take most of a second once torch and matplotlib are loaded (atexit
            # handlers and the flushing of files still run as usual). The processes of a torchrun job
            # keep the usual clean-up, which frees the communicators before the interpreter goes.
            gc.freeze()
    if alone:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the ``vaekit`` process now that its command has returned: run the atexit handlers (the
    tracking libraries', multiprocessing's, temporary folders'), flush the standard streams and leave
    with ``os._exit``, skipping the interpreter's teardown of every module and libtorch's static
    destructors, which took 0.1 s after the default ``vaekit train`` had printed its last line. Every
    file vaekit writes is closed by then (atomic writes). Where another library left a non-daemon
    thread running, the usual shutdown runs instead, since it waits for that thread."""
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (vaekit ... | head -1) or a closed stream
            pass
    os._exit(code)


def _main(argv: list[str], debug: bool) -> int:
    command = _command(argv)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
    except UsageError as err:  # argparse's convention, SystemExit(2), with one line instead of a usage dump
        print(f"{err.prog}: error: {err} (see '{err.prog} --help')", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    name = f"vaekit {args.command}"
    try:
        if AS_COMMAND:
            if args._prepare is not None:  # the command's work before torch is imported (vaekit train: fork)
                args._prepare(args)
            _import_without_collector()
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        # training keeps its last checkpoint; another command's work is simply stopped
        hint = (
            "; the last checkpoint is kept (resume with 'vaekit train --resume RUN')" if args.command == "train" else ""
        )
        print(f"{name}: interrupted{hint}", file=sys.stderr)
        return 130
    except UsageError as err:
        print(f"{err.prog}: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        if debug:
            raise
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as err:
        if debug:
            raise
        print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # the last resort: one line, never a bare traceback
        if debug:
            raise
        print(
            f"{name}: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _import_without_collector() -> None:
    """Import torch and vaekit's run layer, which every command imports first, with the garbage
    collector paused, then freeze what they made (``gc.freeze``: kept out of every later collection).
    Their hundreds of thousands of objects are module state, never garbage, yet each full collection
    walks them all. Measured on this machine: the import 1.10-1.22 s with the collector, 1.02 s
    without; the default ``vaekit train``'s full collections afterwards 0.21 s, 0.07 s once frozen.
    Only in the ``vaekit`` process itself; a call of ``main`` from Python leaves the collector alone."""
    if not gc.isenabled():
        return
    gc.disable()
    try:
        import torch  # noqa: F401

        from .. import runs  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
