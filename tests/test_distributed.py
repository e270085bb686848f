"""Data-parallel training: real 2-process runs under torchrun (gloo, CPU) and the pieces they use."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit import TrainConfig, checkpoint, distributed, fit, runs
from vaekit.errors import TrainingError
from vaekit.train import _rng_state, _set_rng_state, evaluate_elbo

HERE = Path(__file__).parent
SETTINGS = [
    "--data",
    "digits",
    "--binarize",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--epochs",
    "8",
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--seed",
    "0",
    "--no-progress",
]


def torchrun(args, cwd, nproc=2, env=None, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    proc = torchrun(["-m", "vaekit", "train", *SETTINGS], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folders = list((cwd / "runs").iterdir())
    return proc, folders


@pytest.mark.slow  # three Python processes start torch: about 10 s idle, 30 s on a busy 2-core machine
def test_torchrun_two_processes_one_run_identical_replicas_and_it_learns(two_process_run):
    proc, folders = two_process_run
    out = proc.stdout
    # rank 0 alone chose the folder, logged and wrote: one folder, one of each file, one log
    assert len(folders) == 1, folders
    run = folders[0]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [
            "config.json",
            "model.safetensors",
            "trainer.safetensors",
            "history.jsonl",
            "metrics.json",
            "figures",
            "report.html",
        ]
    )  # figures and report drawn once, by rank 0
    assert out.count("run folder:") == 1 and out.count("final ELBO") == 1
    history = checkpoint.read_history(run / "history.jsonl")
    assert [r["epoch"] for r in history] == list(range(1, 9))
    # every process checked its weights against the others; the digest is that of the saved model
    match = re.search(
        r"2 processes, batches of 32 each \(effective 64\); weights identical on all processes \(sha256 (\w+)\)", out
    )
    assert match, out
    model = vaekit.load(run)
    assert match.group(1) == distributed.state_digest(model)
    state = checkpoint.load_trainer(run / "trainer.safetensors", vaekit.load(run))
    assert state.epoch == 8 and state.rng["torch_per_rank"].shape[0] == 2
    assert not torch.equal(state.rng["torch_per_rank"][0], state.rng["torch_per_rank"][1])  # own noise per process
    # it learns: far above the untrained model on the validation split
    config = json.loads((run / "config.json").read_text())
    val = torch.as_tensor(runs.load_splits(config["data"])["val"].x)
    torch.manual_seed(0)
    untrained = vaekit.build_model(config["model"])
    before = evaluate_elbo(untrained, val, n_samples=10)["elbo"]
    after = json.loads((run / "metrics.json").read_text())["val"]["elbo"]
    assert after > before + 8, (before, after)


@pytest.mark.slow
def test_torchrun_killed_run_resumes_to_the_uninterrupted_result(two_process_run, tmp_path):
    _, folders = two_process_run
    reference = folders[0]
    out = tmp_path / "run"
    killed = torchrun(
        [str(HERE / "torchrun_kill.py"), "train", *SETTINGS, "--out", str(out)],
        tmp_path,
        env={"VAEKIT_TEST_KILL_AT": "3"},
    )
    assert killed.returncode != 0  # the processes were SIGKILLed
    # the last checkpoint before the crash: epoch 3's, or an earlier one where writing took more than its
    # share of the time (checkpoint.RunCheckpointer)
    saved = checkpoint.load_trainer(out / "trainer.safetensors", vaekit.load(out)).epoch
    assert 1 <= saved <= 3
    resumed = torchrun(["-m", "vaekit", "train", "--resume", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {out} from epoch {saved} of 8" in resumed.stdout
    # every process restored its own state: the continuation is bit-identical to never stopping
    a, b = vaekit.load(reference), vaekit.load(out)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    h_ref = checkpoint.read_history(reference / "history.jsonl")
    h_res = checkpoint.read_history(out / "history.jsonl")
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(h_res) == strip(h_ref)


@pytest.mark.slow
def test_one_and_two_processes_reach_the_same_quality(two_process_run, tmp_path):
    # the same settings and effective batch in one process, with two seeds for the noise level
    _, folders = two_process_run
    two = json.loads((folders[0] / "metrics.json").read_text())["val"]["elbo"]
    settings = dict(
        data="digits", binarize=True, hidden="32", latent_dim=4, epochs=8, batch_size=64, lr=3e-3, progress=False
    )
    one = [
        runs.train({**settings, "seed": s, "out": str(tmp_path / f"s{s}")}, log=lambda m: None).metrics["val"]["elbo"]
        for s in (0, 1)
    ]
    noise = abs(one[0] - one[1])
    assert abs(two - np.mean(one)) < max(3 * noise, 1.0), (two, one)


# -- the pieces, without launching processes ---------------------------------------------------
def test_fit_refuses_world_size_without_a_process_group(tiny_digits):
    train, _ = tiny_digits
    model = vaekit.build_model(
        vaekit.ModelSpec(data_shape=(64,), latent_dim=2, hidden=(8,), likelihood={"name": "bernoulli"})
    )
    with pytest.raises(ValueError, match="process group .*torchrun"):
        fit(model, train, config=TrainConfig(epochs=1, batch_size=64), rank=0, world_size=2)
    with pytest.raises(ValueError, match="batch_size 65 must be a multiple of the number of processes"):
        fit(model, train, config=TrainConfig(epochs=1, batch_size=65), rank=0, world_size=2)


def test_replica_check_fires_when_weights_differ(monkeypatch):
    model = torch.nn.Linear(3, 2)
    mine = distributed.state_digest(model)
    assert distributed.check_replicas(model) == mine  # alone: trivially identical
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: [obj, "0" * 64])
    with pytest.raises(TrainingError, match="different weights .*rank 1: 000000000000"):
        distributed.check_replicas(model)
    other = torch.nn.Linear(3, 2)
    assert distributed.state_digest(other) != mine
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
    assert distributed.state_digest(other) == mine


def test_env_context_reads_torchrun_variables(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.env_context() is None
    with distributed.launch() as ctx:  # no torchrun: nothing to join
        assert ctx == distributed.Context() and not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_context() == distributed.Context(rank=1, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 and WORLD_SIZE=4"):
        distributed.env_context()


def test_each_process_restores_its_own_rng_state():
    gen = torch.Generator()
    torch.manual_seed(1)
    s1 = torch.get_rng_state()
    torch.manual_seed(2)
    s2 = torch.get_rng_state()
    state = _rng_state(gen, torch.device("cpu"))
    state["torch_per_rank"] = torch.stack([s1, s2])
    _set_rng_state(state, gen, torch.device("cpu"), rank=1, world_size=2)
    assert torch.equal(torch.get_rng_state(), s2)
    _set_rng_state(state, gen, torch.device("cpu"), rank=0, world_size=2)
    assert torch.equal(torch.get_rng_state(), s1)
    # saved by 2 processes, resumed on 3: fresh states, reproducible and different per process
    _set_rng_state(state, gen, torch.device("cpu"), rank=2, world_size=3, seed=0, epoch=5)
    a = torch.get_rng_state()
    _set_rng_state(state, gen, torch.device("cpu"), rank=1, world_size=3, seed=0, epoch=5)
    b = torch.get_rng_state()
    _set_rng_state(state, gen, torch.device("cpu"), rank=2, world_size=3, seed=0, epoch=5)
    assert torch.equal(torch.get_rng_state(), a) and not torch.equal(a, b)
