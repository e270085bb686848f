"""Start-up time of the command line: ``vaekit --help``, ``vaekit train --help``, an argument
error, ``import vaekit`` and, for scale, ``import torch`` alone. Each is a fresh interpreter;
contenders are timed in rotating rounds in one run and the median wall time is reported.

    PYTHONPATH=src python bench/bench_startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "vaekit --help": [sys.executable, "-m", "vaekit", "--help"],
    "vaekit train --help": [sys.executable, "-m", "vaekit", "train", "--help"],
    "vaekit train --lr nan (error)": [sys.executable, "-m", "vaekit", "train", "--lr", "nan"],
    "python -c 'import vaekit'": [sys.executable, "-c", "import vaekit"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.rounds):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=os.environ)
            times[name].append(time.perf_counter() - t0)
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.rounds} rotating rounds")
    print("| command | median s | min s |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} |")


if __name__ == "__main__":
    main()
