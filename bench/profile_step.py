"""Where a training step of ``vaekit.fit`` spends its time: torch's profiler over the steps of a few
epochs (after one warm-up epoch), operators by their own CPU time. Bernoulli MLP VAE, ReLU, batch 128,
Adam 1e-3 on random binary data, as in ``bench_train.py``.

    python bench/profile_step.py                     # 784-400-20, 1 thread
    python bench/profile_step.py --model 64-128-8 --threads 2
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="784-400-20", help="data-hidden-latent sizes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--examples", type=int, default=3840)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    try:
        d, h, latent = (int(v) for v in args.model.split("-"))
    except ValueError:
        p.error(f"--model must be three sizes like 784-400-20, not {args.model!r}")
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    import vaekit
    from vaekit.train import TrainConfig, fit

    torch.manual_seed(0)
    x = torch.from_numpy((np.random.default_rng(0).random((args.examples, d)) < 0.2).astype(np.float32))
    spec = vaekit.ModelSpec(
        data_shape=(d,), latent_dim=latent, hidden=(h,), activation="relu", likelihood={"name": "bernoulli"}
    )
    model = vaekit.build_model(spec)
    settings = dict(batch_size=128, lr=1e-3, progress=False, threads=args.threads)
    fit(model, x, config=TrainConfig(epochs=1, **settings))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(model, x, config=TrainConfig(epochs=args.epochs, **settings))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    steps = args.epochs * -(-args.examples // 128)
    print(f"model {args.model}, {args.threads} thread(s), {steps} steps; own CPU time per operator")
    print("| operator | ms | share | calls |")
    print("|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1e3:.1f} | {e.self_cpu_time_total / total:.1%} | {e.count} |")
    print(f"total {total / 1e3:.1f} ms, {total / 1e3 / steps:.2f} ms a step")


if __name__ == "__main__":
    main()
