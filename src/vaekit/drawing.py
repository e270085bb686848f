"""A process of its own that draws figures, forked before torch is imported.

``vaekit train`` starts one first thing (``DrawingServer.start``). While the command imports torch
(1-1.7 s of one core), the copy imports matplotlib and draws a few small figures on the other core
(0.6-0.9 s), which loads the fonts and builds the mathtext parser. Then it waits on a pipe, taking
no CPU while the model trains. Once the final weights are saved, the command records each figure
(``plots.recording``: the arrays it shows, computed there with torch) and sends it here. This
process draws it into a PNG while the command computes the next figure's arrays and the final
metrics.

Neither process imports matplotlib or makes a first figure after training, and the command never
imports matplotlib at all. The copy imports neither torch nor vaekit's model code: a ``plots.Drawing``
holds numpy arrays only. It writes each PNG into a temporary folder and reports its name and time on
a second pipe, so its messages stay small and it never waits for the command to read them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["DrawingServer"]


class DrawingServer:
    """The drawing process, seen from the process that started it: ``submit`` a ``plots.Drawing``
    by name, ``collect`` the PNGs, ``close``. A figure the copy failed at, or never got to (it died or
    hung), is simply not among those collected; the caller draws it itself, where a real failure
    raises."""

    def __init__(self, process, jobs, results, folder: str) -> None:
        self.process, self._jobs, self._results, self.folder = process, jobs, results, folder
        self._outbox = None  # a queue of jobs and the thread that sends them, made at the first submit
        self._closed = False

    @classmethod
    def start(cls) -> DrawingServer | None:
        """Fork the drawing process (Linux only, where fork is safe and cheap); None where it
        cannot be started."""
        if not (sys.platform.startswith("linux") and hasattr(os, "fork")):
            return None
        import multiprocessing

        folder = None
        try:
            ctx = multiprocessing.get_context("fork")
            folder = tempfile.mkdtemp(prefix="vaekit-drawing-")
            jobs_out, jobs_in = ctx.Pipe(duplex=False)  # (receiving end, sending end)
            results_out, results_in = ctx.Pipe(duplex=False)
            for stream in (sys.stdout, sys.stderr):  # the copy must not print buffered output again
                stream.flush()
            process = ctx.Process(
                target=_serve,
                args=(jobs_out, jobs_in, results_in, results_out, folder),
                name="vaekit-drawing",
                daemon=True,
            )
            process.start()
        except OSError:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            return None
        jobs_out.close()
        results_in.close()
        server = cls(process, jobs_in, results_out, folder)
        atexit.register(server.close)  # whatever ends the command, the process and its folder go with it
        return server

    def alive(self) -> bool:
        return not self._closed and self.process.is_alive()

    def submit(self, name: str, drawing: Any, dpi: int) -> bool:
        """Queue ``drawing`` to be drawn as ``name`` at ``dpi``; False if the process is gone. The
        sending (pickling, and the pipe's writes while the copy is busy) happens on a thread of this
        process, so the caller goes on at once."""
        if not self.alive():
            return False
        if self._outbox is None:
            import queue
            import threading

            self._outbox = queue.SimpleQueue()
            threading.Thread(target=self._send_all, name="vaekit-drawing-send", daemon=True).start()
        self._outbox.put((name, drawing, dpi))
        return True

    def _send_all(self) -> None:
        while (job := self._outbox.get()) is not None:
            try:
                self._jobs.send(job)
            except (OSError, ValueError):  # the copy is gone: the caller draws what it did not deliver
                return

    def collect(self, names: list[str], timeout: float) -> dict[str, tuple[bytes, float]]:
        """name -> (PNG bytes, seconds the copy took) for each of ``names`` it drew, waiting until it
        has reported them all, has died, or ``timeout`` seconds have passed."""
        delivered: dict[str, tuple[bytes, float]] = {}
        waiting = set(names)
        deadline = time.perf_counter() + timeout
        while waiting and self._results.poll(max(0.0, deadline - time.perf_counter())):
            try:
                name, seconds = self._results.recv()
            except (EOFError, OSError):
                break
            waiting.discard(name)
            if seconds is not None:
                delivered[name] = ((Path(self.folder) / f"{name}.png").read_bytes(), seconds)
        return delivered

    def close(self) -> None:
        """Stop the process (it is idle or hung by now) and remove its folder."""
        if self._closed:
            return
        self._closed = True
        if self._outbox is not None:
            self._outbox.put(None)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        for conn in (self._jobs, self._results):
            conn.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _serve(jobs, jobs_in, results, results_out, folder: str) -> None:
    """The copy: warm up, then draw each job until the command closes its end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle; it stops this process
    jobs_in.close()  # this copy's ends of the command's sides: the command's exit is then an EOF here
    results_out.close()
    # nothing of this process reaches the terminal, and it holds no pipe that the command's output goes
    # into (``vaekit train | tee log`` ends with the command): a failure is reported on the results pipe
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        from . import plots

        _warm_up(plots)
        while True:
            try:
                name, drawing, dpi = jobs.recv()
            except EOFError:  # the command has ended (or died): nothing is left to draw
                shutil.rmtree(folder, ignore_errors=True)
                break
            start = time.perf_counter()
            try:
                png = plots.to_png(drawing, dpi)
            except Exception:  # noqa: BLE001 - the command draws it again and reports the failure itself
                results.send((name, None))
                continue
            (Path(folder) / f"{name}.png").write_bytes(png)
            results.send((name, time.perf_counter() - start))
    except BaseException:  # noqa: BLE001 - nothing of this process may reach the terminal
        pass
    finally:
        results.close()


def _warm_up(plots) -> None:
    """Draw what the first of each kind of figure would otherwise pay for: matplotlib's and PIL's
    imports, the font files, the mathtext parser ("$z_1$" labels), a legend, a colour bar, an image
    and the layout engine."""
    import numpy as np

    line = np.linspace(0.0, 1.0, 4)
    plots.to_png(plots.kl_units(np.array([1.0, 0.01])), 30)
    plots.to_png(
        plots.traversal_figure(np.zeros((2, 2, 4)), [0, 1], line[:2], image_shape=(2, 2)),
        30,
    )
    plots.to_png(plots.points_over_data(np.stack([line, line], 1), colour=line, colour_name="$z_1$"), 30)
