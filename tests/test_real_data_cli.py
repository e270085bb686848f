"""Real data through the command line: IDX files, PNG folders, CSV/Parquet tables and .npy files
are trained on with `vaekit train`, and the run's hooks (read_input, format_output, impute) give
back encodings, samples and reconstructions of the right shapes and columns. Bad input: one line,
exit code 2, nothing written."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vaekit import runs
from vaekit.cli import main
from vaekit.data import write_idx
from vaekit.data.images import save_image
from vaekit.errors import DataError
from vaekit.tabular import impute

TINY = [
    "--epochs",
    "2",
    "--hidden",
    "16",
    "--latent-dim",
    "2",
    "--batch-size",
    "16",
    "--no-progress",
    "--device",
    "cpu",
]


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_idx_files_train_a_conv_vae(tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (60, 9, 7)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 60).astype(np.uint8))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "train-images-idx3-ubyte.gz"),
                "--channels",
                "4,8",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    assert "network: conv" in capsys.readouterr().out
    config = _config(out)
    assert config["model"]["network"] == "conv" and config["model"]["channels"] == [4, 8]
    assert config["model"]["likelihood"]["name"] == "continuous_bernoulli" and config["model"]["data_shape"] == [
        1,
        9,
        7,
    ]
    run = runs.open_run(out)
    data = runs.read_input(run)  # the run's own test split, labels included
    assert data.x.shape[1:] == (1, 9, 7) and data.labels is not None
    z = run.model.encode(torch.as_tensor(data.x))
    assert z.shape == (len(data), 2)
    samples = runs.format_output(run, run.model.sample(5).numpy())
    assert samples.shape == (5, 1, 9, 7) and samples.min() >= 0 and samples.max() <= 1
    recon = run.model.reconstruct(torch.as_tensor(data.x))
    assert recon.shape == data.x.shape
    # the same kind of file, new images
    write_idx(tmp_path / "more-idx3-ubyte", rng.integers(0, 256, (4, 9, 7)).astype(np.uint8))
    assert runs.read_input(run, str(tmp_path / "more-idx3-ubyte")).x.shape == (4, 1, 9, 7)
    write_idx(tmp_path / "wrong-idx3-ubyte", rng.integers(0, 256, (4, 8, 8)).astype(np.uint8))
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\) per example, but this run's model takes \(1, 9, 7\)"):
        runs.read_input(run, str(tmp_path / "wrong-idx3-ubyte"))


def test_png_folder_with_classes_and_dynamic_binarisation(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("zero", "one"):
        (tmp_path / "pngs" / c).mkdir(parents=True)
        for i in range(12):
            save_image(tmp_path / "pngs" / c / f"{i}.png", rng.random((3, 10, 6)))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "pngs"),
                "--binarize",
                "dynamic",
                "--channels",
                "4",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    config = _config(out)
    assert config["model"]["likelihood"] == {"name": "bernoulli"} and config["train"]["dynamic_binarize"]
    assert config["data"]["dynamic_binarize"] and config["model"]["data_shape"] == [3, 10, 6]
    run = runs.open_run(out)
    val = run.data("val")
    assert set(np.unique(val.x)) <= {0.0, 1.0} and val.labels is not None  # drawn once, seeded
    np.testing.assert_array_equal(val.x, run.data("val").x)
    train = run.data("train")
    assert 0 < ((train.x > 0) & (train.x < 1)).mean()  # the training rows stay probabilities
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["elbo"]) and np.isfinite(metrics["val"]["elbo"])
    # new grey images are binarised the same way for the Bernoulli model
    new = runs.read_input(run, str(tmp_path / "pngs"))
    assert set(np.unique(new.x)) <= {0.0, 1.0} and new.x.shape == (24, 3, 10, 6)


def _table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "temp": 20 + 5 * z + rng.normal(size=n),
            "rain": np.where(z + rng.normal(size=n) > 0, "yes", "no"),
            "sky": np.array(["clear", "cloudy", "storm"])[np.clip((z + 1.5).astype(int), 0, 2)],
            "count": rng.poisson(3, n),
            "station": rng.choice(["A", "B"], n),
        }
    )
    frame.loc[rng.random(n) < 0.15, "temp"] = None
    frame.loc[rng.random(n) < 0.15, "sky"] = None
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_train_and_come_back_as_tables(tmp_path, capsys, suffix):
    path = tmp_path / f"weather{suffix}"
    frame = _table()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--label-column",
                "station",
                "--categorical",
                "count",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "per column" in printed and "temp" in printed and "network: table" in printed
    pre = json.loads((out / "preprocessing.json").read_text())
    assert [c["kind"] for c in pre["columns"]] == ["numeric", "binary", "categorical", "categorical"]
    assert pre["label_column"] == "station"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["columns"]["columns"]) == {"temp", "rain", "sky", "count"}
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0  # resumes with the saved schema
    assert len((out / "history.jsonl").read_text().splitlines()) == 3

    run = runs.open_run(out)
    new = _table(10, seed=5)
    new.loc[0, "sky"] = "hail"  # never seen in training: reported, treated as missing
    new.to_csv(tmp_path / "new.csv", index=False)
    notes = []
    data = runs.read_input(run, str(tmp_path / "new.csv"), log=notes.append)
    assert len(notes) == 1 and "'hail' (1x)" in notes[0] and "sky" in notes[0]
    assert data.labels is not None and len(data.labels) == 10
    z = run.model.encode(torch.as_tensor(data.x))
    assert z.shape == (10, 2) and torch.isfinite(z).all()
    filled = runs.format_output(run, impute(run.model, data.x))
    assert list(filled.columns) == ["temp", "rain", "sky", "count"] and not filled.isna().any().any()
    observed = ~new["temp"].isna()
    np.testing.assert_allclose(filled.loc[observed, "temp"], new.loc[observed, "temp"], rtol=1e-4)
    samples = runs.format_output(run, run.model.sample(7, draw=True))
    assert samples.shape == (7, 4) and set(samples["rain"]) <= {"yes", "no"}
    assert set(samples["sky"]) <= {"clear", "cloudy", "storm"} and set(samples["count"]) <= set(frame["count"])
    # vaekit reconstruct fills a table's missing values and keeps the observed ones
    assert main(["reconstruct", str(out), "--data", str(tmp_path / "new.csv"), "-o", str(tmp_path / "rec.npz")]) == 0
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as saved:  # model-space numbers, no pickled objects
        assert saved["original"].dtype == np.float32 and saved["reconstruction"].shape == saved["original"].shape
        np.testing.assert_array_equal(np.isnan(saved["original"]), np.isnan(data.x))
    # cells of the table (the unseen 'hail' counts as missing), not model columns (sky is three one-hot ones)
    cells = int(new[["temp", "rain", "sky", "count"]].isna().sum().sum()) + 1
    assert f"{cells} missing cell(s) of 10 x 4 filled" in capsys.readouterr().out
    imputed = pd.read_csv(tmp_path / "rec_imputed.csv")
    assert list(imputed.columns) == ["temp", "rain", "sky", "count"] and not imputed.isna().any().any()
    np.testing.assert_allclose(imputed.loc[observed, "temp"], new.loc[observed, "temp"], rtol=1e-4)
    assert (imputed["rain"] == new["rain"]).all()
    # a table without a column the model needs
    new.drop(columns="rain").to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="lacks column\\(s\\) 'rain'"):
        runs.read_input(run, str(tmp_path / "short.csv"))


def test_npy_streamed_from_disk(tmp_path, capsys):
    x = np.random.default_rng(2).random((200, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "x.npy"), "--stream", "on", "--out", str(out), *TINY]) == 0
    assert "streamed from disk" in capsys.readouterr().out
    run = runs.open_run(out)
    test = run.data("test")
    assert type(test.x).__name__ == "DiskArray" and test.x.shape == (20, 6)
    idx = np.sort(np.concatenate([run.data(w).x.index for w in ("train", "val", "test")]))
    np.testing.assert_array_equal(idx, np.arange(200))


@pytest.fixture
def bad_inputs(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    np.save(tmp_path / "grey.npy", np.random.default_rng(0).random((50, 4)))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    (tmp_path / "inf.csv").write_text("a,b\n1,2\n3,inf\n4,5\n")
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "none.npy", np.zeros((0, 3)))
    write_idx(tmp_path / "cut-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    raw = (tmp_path / "cut-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw[:-7])
    (tmp_path / "imgs").mkdir()
    save_image(tmp_path / "imgs" / "a.png", np.zeros((4, 4)))
    (tmp_path / "imgs" / "b.png").write_bytes(b"not an image")
    pd.DataFrame({"a": [1.0, 2, 3, 4], "b": ["x", "y", "x", "y"]}).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path


@pytest.mark.parametrize(
    "args,match",
    [
        (["--data", "nan.npy"], "NaN or infinite"),
        (["--data", "empty.csv"], "is empty"),
        (["--data", "ragged.csv"], "ragged rows"),
        (["--data", "inf.csv"], "infinite"),
        (["--data", "empty.npy"], "header is broken"),
        (["--data", "none.npy"], "holds no examples"),
        (["--data", "cut-idx3-ubyte"], "truncated"),
        (["--data", "imgs"], "cannot read image"),
        (["--data", "grey.npy", "--likelihood", "bernoulli"], "Bernoulli likelihood needs binary data"),
        (["--data", "grey.npy", "--likelihood", "categorical256"], "categorical256 needs pixel values"),
        (["--data", "grey.npy", "--network", "conv"], "the conv network needs image data"),
        (["--data", "grey.npy", "--likelihood", "mixed"], "the mixed likelihood models tables"),
        (["--data", "t.csv", "--likelihood", "gaussian"], "a table is modelled column by column"),
        (["--data", "t.csv", "--label-column", "c"], "--label-column 'c' is not a column"),
        (["--data", "grey.npy", "--label-column", "c"], "do not apply to grey.npy"),
        (
            ["--data", "sine", "--categorical", "a"],
            "setting categorical=('a',) is not allowed for data 'sine': it applies to tables",
        ),
        (
            ["--data", "sine", "--binarize"],
            "setting binarize='static' is not allowed for data 'sine': it applies to images",
        ),
        (["--data", "t.csv", "--binarize", "dynamic"], "binarize='dynamic' needs data in [0, 1]"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_inputs, monkeypatch, capsys, args, match):
    monkeypatch.chdir(bad_inputs)
    assert main(["train", *args, "--out", "run", "--no-progress", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err, err
    assert not (bad_inputs / "run").exists()


def test_non_binary_bernoulli_message_suggests_the_fixes(bad_inputs, monkeypatch, capsys):
    monkeypatch.chdir(bad_inputs)
    assert main(["train", "--data", "grey.npy", "--likelihood", "bernoulli", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert "continuous_bernoulli" in err and "--binarize" in err
