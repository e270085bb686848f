"""Memory and time of training on a memory-mapped .npy as the file grows.

For N and 10 N rows (D features, float32, values in [0, 1]) this writes the file to a temporary
folder and trains in a fresh process each time, through ``vaekit train`` with ``--stream on``
(batches read from disk) and, for contrast, ``--stream off`` (the file loaded into memory).
Each process reports its peak resident memory (VmHWM from /proc/self/status, Linux; else
ru_maxrss), the time of the last training epoch (with its validation pass; one-off set-up
excluded) and the whole command's time (reading, checks, every epoch, final metrics). The table shows the ratios 10N / N:
streamed memory stays roughly flat while time grows linearly with the rows.

    python bench/bench_memmap.py                 # N = 20,000, D = 512, 2 epochs
    python bench/bench_memmap.py --rows 50000 --features 784 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, os, resource, sys, time
import vaekit.runs as runs, vaekit.train as train
path, stream, epochs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
result = runs.train({"data": path, "stream": stream, "epochs": epochs, "hidden": (64,), "latent_dim": 8,
                     "likelihood": "gaussian", "scale": 0.3, "batch_size": 256, "device": "cpu",
                     "progress": False, "out": out}, log=lambda m: None)
total = time.perf_counter() - t0
epoch_s = result.history[-1]["seconds"]  # the last epoch alone (+ its validation pass): steady state
peak_kb = None
try:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
except OSError:
    pass
if peak_kb is None:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": peak_kb / 1024, "fit_s": epoch_s, "total_s": total}))
"""


def write_rows(path: Path, n: int, d: int, seed: int = 0, block: int = 20_000) -> None:
    """A float32 .npy of n x d written block by block (the writer never holds it either)."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, block):
        stop = min(n, start + block)
        out[start:stop] = rng.random((stop - start, d), dtype=np.float32)
    out.flush()
    del out


def run(path: Path, stream: str, epochs: int, work: Path) -> dict:
    out = work / f"run-{path.stem}-{stream}-{time.time_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), stream, str(epochs), str(out)], capture_output=True, text=True, env=env
    )
    if res.returncode:
        raise SystemExit(f"child failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000, help="N, the small file's rows")
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--skip-memory", action="store_true", help="do not run the in-memory contrast")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = [args.rows, args.factor * args.rows]
        files = []
        for n in sizes:
            p = work / f"rows{n}.npy"
            write_rows(p, n, args.features)
            files.append(p)
        modes = ["on"] + ([] if args.skip_memory else ["off"])
        results = {(m, n): run(p, m, args.epochs, work) for n, p in zip(sizes, files) for m in modes}
    print(
        f"training {args.epochs} epochs on N x {args.features} float32 (80% train), MLP 64 hidden, latent 8, "
        "Gaussian scale 0.3, batch 256, CPU"
    )
    header = f"{'data':<22}{'rows':>10}{'file MB':>10}{'peak RSS MB':>13}{'epoch s':>10}{'rows/s':>10}{'total s':>9}"
    print(header)
    print("-" * len(header))
    for m in modes:
        for n in sizes:
            r = results[(m, n)]
            mb = n * args.features * 4 / 2**20
            label = "streamed from disk" if m == "on" else "loaded into memory"
            print(
                f"{label:<22}{n:>10}{mb:>10.0f}{r['peak_mb']:>13.0f}{r['fit_s']:>10.2f}"
                f"{0.8 * n / r['fit_s']:>10.0f}{r['total_s']:>9.1f}"
            )
    print()
    for m in modes:
        a, b = results[(m, sizes[0])], results[(m, sizes[1])]
        label = "streamed" if m == "on" else "in memory"
        print(
            f"{label}: 10N / N  peak RSS x{b['peak_mb'] / a['peak_mb']:.2f}, epoch time x{b['fit_s'] / a['fit_s']:.2f} "
            f"(rows x{sizes[1] / sizes[0]:.0f})"
        )


if __name__ == "__main__":
    main()
