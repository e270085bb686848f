"""How fast the figures of a run are drawn from their recordings (``plots.Drawing``), in a process
without torch, as the drawing process of ``vaekit train`` and ``vaekit report`` draws them: in turn in
one process, by a ``drawing.DrawingServer`` with one drawer, and with two. Contenders take turns in
rotating rounds; the server is warm (started, and one figure drawn) before it is timed.

    python bench/bench_drawing.py                  # a default digits run of 20 epochs, 4 rounds
    python bench/bench_drawing.py --run runs/RUN --rounds 6
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

DRAW = r"""
import os, pickle, statistics, sys, time
from vaekit import drawing, plots
drawings = pickle.loads(open(sys.argv[1], "rb").read())
rounds = int(sys.argv[2])
assert "torch" not in sys.modules
drawing._warm_up(plots)

def in_turn():
    for d in drawings.values():
        plots.to_png(d, 100)

def served(n):
    server = drawing.DrawingServer.start(drawers=n)
    server.submit("warm", plots.Drawing("kl_units", ([1.0, 0.5],), {}), 40)
    server.collect(["warm"], 60)  # warm, and from now on it may draw n at once
    def run():
        for name, d in drawings.items():
            server.submit(name, d, 100)
        got = server.collect(list(drawings), 120)
        assert len(got) == len(drawings), "a figure was not delivered"
    return server, run

times = {"in turn, one process": [], "server, 1 drawer": [], "server, 2 drawers": []}
for _ in range(rounds):
    for name in times:
        server = None
        if name == "in turn, one process":
            run = in_turn
        else:
            server, run = served(1 if "1 drawer" in name else 2)
        started = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - started)
        if server is not None:
            server.close()
print(f"{len(drawings)} figures ({', '.join(drawings)}), {rounds} rotating rounds; "
      f"load average {os.getloadavg()[0]:.2f} at the end")
print("| how | median s | range s |")
print("|---|---:|---:|")
for name, t in times.items():
    print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} |")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished run (default: train a digits run of --epochs epochs)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    import torch

    from vaekit import figures, plots, runs

    with tempfile.TemporaryDirectory(prefix="vaekit-bench-drawing-") as scratch:
        path = args.run
        if path is None:
            path = str(Path(scratch) / "run")
            runs.train({"out": path, "epochs": args.epochs, "progress": False}, log=lambda _: None)
        run = runs.open_run(path)
        v = figures.view(run)
        run.model.eval()
        torch.set_num_threads(1)
        recorded = {}
        for name, kind in figures.KINDS.items():
            if kind.default and kind.needs(v) is None:
                with plots.recording():
                    recorded[name] = kind.make(v)
        pickled = Path(scratch) / "drawings.pkl"
        pickled.write_bytes(pickle.dumps(recorded))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")])
            ),
        }
        out = subprocess.run([sys.executable, "-c", DRAW, str(pickled), str(args.rounds)], env=env)
        sys.exit(out.returncode)


if __name__ == "__main__":
    main()
