"""Entry point for tests/test_distributed.py: ``vaekit`` under torchrun, except that every process
SIGKILLs itself right after epoch $VAEKIT_TEST_KILL_AT and its checkpoint, if one was due (a crash at a
known point)."""

import os
import signal
import sys

import vaekit.runs as runs
import vaekit.runs.pipeline  # noqa: F401  (fit is called from here)
from vaekit.cli import main

KILL_AT = int(os.environ["VAEKIT_TEST_KILL_AT"])
_fit = runs.pipeline.fit


def _fit_then_die(*args, callbacks=(), **kwargs):
    def die(model, state):
        if state.epoch == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

    return _fit(*args, callbacks=[*callbacks, die], **kwargs)


runs.pipeline.fit = _fit_then_die
sys.exit(main(sys.argv[1:]))
