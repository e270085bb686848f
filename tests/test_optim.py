"""Optimisers (Adam, AdamW) and learning-rate schedules: numerics against torch, the schedules'
closed forms, checkpointed state and bitwise resume."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import vaekit
from vaekit import TrainConfig, adam, checkpoint, fit, schedules
from vaekit.errors import CheckpointError


def _model(seed=0):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(data_shape=(64,), latent_dim=3, hidden=(32,), likelihood={"name": "bernoulli"})
    return vaekit.build_model(spec)


def test_fused_adamw_matches_torch_adamw():
    torch.manual_seed(0)
    a = [torch.randn(5, 4), torch.randn(7)]
    b = [t.clone().requires_grad_(True) for t in a]
    a = [t.requires_grad_(True) for t in a]
    ours = adam.AdamW(a, lr=0.01, weight_decay=0.3)
    ref = torch.optim.AdamW(b, lr=0.01, weight_decay=0.3, foreach=False)
    for _ in range(20):
        g = [torch.randn_like(t) for t in a]
        for p, q, gi in zip(a, b, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        ours.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # decoupled decay differs from Adam's L2 term: the same run with Adam ends elsewhere
    c = [t.detach().clone().requires_grad_(True) for t in b]
    plain = adam.Adam(c, lr=0.01, weight_decay=0.3)
    for p in c:
        p.grad = torch.ones_like(p)
    plain.step()
    d = [t.detach().clone().requires_grad_(True) for t in b]
    w = adam.AdamW(d, lr=0.01, weight_decay=0.3)
    for p in d:
        p.grad = torch.ones_like(p)
    w.step()
    assert not torch.allclose(c[0], d[0])
    # torch's AdamW loads our state dict and the other way round
    ref2 = torch.optim.AdamW([t.detach().clone().requires_grad_(True) for t in a], lr=0.01, weight_decay=0.3)
    ref2.load_state_dict(ours.state_dict())
    back = adam.AdamW([t.detach().clone().requires_grad_(True) for t in a], lr=0.01, weight_decay=0.3)
    back.load_state_dict(ref.state_dict())
    torch.testing.assert_close(back.exp_avg_sq[0], ref.state[b[0]]["exp_avg_sq"])


def test_make_optimizer_follows_config():
    from vaekit.train import make_optimizer

    m = _model()
    assert type(make_optimizer(m, TrainConfig(optimizer="adamw"))) is adam.AdamW
    assert type(make_optimizer(m, TrainConfig())) is adam.Adam
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")


def test_schedule_closed_forms():
    c = TrainConfig(epochs=10, lr=0.1, lr_schedule="cosine", lr_min=0.01)
    rates = [schedules.lr_at(c, e) for e in range(10)]
    assert rates[0] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.01 + 0.09 * 0.5)
    assert all(x > y for x, y in zip(rates, rates[1:]))
    s = TrainConfig(epochs=10, lr=0.1, lr_schedule="step", lr_step=3, lr_factor=0.5)
    assert [schedules.lr_at(s, e) for e in range(7)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])
    p = TrainConfig(lr=0.1, lr_schedule="plateau", lr_patience=2, lr_factor=0.5, lr_min=0.02)
    tracker = schedules.Plateau()
    seen = []
    for v in [1.0, 2.0, 1.5, 1.9, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
        tracker.update(v, p.lr_patience, p.lr_factor)
        seen.append(schedules.lr_at(p, 0, tracker))
    # two epochs without a better ELBO halve the rate; it never goes below lr_min
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02])


def test_history_records_the_rates_used(tiny_digits):
    train, val = tiny_digits
    cfg = TrainConfig(epochs=4, batch_size=100, lr=4e-3, lr_schedule="step", lr_step=2, lr_factor=0.25, progress=False)
    h = fit(_model(), train[:200], val, cfg).history
    assert h.column("lr") == pytest.approx([4e-3, 4e-3, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="plateau"):
        fit(_model(), train[:200], None, TrainConfig(epochs=1, lr_schedule="plateau", progress=False))


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine", "lr_min": 1e-4},
        {"optimizer": "adam", "lr_schedule": "plateau", "lr_patience": 1, "lr_factor": 0.5, "lr": 0.1},
    ],
)
def test_resume_is_bitwise(tiny_digits, tmp_path, settings):
    train, val = tiny_digits
    cfg = TrainConfig(epochs=6, batch_size=100, seed=4, threads=1, progress=False, **settings)
    full = _model(1)
    h_full = fit(full, train[:300], val, cfg).history

    path = tmp_path / "trainer.safetensors"

    def stop_at_3(model, state):
        if state.epoch == 3:
            checkpoint.save_trainer(path, model, state)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(1), train[:300], val, cfg, callbacks=[stop_at_3])
    resumed = _model(77)
    torch.manual_seed(999)
    state = checkpoint.load_trainer(path, resumed)
    if settings["lr_schedule"] == "plateau":
        assert state.schedule is not None and state.schedule["scale"] == 0.5  # dropped before the stop
    h_res = fit(resumed, train[:300], val, cfg, resume=state).history
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert h_res.column("val_elbo") == h_full.column("val_elbo")
    assert h_res.column("lr") == h_full.column("lr")
    if settings["lr_schedule"] == "plateau":
        assert min(h_full.column("lr")) < settings["lr"]  # the plateau schedule really dropped the rate


def test_old_trainer_files_load_and_bad_schedule_state_is_refused(tiny_digits, tmp_path):
    train, val = tiny_digits
    m = _model()
    res = fit(m, train[:100], val, TrainConfig(epochs=1, batch_size=50, progress=False))
    path = tmp_path / "trainer.safetensors"
    checkpoint.save_trainer(path, m, res.state)  # no schedule: the layout of files written before schedules
    assert checkpoint.load_trainer(path, _model()).schedule is None
    res.state.schedule = {"best": -40.0, "bad": 0, "scale": 1.5}
    checkpoint.save_trainer(path, m, res.state)
    with pytest.raises(CheckpointError, match="scale"):
        checkpoint.load_trainer(path, _model())
    res.state.schedule = {"best": -math.inf, "bad": 2, "scale": 0.5}
    checkpoint.save_trainer(path, m, res.state)
    assert checkpoint.load_trainer(path, _model()).schedule == {"best": -math.inf, "bad": 2, "scale": 0.5}


def test_cli_flags_and_toml(tmp_path):
    import numpy as np

    x = (np.random.default_rng(0).random((120, 8)) > 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\noptimizer = "adamw"\nlr_schedule = "step"\nlr_step = 1\nlr_factor = 0.5\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit", "train", "--data", str(tmp_path / "x.npy"), "--config", str(toml)]
    cmd += ["--epochs", "2", "--latent-dim", "2", "--weight-decay", "0.01", "--out", str(out), "--device", "cpu"]
    cmd += ["--no-progress", "--no-figures"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["optimizer"], cfg["lr_schedule"], cfg["lr_step"], cfg["weight_decay"]) == ("adamw", "step", 1, 0.01)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4])
    bad = subprocess.run(
        cmd[:6] + ["--lr-schedule", "linear", "--out", str(tmp_path / "r2")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "lr_schedule" in bad.stderr.replace("-", "_") and "Traceback" not in bad.stderr


def test_estimator_takes_optimiser_and_schedule():
    import numpy as np

    x = (np.random.default_rng(1).random((150, 6)) > 0.5).astype(np.float64)
    est = vaekit.VAE(latent_dim=2, hidden=(8,), epochs=3, optimizer="adamw", weight_decay=0.01, lr_schedule="cosine")
    est.set_params(lr_min=1e-4, random_state=0, threads=1).fit(x)
    rates = [row["lr"] for row in est.history_]
    assert rates[0] == pytest.approx(1e-3) and rates[0] > rates[1] > rates[2] > 1e-4
    with pytest.raises(ValueError, match="validation_fraction"):
        vaekit.VAE(epochs=1, lr_schedule="plateau").fit(x)
    with pytest.raises(ValueError, match="optimizer"):
        vaekit.VAE(epochs=1, optimizer="rmsprop").fit(x)


def test_adamw_and_schedules_keep_dynamo_away():
    code = (
        "import sys, numpy as np, torch, vaekit\n"
        "x = (np.random.default_rng(0).random((64, 6)) > 0.5).astype('float32')\n"
        "m = vaekit.build_model(vaekit.ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,), likelihood='bernoulli'))\n"
        "ds = torch.utils.data.TensorDataset(torch.as_tensor(x))\n"
        "vaekit.fit(m, ds, x, vaekit.TrainConfig(epochs=2, optimizer='adamw', lr_schedule='plateau', progress=False))\n"
        "print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("saved, asked", [("adam", "adamw"), ("adamw", "adam")])
def test_resume_with_another_optimiser_is_refused(tiny_digits, saved, asked):
    """Adam's and AdamW's moments have the same layout: continuing one with the other would pass
    silently, so the state names its optimiser and a mismatch is refused in one line."""
    train, _ = tiny_digits
    model = _model(2)
    state = fit(model, train[:200], config=TrainConfig(epochs=1, batch_size=100, optimizer=saved, progress=False)).state
    with pytest.raises(ValueError, match=f"written by optimizer='{saved}'.*asks for optimizer='{asked}'"):
        fit(
            model,
            train[:200],
            config=TrainConfig(epochs=2, batch_size=100, optimizer=asked, progress=False),
            resume=state,
        )
    # the same optimiser continues
    fit(model, train[:200], config=TrainConfig(epochs=2, batch_size=100, optimizer=saved, progress=False), resume=state)
