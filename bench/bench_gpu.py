"""The GPU checks of issue 12 in one short script, for the first session that is lent a CUDA machine.

    python bench/bench_gpu.py --out "$OUT"            # on the GPU machine: about 3-5 minutes on one H200
    python bench/bench_gpu.py --device cpu --tiny     # the same code on a CPU in under a minute (a test runs it)

Four parts; each one that fails prints its error in its table and the others still run:

  training   vaekit.fit against the lean hand-written loop (bench/bench_train.py's, on the device): the
             large 784-400-20 and small 64-128-8 models, batch 128 and 1024, float32 and bfloat16
             autocast; rotating rounds in this one process after a warm-up run of each; steady
             samples/s (epochs after the first) and the fraction of the step's GEMM bound (its own
             products at their real shapes and dtype, timed just before and after each run)
  compile    the small model at batch 128: vaekit eager against ``compile=True``; the lean loop eager,
             torch.compile'd, and (on CUDA) with CUDA graphs (``mode="reduce-overhead"``)
  log p(x)   vaekit.log_marginal against the plain batched loop (bench/bench_log_marginal.py's), on the
             784-100-2x8 and 784-400-2x20 decoders: examples/s and the fraction of the decoder's GEMM bound
  torchrun   a one-process ``torchrun`` job of ``vaekit train`` on the device (NCCL for CUDA tensors, gloo
             on a CPU): exit status, the run folder complete, the backend

It prints markdown tables and writes them, with the raw numbers, to ``OUT/gpu.md`` and ``OUT/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_log_marginal as lm  # noqa: E402 - the bench folder is not a package
import bench_train as bt  # noqa: E402


def training_table(args, lines: list[str], raw: dict) -> None:
    import numpy as np

    large = bt.stroke_images(args.n)
    from sklearn.datasets import load_digits

    small = (load_digits().data > 7).astype(np.float32)
    contenders = {"vaekit": bt.run_vaekit, "lean": bt.run_lean}
    lines += [
        "| model | batch | dtype | vaekit steady samples/s | lean steady samples/s | vaekit / lean | bound (vaekit / lean) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for model, x in (("large", large), ("small", small)):
        dims = bt.MODELS[model]
        epochs = args.epochs if model == "large" else args.small_epochs
        for batch in (128, 1024):
            for amp in (None, "bf16"):
                dtype = "float32" if amp is None else "bfloat16"
                runs: dict[str, list[dict]] = {c: [] for c in contenders}
                try:
                    for fn in contenders.values():  # warm-up: CUDA context, cuBLAS handles, kernels
                        fn(x[: 4 * batch], dims, 1, 0, 0, device=args.device, batch=batch, amp=amp)
                    for r in range(args.rounds):
                        order = list(contenders)[r % 2 :] + list(contenders)[: r % 2]
                        for name in order:
                            before = bt.gemm_seconds(dims, batch, device=args.device, dtype=dtype)
                            times, total, _ = contenders[name](
                                x, dims, epochs, 0, args.seed, device=args.device, batch=batch, amp=amp
                            )
                            after = bt.gemm_seconds(dims, batch, device=args.device, dtype=dtype)
                            step = statistics.median(times[1:] or times) / -(-len(x) // batch)
                            runs[name].append(
                                {"epoch_seconds": times, "total": total, "gemm": (before + after) / 2, "step": step}
                            )
                except Exception as err:  # noqa: BLE001 - one failing case must not hide the others
                    lines.append(f"| {model} | {batch} | {dtype} | failed: {_line(err)} | | | |")
                    continue
                rate = {
                    c: statistics.median(
                        len(x) / statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"]) for r in rs
                    )
                    for c, rs in runs.items()
                }
                bound = {c: statistics.median(r["gemm"] / r["step"] for r in rs) for c, rs in runs.items()}
                raw.setdefault("training", []).append(
                    {"model": model, "batch": batch, "dtype": dtype, "runs": runs, "rate": rate, "bound": bound}
                )
                lines.append(
                    f"| {model} {'-'.join(map(str, dims))} | {batch} | {dtype} | {rate['vaekit']:,.0f} | "
                    f"{rate['lean']:,.0f} | {rate['vaekit'] / rate['lean']:.2f} | "
                    f"{bound['vaekit']:.2f} / {bound['lean']:.2f} |"
                )


def compile_table(args, lines: list[str], raw: dict) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    x = (load_digits().data > 7).astype(np.float32)
    dims, batch = bt.MODELS["small"], 128
    contenders = {
        "vaekit eager": lambda epochs: bt.run_vaekit(x, dims, epochs, 0, args.seed, device=args.device, batch=batch),
        "vaekit compile=True": lambda epochs: bt.run_vaekit(
            x, dims, epochs, 0, args.seed, device=args.device, batch=batch, compile=True
        ),
        "lean eager": lambda epochs: bt.run_lean(x, dims, epochs, 0, args.seed, device=args.device, batch=batch),
        "lean torch.compile": lambda epochs: bt.run_lean(
            x, dims, epochs, 0, args.seed, device=args.device, batch=batch, compile_mode="default"
        ),
    }
    if args.device.startswith("cuda"):  # CUDA graphs: a captured step replayed, no per-kernel launches
        contenders["lean torch.compile mode=reduce-overhead"] = lambda epochs: bt.run_lean(
            x, dims, epochs, 0, args.seed, device=args.device, batch=batch, compile_mode="reduce-overhead"
        )
    lines += [
        f"| small model 64-128-8, batch {batch} | steady samples/s | vs lean eager | whole run s (compiling included) |",
        "|---|---:|---:|---:|",
    ]
    results = {}
    for name, fn in contenders.items():
        try:
            times, total, _ = fn(args.small_epochs)
            results[name] = {
                "epoch_seconds": times,
                "total": total,
                "rate": len(x) / statistics.median(times[1:] or times),
            }
        except Exception as err:  # noqa: BLE001
            results[name] = {"error": _line(err)}
    raw["compile"] = results
    base = results.get("lean eager", {}).get("rate", float("nan"))
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | |")
        else:
            lines.append(f"| {name} | {r['rate']:,.0f} | {r['rate'] / base:.2f} | {r['total']:.1f} |")


def log_px_table(args, lines: list[str], raw: dict) -> None:
    import torch

    import vaekit

    lines += [
        "| decoder | N x k | log_marginal examples/s | plain batched loop examples/s | ratio | bound (log_marginal / plain) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for hidden, latent in ((100, 8), (400, 20)):
        try:
            model = lm.build(784, latent, hidden, args.device)
            g = torch.Generator().manual_seed(1)
            x = (torch.rand(args.log_n, 784, generator=g) > 0.5).float().to(args.device)
            per = vaekit.objectives.elements_per_draw(model, x)
            batch = max(1, min(args.log_n, vaekit.objectives.DEFAULT_MAX_ELEMENTS // per // args.k, 4096))
            rows = batch * args.k  # draws per decoder call
            vaekit.log_marginal(model, x[: 2 * batch], k=args.k)  # warm-up
            lm.plain_batched_loop(model, x[:20], args.k)
            seconds: dict[str, list[float]] = {"batched": [], "plain": [], "gemm": []}
            for _ in range(args.rounds):
                for key, fn in (
                    ("batched", lambda model=model, x=x: vaekit.log_marginal(model, x, k=args.k)),
                    ("plain", lambda model=model, x=x: lm.plain_batched_loop(model, x, args.k)),
                ):
                    bt.sync(args.device)
                    started = time.perf_counter()
                    fn()
                    bt.sync(args.device)
                    seconds[key].append(time.perf_counter() - started)
                seconds["gemm"].append(lm.decoder_gemm_seconds(model, rows, rows) * args.log_n * args.k / rows)
            t = {key: statistics.median(v) for key, v in seconds.items()}
            raw.setdefault("log_px", []).append({"hidden": hidden, "latent": latent, "seconds": seconds})
            lines.append(
                f"| 784-{hidden}-2x{latent} | {args.log_n} x {args.k} | {args.log_n / t['batched']:,.1f} | "
                f"{args.log_n / t['plain']:,.1f} | {t['plain'] / t['batched']:.2f} | "
                f"{t['gemm'] / t['batched']:.2f} / {t['gemm'] / t['plain']:.2f} |"
            )
        except Exception as err:  # noqa: BLE001
            lines.append(f"| 784-{hidden}-2x{latent} | failed: {_line(err)} | | | | |")


def torchrun_table(args, lines: list[str], raw: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="vaekit-gpu-torchrun-") as folder:
        out = Path(folder) / "run"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "vaekit",
            "train",
            "--device",
            args.device,
            "--epochs",
            "2",
            "--no-figures",
            "--no-progress",
            "--out",
            str(out),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=folder)
        seconds = time.perf_counter() - started
        files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        epochs = len((out / "history.jsonl").read_text().splitlines()) if (out / "history.jsonl").is_file() else 0
    import torch
    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    tail = (proc.stderr.strip().splitlines() or [""])[-1][:160]
    ok = proc.returncode == 0 and "model.safetensors" in files and epochs == 2
    raw["torchrun"] = {"rc": proc.returncode, "files": files, "epochs": epochs, "seconds": seconds, "stderr": tail}
    lines += [
        "| torchrun, 1 process | exit | epochs in history | model saved | backend | seconds |",
        "|---|---:|---:|---|---|---:|",
        f"| vaekit train --device {args.device} | {proc.returncode} | {epochs} | "
        f"{'yes' if 'model.safetensors' in files else 'no'} | {backend} | {seconds:.1f} |",
    ]
    if not ok:
        lines.append(f"\nfailed: {tail}")


PARTS = {"training": training_table, "compile": compile_table, "log_px": log_px_table, "torchrun": torchrun_table}


def _line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None, help="folder for gpu.md and gpu.json (default: print only)")
    p.add_argument("--tiny", action="store_true", help="small sizes: checks the script, measures nothing")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n", type=int, default=60_000, help="training examples of the large model")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the large model")
    p.add_argument("--small-epochs", type=int, default=20)
    p.add_argument("--log-n", type=int, default=2000, help="examples for log p(x)")
    p.add_argument("--k", type=int, default=1000, help="importance samples for log p(x)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.rounds, args.n, args.epochs, args.small_epochs, args.log_n, args.k = 1, 2048, 2, 2, 40, 50
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run it on the GPU machine, or with --device cpu --tiny", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    lines = [
        f"# vaekit GPU checks: {name}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}{' (--tiny: sizes too small to measure)' if args.tiny else ''}",
    ]
    raw: dict = {"device": name, "torch": torch.__version__, "tiny": args.tiny}
    print(lines[0], flush=True)
    failed = []
    for part in args.parts.split(","):
        first = len(lines)
        lines += ["", f"## {part}", ""]
        started = time.perf_counter()
        try:
            PARTS[part](args, lines, raw)
        except Exception as err:  # noqa: BLE001 - a part that fails as a whole: its error, then the next part
            failed.append(part)
            lines.append(f"failed: {_line(err)}")
            traceback.print_exc()
        lines.append(f"\n({part}: {time.perf_counter() - started:.0f} s)")
        print("\n".join(lines[first:]), flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.md").write_text(text)
        (out / "gpu.json").write_text(json.dumps(raw, indent=1, default=str))
    return 1 if failed or "failed" in text else 0


if __name__ == "__main__":
    sys.exit(main())
