"""A process of its own that draws figures, forked before torch is imported.

``vaekit train`` starts one first thing (``DrawingServer.start``). While the command imports torch
(1-1.7 s of one core), the copy imports matplotlib and draws a few small figures on the other core
(0.6-0.9 s), which loads the fonts and builds the mathtext parser. Then it waits on a pipe, taking
no CPU while the model trains. Once the final weights are saved, the command records each figure
(``plots.recording``: the arrays it shows, computed there with torch) and sends it here. This
process draws it into a PNG while the command computes the next figure's arrays and the final
metrics: each figure in a process forked from it for that figure, as many at a time as there are
cores free of other work (one fewer while the command still computes), up to ``MAX_DRAWERS``.

Neither process imports matplotlib or makes a first figure after training, and the command never
imports matplotlib at all. The copy imports neither torch nor vaekit's model code: a ``plots.Drawing``
holds numpy arrays only. It writes each PNG into a temporary folder and reports its name and time on
a second pipe, so its messages stay small and it never waits for the command to read them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cores

__all__ = ["DrawingServer"]

MAX_DRAWERS = 8  # a default run has 7 figures; more processes than that would only wait

WAITING = "waiting"  # sent after the jobs: the command waits for them, its core is free for a drawer


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
    def start(cls, drawers: int | None = None) -> DrawingServer | None:
        """Fork the drawing process (Linux only, where fork is safe and cheap); None where it
        cannot be started. It draws up to ``drawers`` figures at once once the command waits for
        them, one fewer while the command still computes their arrays, and never more than the
        cores other work leaves free (``_at_once``). By default ``drawers`` is the cores this process
        may run on, at most ``MAX_DRAWERS``."""
        if drawers is not None and drawers < 1:
            raise ValueError(f"drawers must be at least 1, not {drawers}")
        if not (sys.platform.startswith("linux") and hasattr(os, "fork")):
            return None
        if drawers is None:
            drawers = min(MAX_DRAWERS, cores.usable())
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
                args=(jobs_out, jobs_in, results_in, results_out, folder, drawers),
                name="vaekit-drawing",
                daemon=True,
            )
            process.start()
            try:
                os.setpgid(process.pid, process.pid)  # as the copy does itself: whichever runs first
            except OSError:
                pass
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
        has reported them all, has died, or ``timeout`` seconds have passed. This process is idle from
        now on, so the copy may draw ``drawers`` figures at once (until now, one fewer: this process
        was computing the figures' arrays on a core of its own)."""
        if self._outbox is not None:
            self._outbox.put(WAITING)
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
        try:  # the copy and any drawer it has forked; the group is the copy's own (``_serve``)
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:  # no such group: the copy could not make it
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        for conn in (self._jobs, self._results):
            conn.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _serve(jobs, jobs_in, results, results_out, folder: str, drawers: int) -> None:
    """The copy: warm up, then draw each job in a process forked from this one for it, ``drawers``
    at a time (one fewer until the command waits), until the command closes its end. Forked here, a
    drawer starts with matplotlib warm (the fork takes about a millisecond); on 2 cores two of them
    draw the seven figures of a default run in 0.6 s, against 1.0 s drawn one after another here. And a drawer that crashes takes
    nothing else with it: this process reports its figure undelivered, and the command draws it."""
    import gc

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle; it stops this process
    try:
        os.setpgid(0, 0)  # a group of its own, with its drawers, for the command's ``close`` to kill
    except OSError:
        pass
    jobs_in.close()  # this copy's ends of the command's sides: the command's exit is then an EOF here
    results_out.close()
    # nothing of this process reaches the terminal, and it holds no pipe that the command's output goes
    # into (``vaekit train | tee log`` ends with the command): a failure is reported on the results pipe
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    running: dict[int, tuple[str, int | None]] = {}  # drawer's pid -> (figure's name, its pidfd)
    try:
        from . import plots

        _warm_up(plots)
        gc.freeze()  # the drawers' collections then leave the warm objects' pages unwritten, so unshared
        waiting: list = []  # jobs received, their drawer not started yet
        most = max(1, drawers - 1)  # while the command computes the next figures on a core of its own
        while True:
            while waiting and len(running) < _at_once(most, len(running)):
                _fork_drawer(plots, waiting.pop(0), results, folder, running)
            # held back by busy cores: look again soon rather than only once a drawer ends
            if not _wait(jobs, results, running, recheck=bool(waiting) and len(running) < most):
                continue  # a drawer ended
            try:
                job = jobs.recv()
            except EOFError:  # the command has ended (or died): nothing is left to draw
                break
            if job == WAITING:
                most = drawers
            else:
                waiting.append(job)
    except BaseException:  # noqa: BLE001 - nothing of this process may reach the terminal
        pass
    finally:
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
        results.close()


def _at_once(most: int, drawing: int) -> int:
    """How many drawers may run now: ``most``, but no more than the ``drawing`` ones already running
    plus the cores that other work leaves free (they, and the command while it computes, count as
    other work in the reading); the first drawer always may. Three short reads, so that a drawer that
    has just ended does not wait long for the next one to start."""
    if drawing == 0 or drawing >= most:
        return 1 if drawing == 0 else most
    return min(most, drawing + cores.free_cores(reads=3, gap_s=0.001))


def _wait(jobs, results, running: dict, recheck: bool = False) -> bool:
    """Block until a job can be read (True) or a drawer has ended (False, after reaping it and, if it
    died before it reported, reporting its figure undelivered), or for 20 ms where ``recheck`` (False).
    No CPU is taken while waiting."""
    from multiprocessing.connection import wait

    fds = [fd for _, fd in running.values() if fd is not None]
    polling = len(fds) < len(running)  # a system without pidfds: look at the drawers 50 times a second
    ready = wait([jobs, *fds], timeout=0.02 if polling or recheck else None)
    if jobs in ready:
        return True
    for pid in list(running):
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            name, fd = running.pop(pid)
            if fd is not None:
                os.close(fd)
            if status != 0:  # it never reported: the command draws this figure itself
                results.send((name, None))
    return False


def _fork_drawer(plots, job, results, folder: str, running: dict) -> None:
    """Draw ``job`` in a child of this process. It writes the PNG into ``folder`` and reports
    (name, seconds), or (name, None) where the drawing raised, then exits at once. Each report is one
    write of well under PIPE_BUF bytes on the shared pipe, so the drawers' reports never interleave."""
    import gc

    name, drawing, dpi = job
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            gc.disable()  # a short life: what it allocates goes with it
            start = time.perf_counter()
            try:
                png = plots.to_png(drawing, dpi)
            except Exception:  # noqa: BLE001 - the command draws it again and reports the failure itself
                results.send((name, None))
            else:
                (Path(folder) / f"{name}.png").write_bytes(png)
                results.send((name, time.perf_counter() - start))
            code = 0
        finally:
            os._exit(code)
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    running[pid] = (name, fd)


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
