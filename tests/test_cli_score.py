"""``vaekit score`` end to end."""

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vaekit import VAE
from vaekit.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    assert (
        main(
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
                "4",
                "--out",
                str(root / "run"),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return root / "run"


def _read(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def test_scores_the_test_split_with_all_three_scores(run_dir, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["score", str(run_dir), "--score", "all", "--iw-samples", "64", "-o", str(out), "--device", "cpu"]) == 0
    table = _read(out)
    assert list(table) == ["index", "log_px", "recon_log_px_z", "kl", "label"]
    n = len(table["index"])
    assert n == 180  # digits' test split (10 % of 1797)
    log_px, recon, kl = (table[k].astype(float) for k in ("log_px", "recon_log_px_z", "kl"))
    assert np.all(kl > 0) and np.all(recon < 0)
    # IWAE_64 >= ELBO = E[log p(x|z)] - KL, on average over examples
    assert log_px.mean() > (recon - kl).mean()
    # labels are digit classes: no AUROC without --anomaly-label, and a hint says so
    captured = capsys.readouterr()
    assert "--anomaly-label" in captured.err and "AUROC" not in captured.out


def test_auroc_and_average_precision_with_an_anomaly_label(run_dir, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert (
        main(
            [
                "score",
                str(run_dir),
                "--score",
                "all",
                "--iw-samples",
                "16",
                "--anomaly-label",
                "0",
                "--anomaly-label",
                "1",
                "-o",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    table = _read(out)
    y = np.isin(table["label"].astype(int), [0, 1]).astype(int)
    assert f"labels: {y.sum()} anomalies among {len(y)} examples" in printed
    for column, sign in (("log_px", -1), ("recon_log_px_z", -1), ("kl", 1)):
        s = sign * table[column].astype(float)
        expected = f"{column}: AUROC {roc_auc_score(y, s):.4f}, average precision {average_precision_score(y, s):.4f}"
        assert expected in printed


def test_labels_file_and_stdout(run_dir, tmp_path, capsys):
    import vaekit

    digits = vaekit.datasets.digits(binarize=True)
    np.save(tmp_path / "x.npy", digits.x[:60])
    labels = (digits.labels[:60] == 7).astype(int)
    np.savetxt(tmp_path / "y.txt", labels, fmt="%d")
    assert (
        main(
            [
                "score",
                str(run_dir),
                "--data",
                str(tmp_path / "x.npy"),
                "--labels",
                str(tmp_path / "y.txt"),
                "--iw-samples",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "index,log_px,label" and len(lines) == 61
    assert [int(line.split(",")[2]) for line in lines[1:]] == labels.tolist()
    assert "log_px: AUROC" in captured.err


def test_deterministic_for_a_seed(run_dir, tmp_path):
    a, b, c = (tmp_path / f"{n}.csv" for n in "abc")
    for path, seed in ((a, "1"), (b, "1"), (c, "2")):
        assert (
            main(["score", str(run_dir), "--iw-samples", "8", "--seed", seed, "-o", str(path), "--device", "cpu"]) == 0
        )
    assert a.read_text() == b.read_text() != c.read_text()


def test_a_run_saved_by_the_estimator(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    path = VAE(hidden=(8,), epochs=2, device="cpu", random_state=0).fit(x).save(tmp_path / "est")
    assert main(["score", str(path), "-o", str(tmp_path / "s.csv")]) == 2
    assert "in-memory arrays" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    np.save(tmp_path / "x.npy", x[:10].astype(np.float32))
    assert (
        main(
            ["score", str(path), "--data", str(tmp_path / "x.npy"), "--iw-samples", "4", "-o", str(tmp_path / "s.csv")]
        )
        == 0
    )
    assert len(_read(tmp_path / "s.csv")["log_px"]) == 10


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labels", "missing.npy"], "labels file missing.npy does not exist"),
        (["--anomaly-label", "11"], "--anomaly-label 11 does not occur"),
        (["--anomaly-label", "seven"], "--anomaly-label takes a number"),
        (["--data", "nowhere.npy"], "no data set or file named 'nowhere.npy'"),
        (["--data", "sine"], "shape (2,) per example"),
        (["--iw-samples", "100000000000"], "--iw-samples 100000000000 needs about"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["score", str(run_dir), "-o", "s.csv", "--iw-samples", "4", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s.csv").exists()


def test_label_problems_exit_2(run_dir, tmp_path, capsys):
    import vaekit

    x = vaekit.datasets.digits(binarize=True).x[:20]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "short.npy", np.zeros(5))
    np.save(tmp_path / "one_class.npy", np.zeros(20))
    np.save(tmp_path / "classes.npy", np.arange(20) % 3)
    cases = {
        "short.npy": "has 5 labels but the data have 20 examples",
        "one_class.npy": "the labels mark only normal examples",
        "classes.npy": "values other than 0/1; say which mark anomalies with --anomaly-label",
    }
    for name, message in cases.items():
        assert (
            main(
                [
                    "score",
                    str(run_dir),
                    "--data",
                    str(tmp_path / "x.npy"),
                    "--labels",
                    str(tmp_path / name),
                    "-o",
                    str(tmp_path / "s.csv"),
                ]
            )
            == 2
        )
        assert message in capsys.readouterr().err
    assert main(["score", str(run_dir), "--data", str(tmp_path / "x.npy"), "--anomaly-label", "1"]) == 2
    assert "--anomaly-label needs labels" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(run_dir), "--iw-samples", "0"])
    assert exit_info.value.code == 2


README_DATA = (
    "from sklearn.datasets import load_digits; import numpy as np; x, y = load_digits(return_X_y=True); "
    "np.savez('nonzero.npz', x=x[:1500][y[:1500] != 0], y=y[:1500][y[:1500] != 0]); "
    "np.savez('heldout.npz', x=x[1500:], y=y[1500:])"
)


def test_the_readme_anomaly_example_trains_without_zeros_and_finds_them(tmp_path, monkeypatch, capsys):
    """The README's example: train on digits 1-9, score held-out digits of every class with 0 as the
    anomaly. (The README trains with the default settings; fewer epochs here.) A run that had seen
    zeros in training scores them like the rest (AUROC 0.42 on the default digits run)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert README_DATA in readme
    assert "vaekit score runs/nonzero --data heldout.npz --anomaly-label 0" in readme
    monkeypatch.chdir(tmp_path)
    exec(README_DATA, {})  # noqa: S102 - the README line itself, as a user runs it
    assert (
        main(
            [
                "train",
                "--data",
                "nonzero.npz",
                "--out",
                "runs/nonzero",
                "--epochs",
                "4",
                "--hidden",
                "32",
                "--no-figures",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                "runs/nonzero",
                "--data",
                "heldout.npz",
                "--anomaly-label",
                "0",
                "--iw-samples",
                "50",
                "-o",
                "s.csv",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    table = _read(tmp_path / "s.csv")
    is_zero = (table["label"].astype(int) == 0).astype(int)
    assert is_zero.sum() == 27 and len(is_zero) == 297
    auroc = roc_auc_score(is_zero, -table["log_px"].astype(float))
    assert f"log_px: AUROC {auroc:.4f}" in printed
    assert auroc > 0.65
