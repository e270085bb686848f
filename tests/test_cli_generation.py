"""vaekit sample / reconstruct / encode / interpolate / traverse / plot / report, and the figures
and report that vaekit train leaves."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm
from trained_runs import trained_run

from vaekit import runs
from vaekit.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture
def digits2(root, tmp_path):
    """A private copy of the binary-digits run (2-D latent), so default outputs land in tmp_path."""
    path = tmp_path / "digits2"
    shutil.copytree(trained_run("digits2", root), path)
    return path


@pytest.fixture
def sine(root, tmp_path):
    path = tmp_path / "sine"
    shutil.copytree(trained_run("sine", root), path)
    return path


def picture(path):
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert img.std() > 10 and img.shape[0] > 100 and img.shape[1] > 100
    return img


def test_sample_means_rounded_and_drawn(digits2, capsys):
    assert main(["sample", str(digits2), "-n", "12", "--seed", "3"]) == 0
    means = np.load(digits2 / "samples.npy")
    assert means.shape == (12, 64) and means.dtype == np.float32
    assert 0 <= means.min() and means.max() <= 1 and len(np.unique(means)) > 100  # probabilities
    picture(digits2 / "samples.png")
    assert "wrote 12 samples (decoded means)" in capsys.readouterr().out
    # the same seed draws the same z: rounding gives exactly the means rounded
    assert (
        main(["sample", str(digits2), "-n", "12", "--seed", "3", "--round", "-o", str(digits2 / "r.npy"), "--no-png"])
        == 0
    )
    np.testing.assert_array_equal(np.load(digits2 / "r.npy"), (means >= 0.5).astype(np.float32))
    assert (
        main(["sample", str(digits2), "-n", "500", "--seed", "3", "--draw", "-o", str(digits2 / "d.npy"), "--no-png"])
        == 0
    )
    draws = np.load(digits2 / "d.npy")
    assert set(np.unique(draws)) <= {0.0, 1.0}
    # draws from p(x|z) average, over many z, to about the average decoded mean
    model = runs.open_run(digits2).model
    torch.manual_seed(0)
    expected = model.sample(4000).mean(0).numpy()
    assert np.abs(draws.mean(0) - expected).max() < 0.12


def test_sample_on_2d_data_draws_over_the_data(sine):
    assert main(["sample", str(sine), "-n", "50", "--png", str(sine / "s.png")]) == 0
    assert np.load(sine / "samples.npy").shape == (50, 2)
    picture(sine / "s.png")


def test_reconstruct_pairs_originals_and_reconstructions(digits2, capsys):
    assert main(["reconstruct", str(digits2), "-n", "20", "--mean-z"]) == 0
    saved = np.load(digits2 / "reconstructions.npz")
    test = runs.open_run(digits2).data("test").x[:20]
    np.testing.assert_array_equal(saved["original"], test)
    model = runs.open_run(digits2).model
    expected = model.decode(model.encode(torch.as_tensor(test))).numpy()
    np.testing.assert_allclose(saved["reconstruction"], expected, rtol=1e-5, atol=1e-6)
    img = picture(digits2 / "reconstructions.png")
    assert img.shape[1] > img.shape[0]  # originals and reconstructions side by side
    assert "reconstructed 20 examples" in capsys.readouterr().out
    # other data, a plain .npy, draws of z: two calls differ, the same seed repeats
    np.save(digits2 / "mine.npy", test[:5])
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert (
            main(
                [
                    "reconstruct",
                    str(digits2),
                    "--data",
                    str(digits2 / "mine.npy"),
                    "-o",
                    str(digits2 / f"{name}.npy"),
                    "--seed",
                    seed,
                    "--no-png",
                ]
            )
            == 0
        )
    a, b, c = (np.load(digits2 / f"{n}.npy") for n in "abc")
    assert a.shape == (5, 64) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_encode_means_and_scales(digits2, capsys):
    out = digits2 / "z.npy"
    assert main(["encode", str(digits2), "--split", "train", "-o", str(out), "--scales"]) == 0
    z, s = np.load(out), np.load(digits2 / "z_scale.npy")
    run = runs.open_run(digits2)
    x = torch.as_tensor(run.data("train").x)
    mean, scale = run.model.encode(x, return_scale=True)
    np.testing.assert_allclose(z, mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, scale.numpy(), rtol=1e-5)
    assert z.shape == (len(x), 2) and (s > 0).all()
    assert main(["encode", str(digits2), "-o", str(digits2 / "z.npz"), "--scales"]) == 0
    with np.load(digits2 / "z.npz") as f:
        assert set(f.files) == {"mean", "scale"} and f["mean"].shape == (len(run.data("test")), 2)


def test_interpolate_and_traverse(digits2):
    run = runs.open_run(digits2)
    x = run.data("test").x
    assert main(["interpolate", str(digits2), "--pair", "0", "5", "--pair", "2", "3", "--steps", "6"]) == 0
    path = np.load(digits2 / "interpolation.npy")
    assert path.shape == (2, 6, 64)
    z0, z5 = (run.model.encode(torch.as_tensor(x[[i]])) for i in (0, 5))
    np.testing.assert_allclose(path[0, 0], run.model.decode(z0)[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path[0, -1], run.model.decode(z5)[0].numpy(), rtol=1e-5, atol=1e-6)
    picture(digits2 / "interpolation.png")

    assert main(["traverse", str(digits2), "--units", "2", "--steps", "5", "--range", "0.1,0.9"]) == 0  # z2: index 1
    walk = np.load(digits2 / "traversal.npy")
    assert walk.shape == (1, 5, 64)
    z = np.zeros((5, 2), dtype=np.float32)
    z[:, 1] = norm.ppf(np.linspace(0.1, 0.9, 5))
    np.testing.assert_allclose(walk[0], run.model.decode(torch.as_tensor(z)).numpy(), rtol=1e-5, atol=1e-6)
    picture(digits2 / "traversal.png")
    assert main(["traverse", str(digits2), "--example", "4", "-o", str(digits2 / "t.npy"), "--no-png"]) == 0
    start = run.model.encode(torch.as_tensor(x[[4]]))[0]
    walk = np.load(digits2 / "t.npy")
    assert walk.shape == (2, 9, 64)
    z = start.repeat(9, 1)
    z[:, 0] = torch.as_tensor(norm.ppf(np.linspace(0.05, 0.95, 9)), dtype=torch.float32)
    np.testing.assert_allclose(walk[0], run.model.decode(z).numpy(), rtol=1e-5, atol=1e-5)


def test_plot_writes_the_figures_and_report_writes_the_page(digits2, capsys):
    assert main(["plot", str(digits2)]) == 0
    names = sorted(p.name for p in (digits2 / "figures").iterdir())
    assert names == sorted(
        f"{n}.png"
        for n in [
            "curves",
            "samples",
            "reconstructions",
            "manifold",
            "latent",
            "kl_units",
            "traversal",
            "interpolation",
        ]
    )
    for p in (digits2 / "figures").iterdir():
        picture(p)
    shutil.rmtree(digits2 / "figures")
    assert main(["plot", str(digits2), "manifold", "curves"]) == 0
    assert sorted(p.name for p in (digits2 / "figures").iterdir()) == ["curves.png", "manifold.png"]
    capsys.readouterr()
    assert main(["plot", str(digits2), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "overview" in listing and "not for this run: it needs 2-D data" in listing
    assert main(["report", str(digits2)]) == 0
    text = (digits2 / "report.html").read_text()
    assert text.count("<img ") == 8 and "data:image/png;base64," in text


@pytest.mark.parametrize(
    "argv,match",
    [
        (["sample", "RUN", "-o", "x.txt"], "must end in .npy"),
        (["sample", "RUN", "-o", "nowhere/x.npy"], "does not exist; create it first"),
        (["sample", "nothing-here"], "not a vaekit run folder"),
        (["reconstruct", "RUN", "--data", "pinwheel"], "shape (2,) per example, but this run's model takes (64,)"),
        (["reconstruct", "RUN", "--data", "grey.npy"], "needs values in [0, 1]"),
        (["interpolate", "RUN", "--pair", "0", "9999"], "example index 9999 is out of range"),
        (["traverse", "RUN", "--units", "1,7"], "unit(s) [7] out of range: this model has units 1..2"),
        (["traverse", "RUN", "--units", "0,1"], "counted from 1"),
        (["traverse", "RUN", "--split", "train"], "give --example I as well"),
        (["plot", "RUN", "overview"], "cannot draw 'overview' for this run: it needs 2-D data"),
        (["plot", "RUN", "pretty"], "unknown figure 'pretty'"),
        (["report", "RUN", "-o", "r.pdf"], "must end in .html"),
        (["encode", "RUN", "-o", "z.csv"], "must end in .npy or .npz"),
        (["sample", "RUN", "-n", "1000000000000"], "sample -n 1000000000000 needs about"),
    ],
)
def test_refusals_are_one_line_exit_2_and_write_nothing(digits2, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(digits2)
    np.save(digits2 / "grey.npy", np.full((3, 64), 16.0, dtype=np.float32))  # grey levels, not binary
    before = sorted(p.name for p in digits2.rglob("*"))
    argv = [str(digits2) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in digits2.rglob("*")) == before


def test_round_refused_for_a_likelihood_without_a_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "u.npy", np.random.default_rng(0).uniform(0.05, 0.95, (60, 3)).astype(np.float32))
    assert (
        main(
            [
                "train",
                "--data",
                "u.npy",
                "--epochs",
                "1",
                "--latent-dim",
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
    )
    assert not (tmp_path / "r" / "figures").exists() and not (tmp_path / "r" / "report.html").exists()
    assert main(["sample", "r", "--round"]) == 2
    assert "continuous_bernoulli likelihood has no most probable value" in capsys.readouterr().err
    assert not (tmp_path / "r" / "samples.npy").exists()


def test_train_leaves_figures_and_a_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--data",
                "pinwheel",
                "--epochs",
                "2",
                "--latent-dim",
                "2",
                "--hidden",
                "16",
                "--out",
                "p",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "figures and report: p/report.html" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "p" / "figures").iterdir()}
    assert names == {"curves.png", "overview.png", "manifold.png", "kl_units.png", "traversal.png", "interpolation.png"}
    text = (tmp_path / "p" / "report.html").read_text()
    assert text.count("<img ") == 6 and "pinwheel" in text
