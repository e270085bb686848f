"""How many CPU cores this process may use, and how many of them other work leaves free right now.
Plain Python (``/proc``), no torch: the training's thread choice and the drawing process (which
never imports torch) read it alike."""

from __future__ import annotations

import glob
import os
import time


def usable() -> int:
    """The cores this process may run on (its affinity mask; the machine's count off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(reads: int = 8, gap_s: float = 0.003) -> int:
    """Cores that no other runnable thread wants at this moment: this process's cores less the
    runnable threads of other processes (``others_running``), the smallest of up to ``reads`` reads
    ``gap_s`` apart, stopping at the first that sees none: a process that runs now and then (a core
    70% busy) is caught idle in one of them, one that keeps a core busy is not. On a busy machine a
    step at more threads than are free waits at every barrier for a thread that is not scheduled
    (20x slower seen). Where /proc is not there, every core counts as free."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    try:
        fewest = others_running()
        for _ in range(reads - 1):
            if not fewest:
                break
            time.sleep(gap_s)
            fewest = min(fewest, others_running())
    except (OSError, ValueError, IndexError):
        return cores
    return max(0, cores - fewest)


def others_running() -> int:
    """Runnable threads of other processes now: /proc/loadavg's running count less this process's
    own running threads (at least the one reading)."""
    with open("/proc/loadavg") as f:
        running = int(f.read().split()[3].split("/")[0])
    own = 0
    for stat in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:  # the thread ended
            continue
        own += text[text.rindex(")") + 2] == "R"
    return max(0, running - max(own, 1))
