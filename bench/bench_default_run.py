"""The default run end to end, code against code: ``vaekit train`` (digits, the defaults), or ``vaekit
report`` or ``vaekit evaluate`` of one finished run, from two or more source trees in rotating rounds (A, B, A, B, ...), a
fresh process per run and a pause between runs. A tree is a git revision of this repository (its
``src`` is exported into a temporary folder) or the path of a ``src`` folder; ``.`` is the working
tree.

For ``train`` it reads the time line that the command prints last (start-up, epochs, figures, ...)
and reports, per contender, the medians and ranges of the wall time, the epochs, the figures, the
wall time minus the epochs (the overhead, which does not depend on how fast this machine trains
that minute) and wall / train. For ``report`` and ``evaluate`` it reports the wall time of the process.

    python bench/bench_default_run.py HEAD~1 .                  # 8 rounds of vaekit train
    python bench/bench_default_run.py HEAD~1 . --command report --rounds 6
    python bench/bench_default_run.py HEAD~1 . --command evaluate --rounds 6
    python bench/bench_default_run.py HEAD~1 . --train-args "--threads 1"
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME_LINE = re.compile(r"time: (?P<wall>[\d.]+) s wall = .*?train (?P<train>[\d.]+) s .*?figures (?P<figures>[\d.]+) s")


def source_tree(spec: str, scratch: Path) -> Path:
    """The ``src`` folder to put on PYTHONPATH for ``spec`` (a revision or a path)."""
    if spec == ".":
        return ROOT / "src"
    if Path(spec).is_dir():
        return Path(spec).resolve()
    out = scratch / re.sub(r"[^\w.-]", "_", spec)
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "src"


def run_once(src: Path, argv: list[str], cwd: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "vaekit", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"vaekit {' '.join(argv)} failed with {src}:\n{out.stderr}")
    row = {"process": seconds, "load": os.getloadavg()[0]}
    match = TIME_LINE.search(out.stdout)
    if match:
        row.update({k: float(v) for k, v in match.groupdict().items()})
        row["overhead"] = row["wall"] - row["train"]
        row["ratio"] = row["wall"] / row["train"]
    return row


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="+", help="git revisions or src folders; '.' is the working tree")
    p.add_argument("--command", choices=["train", "report", "evaluate"], default="train")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    p.add_argument("--train-args", default="", help="more arguments for vaekit train, e.g. '--threads 1'")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    extra = shlex.split(args.train_args)
    scratch = Path(tempfile.mkdtemp(prefix="vaekit-bench-default-"))
    try:
        trees = {spec: source_tree(spec, scratch) for spec in args.trees}
        finished = None
        if args.command != "train":  # one run, trained once by the last tree, used by each
            finished = scratch / "finished"
            run_once(trees[args.trees[-1]], ["train", "--no-progress", "--no-figures", "--out", str(finished)], scratch)
        rows: dict[str, list[dict[str, float]]] = {spec: [] for spec in trees}
        print(f"{os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.2f} at the start")
        for r in range(args.rounds):
            for spec, src in trees.items():
                work = scratch / "work"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                argv = ["train", "--no-progress", *extra] if finished is None else [args.command, str(finished)]
                row = run_once(src, argv, work)
                rows[spec].append(row)
                shown = " ".join(f"{k} {v:.2f}" for k, v in row.items())
                print(f"round {r + 1} {spec}: {shown}", flush=True)
                time.sleep(args.pause)
        keys = ["process", "wall", "train", "figures", "overhead", "ratio", "load"]
        keys = [k for k in keys if all(k in row for runs in rows.values() for row in runs)]
        print(f"\nvaekit {args.command}, {args.rounds} rotating rounds; median (range)")
        print("| tree | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for spec, runs in rows.items():
            print(f"| {spec} | " + " | ".join(summary([row[k] for row in runs]) for k in keys) + " |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
