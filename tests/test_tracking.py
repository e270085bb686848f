"""Experiment tracking read back with the real libraries: TensorBoard's EventAccumulator and
MLflow's MlflowClient on a local file store, compared with history.jsonl."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaekit import cli, tracking
from vaekit.spec import ModelSpec, build_model
from vaekit.train import TrainConfig, fit

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]


def _events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _assert_scalars_match(acc, history):
    columns = [k for k in history[0] if k != "epoch"]
    assert set(columns) <= set(acc.Tags()["scalars"])
    for key in columns:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [row["epoch"] for row in history]
        np.testing.assert_allclose([e.value for e in events], [row[key] for row in history], rtol=1e-6)  # float32


def test_train_log_tensorboard_writes_history_figures_and_hparams(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                "sine",
                "--epochs",
                "3",
                "--hidden",
                "8",
                "--latent-dim",
                "1",
                "--out",
                str(run),
                "--log",
                "tensorboard",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "TensorBoard events in" in capsys.readouterr().out
    acc = _events(run / "tensorboard")
    history = _history(run)
    assert len(history) == 3
    _assert_scalars_match(acc, history)
    figures = sorted(p.stem for p in (run / "figures").glob("*.png"))
    assert figures and sorted(t.split("/", 1)[1] for t in acc.Tags()["images"]) == figures
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.epochs"].number_value == 3
    assert hparams["model.latent_dim"].number_value == 1
    assert hparams["data.source"].string_value == "sine"


def test_train_log_mlflow_logs_params_metrics_and_the_run_folder(tmp_path, capsys):
    run, store = tmp_path / "run", tmp_path / "mlruns"
    assert (
        cli.main(
            [
                "train",
                "--data",
                "sine",
                "--epochs",
                "2",
                "--hidden",
                "8",
                "--latent-dim",
                "1",
                "--out",
                str(run),
                "--log",
                "mlflow",
                "--log-uri",
                str(store),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    run_id = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.params["train.epochs"] == "2" and logged.data.params["model.latent_dim"] == "1"
    history = _history(run)
    for key in (k for k in history[0] if k != "epoch"):
        values = client.get_metric_history(run_id, key)
        assert sorted((m.step, m.value) for m in values) == [(row["epoch"], row[key]) for row in history]
    metrics = json.loads((run / "metrics.json").read_text())
    assert logged.data.metrics["final/val_elbo"] == pytest.approx(metrics["val"]["elbo"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "run")}
    assert {"run/history.jsonl", "run/config.json", "run/model.safetensors", "run/figures"} <= artifacts


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_train_log_logs_each_epoch_as_it_ends_and_a_resume_continues_it(kind, tmp_path, monkeypatch, capsys):
    """vaekit train --log: the tracker is a fit callback of the run, so after epoch e (checkpoint
    written) the events of epochs 1..e are already in the tracker; a resumed run logs the earlier
    epochs once and then its own as they end. Read back with TensorBoard's and MLflow's own readers."""
    from vaekit.runs import pipeline

    run, store = tmp_path / "run", tmp_path / "mlruns"
    live = []
    real_fit = pipeline.fit

    def fit_with_probe(*args, callbacks=(), **kwargs):
        def probe(model, state):  # runs after the run's own callbacks: checkpoint, then the tracker
            logger = callbacks[-1]
            if isinstance(logger, tracking.TensorBoard):
                logger.writer.flush()
                live.append(sorted(e.step for e in _events(run / "tensorboard").Scalars("train_elbo")))
            else:
                live.append(sorted(m.step for m in logger.client.get_metric_history(logger.run_id, "train_elbo")))

        return real_fit(*args, callbacks=[*callbacks, probe], **kwargs)

    monkeypatch.setattr(pipeline, "fit", fit_with_probe)
    common = ["--log", kind, "--no-progress", "--no-figures"] + (["--log-uri", str(store)] if kind == "mlflow" else [])
    args = ["train", "--data", "sine", "--epochs", "2", "--hidden", "8", "--latent-dim", "1", "--out", str(run)]
    assert cli.main(args + common) == 0
    assert live == [[1], [1, 2]]
    live.clear()
    assert cli.main(["train", "--resume", str(run), "--epochs", "3"] + common) == 0
    assert live == [[1, 2, 3]]
    history = _history(run)
    assert len(history) == 3
    out = capsys.readouterr().out
    if kind == "tensorboard":  # a second events file in the folder: it replaces the first one's epochs
        assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
        _assert_scalars_match(_events(run / "tensorboard"), history)
    else:
        run_id = out.rsplit("MLflow run ", 1)[1].split()[0]
        client = MlflowClient(tracking_uri=store.resolve().as_uri())
        values = client.get_metric_history(run_id, "train_elbo")
        assert sorted((m.step, m.value) for m in values) == [(r["epoch"], r["train_elbo"]) for r in history]


def test_fit_callbacks_log_every_epoch_as_it_ends(tmp_path):
    x = torch.randn(64, 3)
    spec = ModelSpec(data_shape=(3,), latent_dim=1, hidden=(8,))
    torch.manual_seed(0)
    model = build_model(spec)
    board = tracking.TensorBoard(tmp_path / "tb")
    flow = tracking.MLflow(tmp_path / "store", experiment="unit")
    seen = []
    history = fit(
        model,
        x,
        x[:16],
        TrainConfig(epochs=3, batch_size=32, progress=False),
        callbacks=[board, flow, lambda m, state: seen.append(len(state.history))],
    ).history
    board.finish(params={"lr": 1e-3, "hidden": (8,)})
    flow.finish(params={"lr": 1e-3})
    assert seen == [1, 2, 3]
    rows = [dict(r) for r in history]
    _assert_scalars_match(_events(tmp_path / "tb"), rows)
    client = MlflowClient(tracking_uri=(tmp_path / "store").resolve().as_uri())
    got = client.get_metric_history(flow.run_id, "val_elbo")
    assert sorted((m.step, m.value) for m in got) == [(r["epoch"], r["val_elbo"]) for r in rows]
    assert client.get_run(flow.run_id).data.params == {"lr": "0.001"}


def test_estimator_log_option(tmp_path):
    from sklearn.base import clone

    from vaekit import VAE

    X = np.random.default_rng(0).normal(size=(80, 3))
    board = tracking.TensorBoard(tmp_path / "tb")
    vae = VAE(latent_dim=1, hidden=(8,), epochs=2, random_state=0, log=board).fit(X)
    _assert_scalars_match(_events(tmp_path / "tb"), [dict(r) for r in vae.history_])
    assert clone(vae).get_params()["log"].log_dir == board.log_dir
    with pytest.raises(TypeError, match="log takes"):
        VAE(epochs=1, log=3).fit(X)


def test_bad_tracking_arguments_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--data", "sine", "--epochs", "1", "--log-uri", "x", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--log-uri applies to" in err[0]
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="unknown tracker"):
        tracking.create("wandb")
    assert tracking.scalars({"epoch": 2, "a": 1, "b": math.nan, "flag": True, "name": "x"}).keys() == {"a", "b"}
