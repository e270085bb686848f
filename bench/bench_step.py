"""Time per training step of ``vaekit.fit`` for small to MNIST-sized models, optionally beside
another vaekit checkout (to measure a change), on one CPU thread (``--threads 0``: each checkout's own default).

    python bench/bench_step.py                            # this checkout
    python bench/bench_step.py --against /path/to/other/src
    python bench/bench_step.py --cases digits --threads 2 --against /path/to/other/src   # the default run's model

Each measurement is a fresh process that trains one warm-up epoch and then ``--epochs`` timed
epochs; the checkouts alternate and every measurement is repeated ``--repeats`` times, and the
table shows the best (least disturbed) repeat. "CPU" is the process's own CPU time per step, which
a busy machine disturbs less than the wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {  # name: (data dim, hidden, latent, examples); Bernoulli on random binary data
    "2-32-2": (2, 32, 2, 12800),
    "64-128-8": (64, 128, 8, 12800),
    "784-400-20": (784, 400, 20, 3200),
    "digits": (64, 128, 8, 1797),  # the default run's model: the digits' 17 grey levels, categorical, 128-128
}


def worker(case: str, epochs: int, batch: int, threads: int, amp: str | None) -> dict:
    import torch

    import vaekit
    from vaekit.train import TrainConfig, fit

    if threads > 0:
        torch.set_num_threads(threads)
    d, h, z, n = CASES[case]
    if case == "digits":
        from vaekit.data.builtin import digits

        x = torch.as_tensor(digits().x)
        hidden, likelihood = (h, h), {"name": "categorical", "num_classes": 17}
    else:
        x = (torch.rand(n, d, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        hidden, likelihood = (h,), {"name": "bernoulli"}
    torch.manual_seed(0)
    model = vaekit.build_model(
        vaekit.ModelSpec(data_shape=(d,), latent_dim=z, hidden=hidden, activation="relu", likelihood=likelihood)
    )
    extra = {"threads": threads} if "threads" in TrainConfig.__dataclass_fields__ else {}
    if amp:
        extra["amp"] = amp
    fit(model, x, config=TrainConfig(epochs=1, batch_size=batch, progress=False, device="cpu", **extra))
    steps = epochs * -(-n // batch)
    wall, cpu = time.perf_counter(), time.process_time()
    fit(model, x, config=TrainConfig(epochs=epochs, batch_size=batch, progress=False, device="cpu", **extra))
    return {"wall_ms": (time.perf_counter() - wall) / steps * 1e3, "cpu_ms": (time.process_time() - cpu) / steps * 1e3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", help="the src/ folder of another vaekit checkout")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 0: leave them to vaekit (TrainConfig.threads=0) or, for a checkout "
        "without that setting, to torch's default",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--amp", choices=["bf16"], help="also time this checkout with bf16 autocast")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        case, amp = args.worker
        print("RESULT " + json.dumps(worker(case, args.epochs, args.batch, args.threads, None if amp == "-" else amp)))
        return 0

    trees = {"this": str(HERE.parent / "src")}
    if args.against:
        trees["other"] = str(Path(args.against).resolve())
    variants = [(name, tree, "-") for name, tree in trees.items()]
    if args.amp:
        variants.append((f"this, {args.amp}", trees["this"], args.amp))
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeats):
        for case in args.cases.split(","):
            for name, tree, amp in variants:
                env = {**os.environ, "PYTHONPATH": tree}
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    case,
                    amp,
                    "--epochs",
                    str(args.epochs),
                    "--batch",
                    str(args.batch),
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = next((row for row in out.stdout.splitlines() if row.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{name} {case} failed: {out.stderr.strip().splitlines()[-1:]}")
                r = json.loads(line[7:])
                key = (case, name)
                if key not in best or r["cpu_ms"] < best[key]["cpu_ms"]:
                    best[key] = r
    try:
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    threads = "default" if args.threads == 0 else args.threads
    print(
        f"\nms per training step (batch {args.batch}, threads: {threads}, best of {args.repeats}; "
        f"load average after: {load})\n"
    )
    names = [v[0] for v in variants]
    print(
        "| model | "
        + " | ".join(f"{n}: wall | {n}: CPU" for n in names)
        + (" | CPU this / other |" if "other" in names else " |")
    )
    print("|---|" + "---:|" * (2 * len(names) + ("other" in names)))
    for case in args.cases.split(","):
        cells = []
        for n in names:
            r = best[(case, n)]
            cells += [f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}"]
        ratio = f" | {best[(case, 'this')]['cpu_ms'] / best[(case, 'other')]['cpu_ms']:.2f}" if "other" in names else ""
        print(f"| {case} | " + " | ".join(cells) + ratio + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
