"""RunFolder: the one place run folders are created, locked, written and read."""

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import vaekit
from vaekit import runs
from vaekit.cli import main
from vaekit.config import RunConfig
from vaekit.estimator import VAE
from vaekit.runs import RunFolder, RunFolderBusy
from vaekit.runs import folder as folder_module

TINY = ["--data", "sine", "--hidden", "8", "--batch-size", "64", "--no-progress", "--no-figures"]


def test_create_is_exclusive_among_threads(tmp_path):
    target = tmp_path / "out"
    won, refused = [], []
    barrier = threading.Barrier(8)

    def claim():
        barrier.wait()
        try:
            won.append(RunFolder.create(target))
        except ValueError as err:  # RunFolderBusy (a CheckpointError) or "exists and is not empty"
            refused.append(str(err))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert all("in use by another vaekit process" in m or "exists and is not empty" in m for m in refused)
    assert won[0].lock_path.is_file()
    won[0].release()
    assert not won[0].lock_path.exists()


def test_two_concurrent_train_processes_on_one_out(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "vaekit", "train", *TINY, "--epochs", "3", "--out", str(out)]
    procs = [
        subprocess.Popen(
            cmd + ["--latent-dim", str(k)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k in (1, 2)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = [r[0] for r in results]
    assert sorted(codes) == [0, 2], results
    winner = codes.index(0) + 1  # its latent_dim
    loser_err = results[codes.index(2)][2].strip()
    assert "\n" not in loser_err and (
        "in use by another vaekit process" in loser_err or "exists and is not empty" in loser_err
    ), loser_err
    # the winner's folder is all the winner's: settings, weights and history agree
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent_dim"] == winner
    assert vaekit.load(out).latent_dim == winner
    assert len((out / "history.jsonl").read_text().splitlines()) == 3
    assert not (out / folder_module.LOCK_FILE).exists()  # released at the end


def test_auto_named_folders_take_a_suffix(tmp_path, monkeypatch):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(folder_module._dt, "datetime", Frozen)
    made = [RunFolder.create(None, name="sine", root=tmp_path) for _ in range(3)]
    assert [f.path.name for f in made] == ["sine-20260102-030405", "sine-20260102-030405-2", "sine-20260102-030405-3"]
    for f in made:
        f.release()


def test_resume_holds_the_lock_and_takes_over_a_stale_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--epochs", "2", "--latent-dim", "1", "--out", "r"]) == 0
    folder = RunFolder.open(tmp_path / "r")
    folder.acquire()  # another live writer (this process) holds the folder
    try:
        assert main(["train", "--resume", "r", "--epochs", "3", "--no-progress", "--no-figures"]) == 2
        err = capsys.readouterr().err.strip()
        assert "in use by another vaekit process" in err and f"pid {os.getpid()}" in err and "\n" not in err
        assert len(folder.read_history()) == 2  # nothing changed
    finally:
        folder.release()
    # a lock left by a process that is gone (kill -9) does not block a resume
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    folder.lock_path.write_text(f"{dead.pid} {socket.gethostname()}\n")
    seen = {}
    real_fit = runs.pipeline.fit

    def fit_and_look(*args, **kwargs):
        seen["locked"] = folder.lock_path.read_text().split()[0]
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runs.pipeline, "fit", fit_and_look)
    assert main(["train", "--resume", "r", "--epochs", "3", "--no-progress", "--no-figures"]) == 0
    assert seen["locked"] == str(os.getpid())  # the resume held the lock while it trained
    assert len(folder.read_history()) == 3 and not folder.lock_path.exists()


def test_estimator_save_and_load_go_through_run_folder(tmp_path):
    x = np.random.default_rng(0).normal(size=(80, 4))
    est = VAE(latent_dim=2, hidden=(8,), epochs=2, random_state=0, device="cpu").fit(x)
    path = est.save(tmp_path / "run")
    folder = RunFolder.open(path)
    raw = folder.read_config()
    assert {"format_version", "vaekit_version", "created", "estimator"} <= set(raw)
    assert raw["vaekit_version"] == vaekit.__version__
    config = folder.run_config()
    assert isinstance(config, RunConfig) and config.model == est.model_.spec and config.train.epochs == 2
    assert not folder.lock_path.exists()
    loaded = VAE.load(path)
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.transform(x), est.transform(x))
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(ValueError, match="exists and is not empty"):
        est.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # the refusal changed nothing


def test_metrics_sections_merge_and_config_reads_back_checked(tmp_path):
    folder = RunFolder.create(tmp_path / "m")
    with folder.lock():
        folder.write_config(RunConfig.from_settings({"data": "sine"}), {"name": "sine"})
        folder.write_metrics({"train": {"elbo": -1.0}})
        folder.merge_metrics("evaluate", {"log_px": -0.5})
        folder.merge_metrics("evaluate", {"log_px": -0.4})
    assert folder.read_metrics() == {"train": {"elbo": -1.0}, "evaluate": {"log_px": -0.4}}
    assert folder.run_config().data.source == "sine"
    # a config.json with an unknown key is refused by name
    raw = folder.read_config()
    raw["train"]["epoch"] = 3
    from vaekit import checkpoint

    checkpoint.write_json(folder.config_path, raw)  # re-checksummed, so only the key is wrong
    with pytest.raises(vaekit.CheckpointError, match="unknown setting 'epoch'"):
        folder.run_config()
    with pytest.raises(RunFolderBusy):
        with folder.lock():
            RunFolder(folder.path).acquire()
