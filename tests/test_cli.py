import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main


def exit_code(argv):
    """main's return value, or the code of the SystemExit that argparse-style usage errors raise."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _train(tmp_path, *extra):
    return main(
        [
            "train",
            "--data",
            "digits",
            "--binarize",
            "--epochs",
            "3",
            "--hidden",
            "32",
            "--latent-dim",
            "2",
            "--no-progress",
            "--no-figures",
            *extra,
        ]
    )


def test_train_end_to_end_writes_a_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    assert "final ELBO: train" in out and "nats" in out and "validation" in out
    (run,) = list((tmp_path / "runs").iterdir())
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "trainer.safetensors", "history.jsonl", "metrics.json"} <= names
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == {"name": "bernoulli"}
    assert config["train"]["epochs"] == 3 and config["data"]["sizes"]["test"] > 0
    history = [json.loads(row) for row in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["elbo"] < 0 and "Monte Carlo" in metrics["estimator"]
    model = vaekit.load(run)
    assert model.encode(torch.zeros(1, 64)).shape == (1, 2)


def test_auto_likelihood_on_grey_digits_is_categorical(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--out", "r", "--no-progress", "--no-figures"]) == 0
    assert "categorical(num_classes=17)" in capsys.readouterr().out


def test_config_file_and_flag_priority(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('data = "sine"\nlatent-dim = 1\nepochs = 5\nhidden = "16"\nscale = 1.0\n')
    assert main(["train", "--config", "c.toml", "--epochs", "2", "--out", "r", "--no-progress", "--no-figures"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["latent_dim"] == 1 and config["model"]["hidden"] == [16]
    assert config["train"]["epochs"] == 2  # the flag wins over the file
    assert config["model"]["likelihood"]["scale"] == 1.0


def test_same_seed_same_weights_and_resume_is_exact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--out", "a", "--seed", "5", "--epochs", "4") == 0
    assert _train(tmp_path, "--out", "b", "--seed", "5", "--epochs", "4") == 0
    # "killed" after 2 epochs, then resumed to 4
    assert _train(tmp_path, "--out", "c", "--seed", "5", "--epochs", "2") == 0
    assert main(["train", "--resume", "c", "--epochs", "4", "--no-progress", "--no-figures"]) == 0
    a, b, c = (vaekit.load(tmp_path / n) for n in "abc")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
        assert torch.equal(v, c.state_dict()[k]), k
    history = (tmp_path / "c" / "history.jsonl").read_text().splitlines()
    assert len(history) == 4


def test_kill_and_resume_a_real_process(tmp_path):
    """Kill a training process mid-run; --resume ends with the uninterrupted run's weights."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [
        sys.executable,
        "-m",
        "vaekit",
        "train",
        "--data",
        "sine",
        "--latent-dim",
        "1",
        "--hidden",
        "16",
        "--epochs",
        "60",
        "--batch-size",
        "32",
        "--no-progress",
        "--no-figures",
        "--seed",
        "2",
    ]
    subprocess.run(args + ["--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        args + ["--out", str(tmp_path / "killed")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    trainer = tmp_path / "killed" / "trainer.safetensors"
    import time

    deadline = time.time() + 60
    while not trainer.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    done = len((tmp_path / "killed" / "history.jsonl").read_text().splitlines())
    assert 0 < done < 60, done  # really interrupted
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaekit",
            "train",
            "--resume",
            str(tmp_path / "killed"),
            "--no-progress",
            "--no-figures",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    a, b = vaekit.load(tmp_path / "full"), vaekit.load(tmp_path / "killed")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--data", "nope"], "no data set or file named 'nope'"),
        (["train", "--hidden", "a,b"], "setting hidden='a,b' is not allowed: expected positive integers"),
        (["train", "--data", "pinwheel", "--likelihood", "bernoulli"], "Bernoulli likelihood needs data in"),
        (["train", "--likelihood", "bernoulli", "--scale", "0.5"], "setting scale applies to the Gaussian"),
        (["train", "--val-fraction", "0.6", "--test-fraction", "0.6"], "that sum below 1"),
        (["train", "--config", "missing.toml"], "does not exist"),
        (["train", "--resume", "nowhere"], "not a vaekit run folder"),
        (["train", "--resume", "x", "--batch-size", "32"], "cannot also change: --batch-size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert exit_code(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written on refusal


def test_bad_file_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "bad.npy", np.array([[1.0, 2.0], [3.0, np.nan]]))  # arrays have no "missing"; tables do
    assert main(["train", "--data", "bad.npy", "--out", "r"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_argparse_errors_exit_2_and_version(capsys):
    assert exit_code(["train", "--epochs", "many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs='many' is not allowed: expected an integer >= 1" in err
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and vaekit.__version__ in capsys.readouterr().out


def test_console_script_help_runs():
    r = subprocess.run([sys.executable, "-m", "vaekit", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--latent-dim" in r.stdout and "--warmup" in r.stdout


def test_closed_stdout_is_quiet_and_the_run_finishes(tmp_path):
    """``vaekit train ... | head -1``: the reader goes away after one line; the run still completes, exit 0."""
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaekit",
            "train",
            "--data",
            "sine",
            "--latent-dim",
            "1",
            "--hidden",
            "8",
            "--epochs",
            "3",
            "--no-progress",
            "--no-figures",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what head -1 does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert first.startswith(b"run folder:")
    assert "Broken pipe" not in err and "Traceback" not in err and "BrokenPipeError" not in err, err
    assert (out / "metrics.json").is_file() and len((out / "history.jsonl").read_text().splitlines()) == 3


def test_last_resort_handler_is_one_line_with_a_debug_hint(tmp_path, monkeypatch, capsys):
    import vaekit.runs

    def broken(*args, **kwargs):
        raise RuntimeError("something unexpected\nsecond line")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAEKIT_DEBUG", raising=False)
    monkeypatch.setattr(vaekit.runs, "train", broken)
    assert main(["train", "--data", "sine", "--no-figures"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "vaekit train: internal error: RuntimeError: something unexpected (rerun with --debug for the traceback)"
    )
    with pytest.raises(RuntimeError, match="something unexpected"):
        main(["--debug", "train", "--data", "sine", "--no-figures"])
    with pytest.raises(RuntimeError, match="something unexpected"):
        main(["train", "--data", "sine", "--no-figures", "--debug"])
    monkeypatch.setenv("VAEKIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something unexpected"):
        main(["train", "--data", "sine", "--no-figures"])


def test_a_table_trains_with_no_test_rows(tmp_path, monkeypatch, capsys):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=120), "b": rng.choice(["x", "y", "z"], 120)}).to_csv(
        tmp_path / "t.csv", index=False
    )
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--data",
                "t.csv",
                "--test-fraction",
                "0",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--out",
                "r",
                "--no-progress",
                "--no-figures",
            ]
        )
        == 0
    ), capsys.readouterr().err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["data"]["sizes"]["test"] == 0 and config["data"]["sizes"]["train"] == 108


def test_ctrl_c_says_what_is_kept_for_each_command(tmp_path, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt) ends a command with exit code 130 and one line: during training, that
    the last checkpoint is kept; while a finished run's figures are drawn, that the run is complete and
    how to draw them; in another command, only that it was interrupted."""
    from vaekit import report, runs, train

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", "digits", "--epochs", "2", "--hidden", "8", "--no-progress"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train, "_train_epoch", interrupt)
        assert main([*argv, "--out", "a"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vaekit train: interrupted; the last checkpoint is kept"), err
    with monkeypatch.context() as m:
        m.setattr(report, "write_all", interrupt)
        assert main([*argv, "--out", "b"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "vaekit train: interrupted while drawing; the run in b is complete "
        "(draw its figures and report with 'vaekit report b')"
    )
    assert runs.open_run("b").model is not None and not (tmp_path / "b" / "report.html").exists()
    with monkeypatch.context() as m:
        m.setattr(vaekit.evaluation, "evaluate", interrupt)
        assert main(["evaluate", "b"]) == 130
    assert capsys.readouterr().err.strip() == "vaekit evaluate: interrupted"
    assert main(["report", "b"]) == 0 and (tmp_path / "b" / "report.html").is_file()
