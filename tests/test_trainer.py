"""The training loop's mechanisms: the FitResult, divergence that leaves a clean and resumable
checkpoint, skipped non-finite batches, the timed automatic thread choice, and a first epoch
that does no extra work."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vaekit
from vaekit import checkpoint, train
from vaekit.errors import TrainingError
from vaekit.train import FitResult, TrainConfig, fit


def _model(seed=0):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(
        data_shape=(64,), latent_dim=4, hidden=(32,), activation="relu", likelihood={"name": "bernoulli"}
    )
    return vaekit.build_model(spec)


@pytest.fixture
def data():
    return (np.random.default_rng(0).random((200, 64)) < 0.3).astype(np.float32)


class GradBomb:
    """A gradient hook on one parameter that scales its gradient by ``factor`` at the chosen
    backward calls (1-based), as a diverging step would."""

    def __init__(self, param, calls, factor):
        self.calls, self.factor, self.n = set(calls), factor, 0
        param.register_hook(self)

    def __call__(self, grad):
        self.n += 1
        return grad * self.factor if self.n in self.calls else grad


def _finite_optimizer_state(state):
    tensors = [t for s in state.optimizer["state"].values() for t in s.values() if torch.is_tensor(t)]
    return bool(tensors) and all(torch.isfinite(t).all() for t in tensors)


def test_fit_returns_history_state_and_no_digest_for_one_process(data):
    result = fit(_model(), data, data[:50], TrainConfig(epochs=2, batch_size=50, threads=1, progress=False))
    assert isinstance(result, FitResult)
    assert result.history.column("epoch") == [1, 2] and result.state.epoch == 2 and result.state.step == 8
    assert result.replica_digest is None and result.threads == 1
    assert result.state.best_epoch in (1, 2) and result.state.best_val == max(result.history.column("val_elbo"))


def test_early_stopping_is_a_callback_that_stops_and_counts():
    stop = train.EarlyStopping(patience=2)
    state = train.TrainerState()
    model = _model()
    for epoch, val in enumerate([-10.0, -9.0, -9.5, -9.2], start=1):
        state.epoch = epoch
        state.history.append({"epoch": epoch, "val_elbo": val})
        stop(model, state)
    assert state.stopped_early and state.best_epoch == 2 and state.bad_epochs == 2 and state.best_val == -9.0


@pytest.mark.parametrize("factor", [float("nan"), 1e30])  # a NaN gradient; a finite one whose square overflows Adam
def test_divergence_keeps_a_clean_resumable_checkpoint(data, tmp_path, factor):
    cfg = TrainConfig(epochs=6, batch_size=50, threads=1, progress=False)
    model = _model()
    GradBomb(model.decoder.net[-1].weight, calls=[10], factor=factor)  # epoch 3, batch 2
    saver = checkpoint.RunCheckpointer(tmp_path, total_epochs=cfg.epochs)
    with pytest.raises(TrainingError, match=r"non-finite .*epoch 3.*trainer\.safetensors \(epoch 2\)"):
        fit(model, data, config=cfg, callbacks=[saver])
    fresh = _model(5)
    state = checkpoint.load_trainer(tmp_path / checkpoint.TRAINER_FILE, fresh)
    assert state.epoch == 2 and _finite_optimizer_state(state)
    for k, v in fresh.state_dict().items():  # the model in memory went back to the last good weights
        assert torch.equal(v, model.state_dict()[k]), k
    resumed = fit(fresh, data, config=cfg, resume=state, lr=1e-4)  # a lower lr continues cleanly
    assert resumed.history.column("epoch") == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for v in resumed.history.column("train_elbo"))
    assert _finite_optimizer_state(resumed.state)


def test_divergence_before_any_checkpoint_says_none_was_written(data, tmp_path):
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    GradBomb(model.encoder.net[0].bias, calls=[1], factor=float("inf"))
    saver = checkpoint.RunCheckpointer(tmp_path, total_epochs=3)
    with pytest.raises(TrainingError, match="epoch 1.*no checkpoint was written") as err:
        fit(model, data, config=TrainConfig(epochs=3, batch_size=50, threads=1, progress=False), callbacks=[saver])
    assert "last good checkpoint" not in str(err.value)
    assert not (tmp_path / checkpoint.TRAINER_FILE).exists()
    for k, v in initial.items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_skip_nonfinite_skips_and_counts_the_bad_batches(data):
    cfg = TrainConfig(epochs=3, batch_size=50, threads=1, progress=False, skip_nonfinite=True)
    model = _model()
    GradBomb(model.decoder.net[-1].bias, calls=[2, 7], factor=float("nan"))  # epoch 1 batch 2, epoch 2 batch 3
    result = fit(model, data, config=cfg)
    assert result.history.column("skipped_batches") == [1, 1, 0]
    assert all(math.isfinite(v) for v in result.history.column("train_elbo"))
    assert _finite_optimizer_state(result.state)
    steps = {int(s["step"]) for s in result.state.optimizer["state"].values()}
    assert steps == {12 - 2}  # Adam counted only the steps it took


@pytest.mark.parametrize("fused", [True, False])  # the fused kernel's flag; the copy-back for other optimisers
def test_a_masked_step_changes_nothing(fused):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 3))
    opt = torch.optim.Adam([p], lr=0.1, fused=fused, foreach=None if fused else True)
    for bad in (0.0, 1.0):
        p.grad = torch.randn(5, 3)
        before = [p.detach().clone()] + [t.clone() for t in opt.state[p].values()]
        train._masked_step(opt, torch.tensor(bad))
        after = [p.detach()] + list(opt.state[p].values())
        same = [torch.equal(a, b) for a, b in zip(before, after)]
        if bad:
            assert all(same) and len(same) == 4  # weights, both moments and the step count
        else:
            assert not same[0]
    train._masked_step(opt, torch.tensor(0.0))  # and it steps again afterwards
    assert int(opt.state[p]["step"]) == 2


def test_a_huge_finite_gradient_counts_as_bad():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, 2e19, 0.0])  # its square overflows float32
    assert float(train._bad_step(torch.tensor(1.0), [p])) == 1.0
    p.grad = torch.tensor([1.0, 2e10, 0.0])
    assert float(train._bad_step(torch.tensor(1.0), [p])) == 0.0
    assert float(train._bad_step(torch.tensor(float("nan")), [p])) == 1.0


def test_every_batch_non_finite_is_refused_with_skipping_on(data):
    model = _model()
    GradBomb(model.decoder.net[-1].bias, calls=range(1, 100), factor=float("nan"))
    with pytest.raises(TrainingError, match="every batch of epoch 1"):
        fit(model, data, config=TrainConfig(epochs=2, batch_size=50, threads=1, progress=False, skip_nonfinite=True))


def test_automatic_threads_pick_a_candidate_restore_and_change_no_result(data, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train, "thread_candidates", lambda: [1, 2])
    monkeypatch.setattr(train, "free_cores", lambda: 2)
    tried = []
    timed = train._fastest_threads

    def spy(run, candidates, **kw):
        tried.append(list(candidates))
        return timed(run, candidates, min_run_s=0.0)  # time every count, however short the run

    monkeypatch.setattr(train, "_fastest_threads", spy)
    steps = []
    real_step = train.LossStep.forward
    monkeypatch.setattr(train.LossStep, "forward", lambda self, *a, **kw: steps.append(1) or real_step(self, *a, **kw))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        cfg = TrainConfig(epochs=2, batch_size=50, progress=False)
        auto_model = _model()
        auto = fit(auto_model, data, data[:40], cfg)
        assert tried == [[1, 2]] and auto.threads in (1, 2)
        assert len(steps) > auto.state.step + 4  # the trial ran real steps at both counts
        assert torch.get_num_threads() == 3  # restored
        assert auto.history.column("threads") == [auto.threads] * 2
        given_model = _model()
        given = fit(given_model, data, data[:40], cfg, threads=auto.threads)  # no trial
        assert len(tried) == 1
    finally:
        torch.set_num_threads(before)
    # the trial steps changed no weight, moment or random stream: the same run bit for bit
    for k, v in auto_model.state_dict().items():
        assert torch.equal(v, given_model.state_dict()[k]), k
    assert auto.history.column("val_elbo") == given.history.column("val_elbo")


def test_counts_above_the_free_cores_are_not_tried(data, monkeypatch):
    """Another process busy on one of two cores: 2 threads would wait at every barrier, so the
    automatic setting takes 1 without timing a step at 2."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train, "thread_candidates", lambda: [1, 2])
    monkeypatch.setattr(train, "free_cores", lambda: 1)
    counts = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: counts.append(n) or real(n))
    before = torch.get_num_threads()
    try:
        real(3)  # neither candidate: a set to 2 could only come from a trial
        result = fit(_model(), data, config=TrainConfig(epochs=1, batch_size=50, progress=False))
    finally:
        real(before)
    assert result.threads == 1 and counts == [1, 3]  # set for the run, then restored


def test_free_cores_takes_the_fewest_others_over_its_reads(monkeypatch):
    """A process that runs now and then is seen idle in one of the eight reads, and its core counts
    as free; one seen running in every read takes its core; the reading stops at the first idle read."""
    cores = len(os.sched_getaffinity(0))
    reads = []

    def others(seq):
        it = iter(seq)
        return lambda: reads.append(1) or next(it)

    monkeypatch.setattr(vaekit.cores.time, "sleep", lambda s: None)
    monkeypatch.setattr(vaekit.cores, "others_running", others([1, 1, 1, 0, 1, 1, 1, 1]))
    assert train.free_cores() == cores and len(reads) == 4
    reads.clear()
    monkeypatch.setattr(vaekit.cores, "others_running", others([2, 1, 1, 1, 1, 1, 1, 1]))
    assert train.free_cores() == max(0, cores - 1) and len(reads) == 8


def test_free_cores_counts_other_busy_processes():
    """The reading itself: with two spinning processes beside, at least two fewer cores are free
    than with none (on a machine with at least two cores; an idle machine's count is its cores)."""
    import subprocess
    import sys
    import time

    cores = len(os.sched_getaffinity(0))
    if cores < 2 or not os.path.exists("/proc/loadavg"):
        pytest.skip("needs Linux /proc and two cores")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert train.free_cores() <= cores - 2
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert 0 <= train.free_cores() <= cores


def test_a_short_run_is_not_worth_timing_more_threads(data, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train, "thread_candidates", lambda: [1, 2])
    monkeypatch.setattr(train, "free_cores", lambda: 2)
    counts = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: counts.append(n) or real(n))
    before = torch.get_num_threads()
    result = fit(_model(), data, config=TrainConfig(epochs=1, batch_size=50, progress=False))
    assert result.threads == 1 and 2 not in counts[:-1]  # only the restore may set 2
    assert torch.get_num_threads() == before


def test_resume_reuses_the_recorded_thread_count(data, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(train, "_fastest_threads", lambda run, candidates, **kw: pytest.fail("timed again"))
    state = fit(_model(), data, config=TrainConfig(epochs=1, batch_size=50, threads=1, progress=False)).state
    again = fit(_model(), data, config=TrainConfig(epochs=2, batch_size=50, progress=False), resume=state)
    assert again.threads == 1 and again.history.column("threads") == [1, 1]


def test_first_epoch_does_no_extra_work(data, monkeypatch):
    made, steps = [], []
    init, step = vaekit.adam.Adam.__init__, vaekit.adam.Adam.step

    def counting_init(self, *a, **kw):
        made.append(1)
        init(self, *a, **kw)

    def counting_step(self, *a, **kw):
        steps.append(1)
        return step(self, *a, **kw)

    monkeypatch.setattr(vaekit.adam.Adam, "__init__", counting_init)
    monkeypatch.setattr(vaekit.adam.Adam, "step", counting_step)
    monkeypatch.setattr(torch, "compile", lambda *a, **kw: pytest.fail("compiled without compile=True"))
    result = fit(_model(), data, data[:40], TrainConfig(epochs=2, batch_size=50, threads=1, progress=False))
    assert len(made) == 1 and len(steps) == result.state.step == 8


def test_training_imports_no_torch_module_and_never_the_compiler():
    """No likelihood's training imports a torch module. One imported on first use inside a step is paid
    by the thread trial's first step and skews it: torch.broadcast_shapes' first call imports 484 modules
    (0.27 s), and the categorical likelihood once made the default run's trial take 0.38 s instead of
    0.04. torch's optimisers import torch._dynamo when the first one is made: seconds of start-up."""
    code = (
        "import sys, numpy as np, vaekit; from vaekit.train import fit, TrainConfig; "
        "rng = np.random.default_rng(0); "
        "cases = [({'name': 'bernoulli'}, (rng.random((40, 8)) > 0.5)), ({'name': 'gaussian'}, rng.normal(size=(40, 8))), "
        "({'name': 'categorical', 'num_classes': 4}, rng.integers(0, 4, (40, 8))), "
        "({'name': 'continuous_bernoulli'}, rng.random((40, 8)))]; "
        "models = [(vaekit.build_model(vaekit.ModelSpec(data_shape=(8,), latent_dim=2, hidden=(8,), likelihood=s)), "
        "x.astype('float32')) for s, x in cases]; "
        "before = set(sys.modules); "
        "[fit(m, x, x[:10], TrainConfig(epochs=2, batch_size=20, progress=False)) for m, x in models]; "
        "print('torch._dynamo' in sys.modules, sorted(n for n in set(sys.modules) - before if n.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "False []"


def test_the_fused_adam_matches_torchs_bit_for_bit_and_loads_its_state():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(t.detach().clone()) for t in a]
    ours, theirs = (
        vaekit.adam.Adam(a, lr=0.01, weight_decay=0.1),
        torch.optim.Adam(b, lr=0.01, weight_decay=0.1, fused=True),
    )
    for _ in range(3):
        grads = [torch.randn_like(t) for t in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    mine, torchs = ours.state_dict(), theirs.state_dict()
    assert mine["param_groups"][0].keys() == torchs["param_groups"][0].keys()
    for i in torchs["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(mine["state"][i][k], torchs["state"][i][k]), (i, k)
    again = vaekit.adam.Adam([torch.nn.Parameter(t.detach().clone()) for t in a], lr=0.001)
    again.load_state_dict(torchs)
    assert again.param_groups[0]["lr"] == 0.001  # the lr given now, not the saved one
    assert all(torch.equal(m, t) for m, t in zip(again.exp_avg_sq, [torchs["state"][i]["exp_avg_sq"] for i in (0, 1)]))


@torch.no_grad()
def _plain_log_marginal(model, x, noise, batch=7):
    """log p(x) by importance sampling, written out independently of vaekit's objectives."""
    k, out = noise.shape[0], []
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch].double()
        loc, log_scale = model.encoder(xb.float()).double().chunk(2, -1)
        z = loc + log_scale.exp() * noise.double().unsqueeze(1)  # (k, B, H)
        logits = model.decoder(z.float().reshape(-1, z.shape[-1])).double().reshape(k, xb.shape[0], -1)
        log_px_z = (xb * logits - torch.nn.functional.softplus(logits)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_qz = (-0.5 * ((z - loc) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
        out.append(torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(k))
    return torch.cat(out)


def test_log_marginal_values_match_a_plain_batched_loop(data):
    model = _model(3)
    x = torch.as_tensor(data[:30])
    noise = torch.randn(200, model.latent_dim, generator=torch.Generator().manual_seed(4))
    fast = vaekit.log_marginal(model, x, k=200, noise=noise, max_elements=2**14)  # several batches and chunks
    reference = _plain_log_marginal(model, x, noise)
    assert torch.allclose(fast.log_px.double(), reference, rtol=1e-6, atol=0)


def test_cli_resume_may_lower_the_learning_rate(tmp_path, monkeypatch):
    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    common = ["--no-progress", "--no-figures"]
    assert (
        main(["train", "--data", "sine", "--hidden", "8", "--epochs", "2", "--out", "r", "--threads", "1", *common])
        == 0
    )
    assert main(["train", "--resume", "r", "--epochs", "3", "--lr", "1e-4", *common]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["lr"] == 1e-4
    assert len((tmp_path / "r" / "history.jsonl").read_text().splitlines()) == 3
