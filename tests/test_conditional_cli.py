"""The conditional VAE from the command line, the estimator and the figures: ``vaekit train
--condition label``, ``sample --condition K``, ``reconstruct --as-condition K``, evaluate and score
given the labels, ``vaekit.VAE(condition="y")``, checkpoints and save/load."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import vaekit
from vaekit import figures, generate, runs
from vaekit.cli import main

EPOCHS = 40


def _code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture(scope="module")
def digits_classifier():
    """A classifier of the real digits (raw pixel values 0..16, as the CLI's digits are)."""
    X, y = load_digits(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cvae") / "run"
    argv = ["train", "--data", "digits", "--condition", "label", "--epochs", str(EPOCHS), "--seed", "1"]
    assert main([*argv, "--out", str(out), "--no-progress", "--no-figures"]) == 0
    return out


def test_train_records_the_classes_and_conditions_on_the_labels(cvae_run):
    config = json.loads((cvae_run / "config.json").read_text())
    assert config["model"]["condition_dim"] == 10 and config["data"]["condition"] == "label"
    assert config["model"]["network"] == "mlp"
    assert runs.RunFolder(cvae_run).run_config().data.condition == "label"  # the strict reader takes it back
    run = runs.open_run(cvae_run)
    test = run.data("test")
    labels = torch.as_tensor(test.labels)
    x = torch.as_tensor(test.x)
    # the model uses c: under the true labels the test digits are far more likely than under wrong ones
    right = vaekit.evaluate(run.model, x, iw_samples=100, iwae_k=(), elbo_samples=2, c=labels)
    wrong = vaekit.evaluate(run.model, x, iw_samples=100, iwae_k=(), elbo_samples=2, c=(labels + 3) % 10)
    assert right.log_px.mean > wrong.log_px.mean + 5
    assert "log p(x|c)" in right.log_px.estimator


def test_sampled_classes_are_recognised_by_a_classifier_of_real_digits(cvae_run, digits_classifier, tmp_path):
    hits = []
    for k in range(10):
        out = tmp_path / f"s{k}.npy"
        assert main(["sample", str(cvae_run), "--condition", str(k), "-n", "30", "-o", str(out), "--no-png"]) == 0
        x = np.load(out)
        assert x.shape == (30, 64)
        hits.append(np.mean(digits_classifier.predict(x) == k))
    assert np.mean(hits) > 0.6, hits  # chance is 0.1
    assert min(hits) > 0.2, hits


def test_sample_without_condition_gives_every_class_in_turn(cvae_run, digits_classifier, tmp_path, capsys):
    out = tmp_path / "all.npy"
    assert main(["sample", str(cvae_run), "-n", "64", "-o", str(out)]) == 0
    classes = np.load(tmp_path / "all_classes.npy")
    assert len(classes) == 64 and np.all(np.diff(classes) >= 0)
    assert set(np.bincount(classes, minlength=10)) == {6, 7}  # balanced: 64 = 4 x 7 + 6 x 6
    assert np.mean(digits_classifier.predict(np.load(out)) == classes) > 0.6
    assert "samples.png" in capsys.readouterr().out


def test_counterfactual_reconstruction_turns_digits_into_the_asked_class(cvae_run, digits_classifier, tmp_path):
    out = tmp_path / "rec.npz"
    assert main(["reconstruct", str(cvae_run), "--as-condition", "5", "--mean-z", "-o", str(out), "--no-png"]) == 0
    rec = np.load(out)["reconstruction"]
    assert np.mean(digits_classifier.predict(rec) == 5) > 0.6
    assert main(["reconstruct", str(cvae_run), "--mean-z", "-o", str(out), "--no-png"]) == 0  # under its own labels
    own = np.load(out)
    test_labels = runs.open_run(cvae_run).data("test").labels
    assert np.mean(digits_classifier.predict(own["reconstruction"]) == test_labels) > 0.6


def test_evaluate_and_score_are_given_the_labels(cvae_run, capsys):
    assert main(["evaluate", str(cvae_run), "--iw-samples", "50", "--iwae", "none", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "log p(x|c)" in out and "conditional run" in out
    # --gaps on a conditional run: tests/test_evaluate_variants.py
    assert main(["score", str(cvae_run), "--iw-samples", "20"]) == 0
    captured = capsys.readouterr()
    assert "log p(x|c)" in captured.err
    assert len(captured.out.strip().splitlines()) == 1 + 180  # a header and one row per test example


@pytest.mark.parametrize(
    "argv, words",
    [
        (["sample", "{run}", "--condition", "10", "-o", "{tmp}/x.npy"], "out of range"),
        (["sample", "{run}", "--condition", "-1", "-o", "{tmp}/x.npy"], "out of range"),
        (["reconstruct", "{run}", "--as-condition", "12", "-o", "{tmp}/x.npz"], "out of range"),
    ],
)
def test_refusals_on_a_conditional_run(cvae_run, argv, words, capsys, tmp_path):
    before = sorted(p.name for p in cvae_run.iterdir())
    assert _code([a.replace("{run}", str(cvae_run)).replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in cvae_run.iterdir()) == before and not list(tmp_path.iterdir())


def test_refusals_without_labels_or_on_an_unconditional_run(tmp_path, capsys):
    argv = ["train", "--data", "sine", "--condition", "label", "--epochs", "1", "--no-progress", "--no-figures"]
    assert _code([*argv, "--out", str(tmp_path / "nolabels")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no labels" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nolabels").exists()
    assert _code(["train", "--condition", "colour", "--out", str(tmp_path / "bad")]) == 2
    assert "condition" in capsys.readouterr().err
    assert _code(["train", "--conditional-prior", "--out", str(tmp_path / "bad")]) == 2
    assert "--condition label" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    plain = tmp_path / "plain"
    assert main(["train", "--data", "sine", "--epochs", "1", "--out", str(plain), "--no-progress", "--no-figures"]) == 0
    capsys.readouterr()
    for argv in (
        ["sample", str(plain), "--condition", "1", "-o", str(tmp_path / "o.npy")],
        ["reconstruct", str(plain), "--as-condition", "1", "-o", str(tmp_path / "o.npz")],
    ):
        assert _code([*argv, "--no-png"]) == 2
        assert "not" in capsys.readouterr().err


@pytest.mark.parametrize("prior", [False, True])
def test_conditional_resume_equals_an_uninterrupted_run(tmp_path, prior):
    settings = {"data": "digits", "condition": "label", "hidden": (32,), "seed": 3, "progress": False}
    settings["conditional_prior"] = prior  # True: a learned p(z|c), saved and resumed with the rest
    quiet = dict(log=lambda _: None)
    runs.train({**settings, "epochs": 3, "out": str(tmp_path / "a")}, **quiet)
    runs.train({**settings, "epochs": 1, "out": str(tmp_path / "b")}, **quiet)  # "stopped" after one epoch
    runs.resume(tmp_path / "b", epochs=3, **quiet)
    a, b = vaekit.load(tmp_path / "a"), vaekit.load(tmp_path / "b")
    assert a.condition_dim == b.condition_dim == 10
    assert b.spec.conditional_prior is prior
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_figures_of_a_conditional_run(cvae_run):
    run = runs.open_run(cvae_run)
    v = figures.view(run)
    chosen = figures.choose(v)
    # above two latent units the manifold is drawn on request; the traversal and interpolation by default
    assert {"samples", "traversal", "interpolation"} <= set(chosen) and "manifold" not in chosen
    pngs = figures.render(run, ["samples", "reconstructions", "kl_units", "manifold", "traversal", "interpolation"])
    assert all(png.startswith(b"\x89PNG") for png in pngs.values())
    # one panel per class for the most frequent few classes, one interpolation row per class
    for name in ("manifold", "traversal"):
        fig = figures.KINDS[name].make(v)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert len(titles) == figures.CLASS_PANELS and all(t.startswith("decoded under class ") for t in titles)
    fig = figures.KINDS["interpolation"].make(v)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert rows == [f"class {k}" for k in range(10)]


def test_estimator_conditions_on_y_and_round_trips(tmp_path, digits_classifier):
    X, y = load_digits(return_X_y=True)
    names = np.array(list("abcdefghij"))[y]  # any labels: the classes are sorted and indexed
    # a Gaussian likelihood: continuous-Bernoulli decoded means are poor digits whatever the condition
    est = vaekit.VAE(condition="y", epochs=40, hidden=(64,), likelihood="gaussian", random_state=0, device="cpu")
    est.fit(X / 16, names)
    assert list(est.classes_) == list("abcdefghij") and est.model_.condition_dim == 10
    samples = est.sample(40, y="d", random_state=1) * 16
    assert np.mean(digits_classifier.predict(samples) == 3) > 0.6
    per_row = est.sample(10, y=list("abcdefghij"), random_state=1) * 16
    assert np.mean(digits_classifier.predict(per_row) == np.arange(10)) > 0.5
    z = est.transform(X[:20] / 16, names[:20])
    assert z.shape == (20, est.latent_dim)
    right = est.score(X[:200] / 16, names[:200])
    wrong = est.score(X[:200] / 16, np.roll(names[:200], 1))
    assert right > wrong
    for call, words in (
        (lambda: est.transform(X[:3] / 16), "needs y"),
        (lambda: est.sample(2, y="z"), "not seen in fit"),
        (lambda: vaekit.VAE(condition="y", epochs=1).fit(X / 16), "fit\\(X, y\\)"),
        (lambda: vaekit.VAE(condition="label", epochs=1).fit(X / 16, y), "condition must be"),
        (lambda: vaekit.VAE(conditional_prior=True, epochs=1).fit(X / 16, y), "condition='y'"),
    ):
        with pytest.raises(ValueError, match=words):
            call()
    loaded = vaekit.VAE.load(est.save(tmp_path / "est"))
    assert loaded.get_params() == est.get_params() and list(loaded.classes_) == list(est.classes_)
    np.testing.assert_allclose(loaded.transform(X[:20] / 16, names[:20]), z, rtol=1e-5, atol=1e-6)


def test_unconditional_estimator_ignores_y():
    X, y = load_digits(return_X_y=True)
    a = vaekit.VAE(epochs=2, hidden=(16,), random_state=0, device="cpu").fit(X[:300] / 16, y[:300])
    b = vaekit.VAE(epochs=2, hidden=(16,), random_state=0, device="cpu").fit(X[:300] / 16)
    np.testing.assert_array_equal(a.transform(X[:10] / 16), b.transform(X[:10] / 16))
    with pytest.raises(ValueError, match="condition='y'"):
        a.sample(2, y=1)


def test_encode_and_traverse_use_the_condition(cvae_run, digits_classifier, tmp_path, capsys):
    run = runs.open_run(cvae_run)
    test = run.data("test")
    assert main(["encode", str(cvae_run), "-o", str(tmp_path / "z.npy")]) == 0
    z = np.load(tmp_path / "z.npy")
    own, _ = generate.encode(run.model, test.x, c=test.labels)
    other, _ = generate.encode(run.model, test.x, c=(test.labels + 1) % 10)
    np.testing.assert_allclose(z, own.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(z, other.numpy(), atol=1e-3)  # the encoder does see c
    assert "q(z|x, c)" in capsys.readouterr().out
    out = tmp_path / "t.npy"
    assert main(["traverse", str(cvae_run), "--condition", "6", "--units", "1,2", "-o", str(out), "--no-png"]) == 0
    x = np.load(out)
    assert x.shape == (2, 9, 64)
    assert np.mean(digits_classifier.predict(x.reshape(-1, 64)) == 6) > 0.6  # a traversal within class 6
    for argv, words in (
        (["traverse", str(cvae_run)], "give --condition"),
        (["traverse", str(cvae_run), "--condition", "10"], "out of range"),
        (["interpolate", str(cvae_run)], "not available for a conditional run"),
    ):
        assert _code([*argv, "--no-png", "-o", str(tmp_path / "never.npy")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never.npy").exists()
