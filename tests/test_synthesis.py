"""``vaekit synthesize``: synthetic rows with the original columns, dtypes, categories and
missing-value rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vaekit import cli, runs
from vaekit.synthesis import draw_rows, missing_patterns, synthesize

RATES = {"height": 0.25, "rooms": 0.1, "colour": 0.3, "smoker": 0.0, "ratio": 0.05}


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "height": 170 + 10 * z + rng.normal(size=n),
            "rooms": np.clip(np.round(3 + z), 0, None).astype(int),
            "colour": np.where(z > 0.5, "red", np.where(z < -0.5, "blue", "green")),
            "smoker": np.where(z + rng.normal(size=n) > 0, "yes", "no"),
            "ratio": rng.random(n),
            "count": rng.integers(0, 50, size=n),  # an integer column without gaps
        }
    )
    for col, rate in RATES.items():
        if rate:
            frame.loc[rng.random(n) < rate, col] = None
    return frame


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    path = root / "people.csv"
    _table().to_csv(path, index=False)
    run = root / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(path),
                "--epochs",
                "3",
                "--latent-dim",
                "2",
                "--hidden",
                "16",
                "--out",
                str(run),
                "--no-figures",
                "--no-progress",
            ]
        )
        == 0
    )
    return run, path


def test_synthetic_rows_keep_columns_dtypes_categories_and_missing_rates(table_run, tmp_path):
    run, path = table_run
    n = 3000
    out = tmp_path / "synth.csv"
    assert cli.main(["synthesize", str(run), "-n", str(n), "-o", str(out)]) == 0
    original, synth = pd.read_csv(path), pd.read_csv(out)
    train = runs.open_run(run).data("train").frame  # the rows whose missingness patterns are drawn
    assert len(synth) == n
    assert list(synth.columns) == list(original.columns)
    assert dict(synth.dtypes) == dict(original.dtypes)
    assert set(synth["colour"].dropna()) == {"red", "green", "blue"}
    assert set(synth["smoker"].dropna()) == {"yes", "no"}
    assert (synth["rooms"].dropna() == np.round(synth["rooms"].dropna())).all()
    for col in original.columns:
        p = train[col].isna().mean()
        rate = synth[col].isna().mean()
        # training-row rate p, n draws with replacement: binomial standard error
        assert abs(rate - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (col, rate, p)
    assert synth["smoker"].isna().sum() == 0 and synth["count"].isna().sum() == 0
    # draws, not decoded means: a numeric column keeps most of its spread
    assert synth["height"].std() > 0.5 * original["height"].std()


def test_no_missing_gives_complete_rows_and_seeds_repeat(table_run, tmp_path):
    run, _ = table_run
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for p in (a, b):
        assert cli.main(["synthesize", str(run), "-n", "50", "--no-missing", "--seed", "4", "-o", str(p)]) == 0
    assert a.read_text() == b.read_text()
    assert pd.read_csv(a).notna().all().all()


def test_missing_patterns_are_whole_training_rows(table_run):
    run, _ = table_run
    opened = runs.open_run(run)
    train = opened.data("train")
    patterns = missing_patterns(opened.schema, train.frame)
    table = synthesize(opened.model, opened.schema, 400, patterns=patterns, seed=0)
    seen = {tuple(r) for r in patterns}
    assert {tuple(r) for r in table[[c["name"] for c in opened.schema.columns]].isna().to_numpy()} <= seen


def test_bad_requests_are_refused(table_run, tmp_path, capsys):
    run, _ = table_run
    assert cli.main(["synthesize", str(run), "-n", "5", "-o", str(tmp_path / "x.npy")]) == 2
    assert "must end in .csv or .tsv" in capsys.readouterr().err
    opened = runs.open_run(run)
    with pytest.raises(ValueError, match="whole number"):
        draw_rows(opened.model, 0)
    sine = tmp_path / "sine"
    assert (
        cli.main(["train", "--data", "sine", "--epochs", "1", "--out", str(sine), "--no-figures", "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert cli.main(["synthesize", str(sine), "-n", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vaekit sample" in err[0]


def test_a_label_conditioned_run_synthesizes_rows_of_a_class(tmp_path, capsys):
    """A table run trained with --condition label: --condition K draws every row of class K (x ~
    p(x|z, c=K)) and writes K in the label column; without it each row's class is drawn from the
    training labels (their frequencies kept); a class out of range, or --condition on a run without
    labels, is refused in one line."""
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.3).astype(int)  # 30 % of class 1
    frame = pd.DataFrame({"a": 4.0 * y - 2 + rng.normal(size=n), "b": rng.normal(size=n), "y": y})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    run = tmp_path / "run"
    argv = ["train", "--data", str(path), "--label-column", "y", "--condition", "label", "--epochs", "30"]
    assert (
        cli.main([*argv, "--latent-dim", "2", "--out", str(run), "--no-figures", "--no-progress", "--seed", "0"]) == 0
    )
    means = {}
    for k in (0, 1):
        out = tmp_path / f"s{k}.csv"
        assert cli.main(["synthesize", str(run), "-n", "300", "--condition", str(k), "-o", str(out)]) == 0
        rows = pd.read_csv(out)
        assert list(rows.columns) == ["a", "b", "y"] and (rows["y"] == k).all()
        means[k] = rows["a"].mean()
    assert means[0] < -1 and means[1] > 1  # each class's shift of a, learned through c
    mixed = tmp_path / "mixed.csv"
    assert cli.main(["synthesize", str(run), "-n", "2000", "-o", str(mixed)]) == 0
    drawn = pd.read_csv(mixed)
    assert abs(drawn["y"].mean() - np.mean(runs.open_run(run).data("train").labels)) < 0.05
    assert "classes drawn from the training rows' labels" in capsys.readouterr().out
    assert cli.main(["synthesize", str(run), "-n", "5", "--condition", "2"]) == 2
    assert "out of range" in capsys.readouterr().err
    plain = tmp_path / "plain"
    train_plain = ["train", "--data", str(path), "--epochs", "1", "--out", str(plain), "--no-figures", "--no-progress"]
    assert cli.main(train_plain) == 0
    capsys.readouterr()
    assert cli.main(["synthesize", str(plain), "-n", "5", "--condition", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--condition label" in err[0]
