"""A/B of log_marginal's Bernoulli MLP path against another version of ``vaekit/objectives.py``, in
rotating rounds in one process: the other file's ``_bernoulli_mlp_log_px_z`` is swapped in for half of
the calls. Prints the median times, the speed ratio and the largest difference of the estimates.

    git show 96bd510:src/vaekit/objectives.py > /tmp/objectives_old.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ab_log_marginal.py /tmp/objectives_old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import vaekit
from vaekit import objectives

sys.path.insert(0, str(Path(__file__).parent))
from bench_log_marginal import build  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("other", help="another version of src/vaekit/objectives.py")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("vaekit._other_objectives", args.other)
    other = importlib.util.module_from_spec(spec)
    other.__package__ = "vaekit"
    sys.modules[spec.name] = other
    spec.loader.exec_module(other)
    this = objectives._bernoulli_mlp_log_px_z
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.n}, k={args.k}")
    for hidden, latent in ((100, 8), (400, 20)):
        model = build(784, latent, hidden, "cpu")
        x = (torch.rand(args.n, 784, generator=torch.Generator().manual_seed(1)) > 0.5).float()
        times: dict[str, list[float]] = {"other": [], "this": []}
        estimates = {}
        try:
            for _ in range(args.rounds):
                for name, fn in (("other", other._bernoulli_mlp_log_px_z), ("this", this)):
                    objectives._bernoulli_mlp_log_px_z = fn
                    torch.manual_seed(3)
                    start = time.perf_counter()
                    estimates[name] = vaekit.log_marginal(model, x, k=args.k).log_px
                    times[name].append(time.perf_counter() - start)
        finally:
            objectives._bernoulli_mlp_log_px_z = this
        a, b = statistics.median(times["other"]), statistics.median(times["this"])
        diff = float((estimates["other"] - estimates["this"]).abs().max())
        print(
            f"784-{hidden}-2x{latent}: other {a:.3f} s, this {b:.3f} s, this / other speed {a / b:.2f}x; "
            f"largest |difference| of log p(x) {diff:.2e} nats; load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
