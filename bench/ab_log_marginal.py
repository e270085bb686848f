"""A/B of a log_marginal path against another version of ``vaekit/objectives.py``, in rotating rounds in
one process: the other file's function ``--swap`` (by default the Bernoulli MLP path,
``_bernoulli_mlp_log_px_z``) is swapped in for half of the calls. Prints the median times, the speed
ratio and the largest difference of the estimates.

    git show 96bd510:src/vaekit/objectives.py > /tmp/objectives_old.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ab_log_marginal.py /tmp/objectives_old.py
    # a categorical decoder like the digits run's, through log p(x|z) as a whole
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ab_log_marginal.py /tmp/objectives_old.py --swap _log_px_z \
        --dims 64 --classes 17 --models 128x8 --n 100 --k 1000
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
    p.add_argument("--swap", default="_bernoulli_mlp_log_px_z", help="the function of objectives to swap")
    p.add_argument("--dims", type=int, default=784)
    p.add_argument("--classes", type=int, default=0, help="a categorical likelihood of this many classes")
    p.add_argument("--models", default="100x8,400x20", help="decoders as HIDDENxLATENT, comma-separated")
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("vaekit._other_objectives", args.other)
    other = importlib.util.module_from_spec(spec)
    other.__package__ = "vaekit"
    sys.modules[spec.name] = other
    spec.loader.exec_module(other)
    this = getattr(objectives, args.swap)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.n}, k={args.k}; swapped: {args.swap}")
    g = torch.Generator().manual_seed(1)
    for hidden, latent in (tuple(int(v) for v in m.split("x")) for m in args.models.split(",")):
        model = build(args.dims, latent, hidden, "cpu", args.classes)
        if args.classes:
            x = torch.randint(0, args.classes, (args.n, args.dims), generator=g).float()
        else:
            x = (torch.rand(args.n, args.dims, generator=g) > 0.5).float()
        times: dict[str, list[float]] = {"other": [], "this": []}
        estimates = {}
        try:
            for _ in range(args.rounds):
                for name, fn in (("other", getattr(other, args.swap)), ("this", this)):
                    setattr(objectives, args.swap, fn)
                    torch.manual_seed(3)
                    start = time.perf_counter()
                    estimates[name] = vaekit.log_marginal(model, x, k=args.k).log_px
                    times[name].append(time.perf_counter() - start)
        finally:
            setattr(objectives, args.swap, this)
        a, b = statistics.median(times["other"]), statistics.median(times["this"])
        diff = float((estimates["other"] - estimates["this"]).abs().max())
        print(
            f"{args.dims}-{hidden}-2x{latent}: other {a:.3f} s, this {b:.3f} s, this / other speed {a / b:.2f}x; "
            f"largest |difference| of log p(x) {diff:.2e} nats; load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
