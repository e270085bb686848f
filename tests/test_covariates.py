"""A conditional VAE on table covariates: ``vaekit train --condition-columns``, every command on such
a run (the data's own covariates or ``--condition-file``), the counterfactual
``reconstruct --as-condition-file``, save/load/resume, the refusals, and ``VAE(condition="y")`` with
2-D covariates."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from vaekit import VAE, runs
from vaekit.cli import main
from vaekit.data import split as split_indices

COVARIATES = ["group", "site", "age"]
EPOCHS = 40
SHIFT = 3.0  # x1 and x2 are shifted by +SHIFT for 'treated' rows, -SHIFT for 'control' ones


def _table(n=500, seed=0) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    g = r.integers(0, 2, n)
    s = np.where(g == 1, SHIFT, -SHIFT)
    z = r.normal(size=n)
    return pd.DataFrame(
        {
            "x1": s + z + 0.3 * r.normal(size=n),
            "group": np.where(g == 1, "treated", "control"),
            "x2": s - z + 0.3 * r.normal(size=n),
            "site": r.choice(["a", "b", "c"], n),
            "age": r.normal(40, 10, n).round(1),
        }
    )


def _code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _flipped(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[COVARIATES].copy()
    out["group"] = out["group"].map({"treated": "control", "control": "treated"})
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("cov") / "t.csv"
    _table().to_csv(path, index=False)
    return path


TRAIN = ["--condition-columns", ",".join(COVARIATES), "--latent-dim", "2", "--seed", "0", "--no-progress"]


@pytest.fixture(scope="module")
def cov_run(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("covrun") / "run"
    argv = ["train", "--data", str(table), *TRAIN, "--epochs", str(EPOCHS), "--out", str(out), "--no-figures"]
    assert main(argv) == 0
    return out


def _evaluate(run, capsys, *extra) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "100", "--iwae", "none", "--json", "--no-save", *extra]) == 0
    return json.loads(capsys.readouterr().out)


# -- training ---------------------------------------------------------------------------------------
def test_train_takes_the_covariates_out_of_x_and_stores_their_encoding(cov_run, table):
    config = json.loads((cov_run / "config.json").read_text())
    assert config["data"]["condition_columns"] == COVARIATES
    assert runs.RunFolder(cov_run).run_config().data.condition_columns == tuple(COVARIATES)
    # group: binary 0/1 (1 value), site: one-hot of 3, age: standardised (1 value)
    assert config["model"]["condition_dim"] == 5
    run = runs.open_run(cov_run)
    assert run.schema.names == ["x1", "x2"] and tuple(run.model.data_shape) == (2,)
    assert run.covariates.names == COVARIATES
    assert run.covariates.table_columns == ["x1", "group", "x2", "site", "age"]
    # standardised with the training split's own mean and sd, not the whole file's
    frame = pd.read_csv(table)
    train_rows = split_indices(len(frame), (0.8, 0.1, 0.1), 0)[0]
    age = next(c for c in run.covariates.schema.columns if c["name"] == "age")
    assert age["mean"] == pytest.approx(frame["age"].iloc[train_rows].mean())
    assert age["mean"] != pytest.approx(frame["age"].mean(), abs=1e-9)
    assert age["scale"] == pytest.approx(frame["age"].iloc[train_rows].std(ddof=0))
    c = runs.conditions(run, run.data("test"))
    assert c.shape == (len(run.data("test")), 5) and c.dtype == np.float32
    assert set(np.unique(c[:, 1:4].sum(1))) == {1.0}  # one-hot sites


def test_covariates_json_is_checksummed(cov_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cov_run, copy)
    path = copy / runs.COVARIATES_FILE
    d = json.loads(path.read_text())
    age = next(c for c in d["columns"] if c["name"] == "age")
    age["mean"] += 1.0
    path.write_text(json.dumps(d))
    assert _code(["encode", str(copy), "-o", str(tmp_path / "z.npy")]) == 2
    assert "covariates.json is corrupted or was edited" in capsys.readouterr().err


# -- log p(x|c) and sampling follow the covariates --------------------------------------------------
def test_log_px_given_the_true_covariates_beats_flipped_ones(cov_run, table, tmp_path, capsys):
    flipped = tmp_path / "flipped.csv"
    _flipped(pd.read_csv(table)).to_csv(flipped, index=False)
    right = _evaluate(cov_run, capsys, "--data", str(table))
    wrong = _evaluate(cov_run, capsys, "--data", str(table), "--condition-file", str(flipped))
    assert "covariates (group, site, age)" in right["condition"] and "flipped.csv" in wrong["condition"]
    # a shift of 2 x 3 in both columns under unit-ish noise: several nats per row
    assert right["log_px"]["mean"] > wrong["log_px"]["mean"] + 3, (right["log_px"], wrong["log_px"])
    # the data without their covariate columns, given the same covariates by file: the same number
    bare = tmp_path / "bare.csv"
    own = tmp_path / "own.csv"
    frame = pd.read_csv(table)
    frame[["x1", "x2"]].to_csv(bare, index=False)
    frame[COVARIATES].to_csv(own, index=False)
    by_file = _evaluate(cov_run, capsys, "--data", str(bare), "--condition-file", str(own))
    assert by_file["log_px"]["mean"] == pytest.approx(right["log_px"]["mean"], abs=1e-9)


def test_sample_with_a_condition_file_moves_the_means_the_right_way(cov_run, tmp_path, capsys):
    cov = tmp_path / "c.csv"
    pd.DataFrame({"group": ["treated"] * 60 + ["control"] * 60, "site": "b", "age": 40.0}).to_csv(cov, index=False)
    out = tmp_path / "s.csv"
    assert main(["sample", str(cov_run), "--condition-file", str(cov), "-o", str(out), "--no-png"]) == 0
    assert "one per covariate row of" in capsys.readouterr().out
    s = pd.read_csv(out)
    assert list(s.columns) == ["x1", "group", "x2", "site", "age"] and len(s) == 120
    assert list(s["group"]) == ["treated"] * 60 + ["control"] * 60  # each sample beside its covariates
    means = s.groupby("group")[["x1", "x2"]].mean()
    assert (means.loc["treated"] > SHIFT / 2).all() and (means.loc["control"] < -SHIFT / 2).all(), means


def test_sample_and_synthesize_without_a_file_draw_training_covariate_rows(cov_run, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["sample", str(cov_run), "-n", "200", "-o", str(out), "--no-png"]) == 0
    s = pd.read_csv(out)
    assert set(s["group"]) == {"treated", "control"} and set(s["site"]) <= {"a", "b", "c"}
    sign = np.where(s["group"] == "treated", 1.0, -1.0)
    assert np.mean(np.sign(s["x1"]) == sign) > 0.9
    syn = tmp_path / "syn.csv"
    assert main(["synthesize", str(cov_run), "-n", "200", "-o", str(syn)]) == 0
    t = pd.read_csv(syn)
    assert list(t.columns) == ["x1", "group", "x2", "site", "age"]
    # draws x ~ p(x|z, c): noisy rows, but each group's mean is shifted its own way
    means = t.groupby("group")["x1"].mean()
    assert means["treated"] > SHIFT / 2 and means["control"] < -SHIFT / 2, means


def test_synthesize_with_a_condition_file_gives_one_row_per_covariate_row(cov_run, tmp_path):
    cov = tmp_path / "c.csv"
    pd.DataFrame({"group": ["control"] * 100, "site": "a", "age": 30.0}).to_csv(cov, index=False)
    syn = tmp_path / "syn.csv"
    assert main(["synthesize", str(cov_run), "--condition-file", str(cov), "-o", str(syn)]) == 0
    t = pd.read_csv(syn)
    assert len(t) == 100 and (t["group"] == "control").all() and (t["age"] == 30.0).all()
    assert t["x1"].mean() < -SHIFT / 2


# -- the other commands: outputs keep the table's columns ----------------------------------------------
def test_reconstruct_copies_the_covariates_and_the_counterfactual_takes_the_file(cov_run, table, tmp_path, capsys):
    frame = pd.read_csv(table).iloc[:40]
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "r.csv"
    assert main(["reconstruct", str(cov_run), "--data", str(data), "-o", str(out), "--mean-z", "--no-png"]) == 0
    rec = pd.read_csv(out)
    assert list(rec.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(rec[COVARIATES], frame[COVARIATES])
    assert np.mean(np.sign(rec["x1"]) == np.sign(frame["x1"])) > 0.9
    # counterfactual: encode under the row's own group, decode under the other one
    other = tmp_path / "other.csv"
    _flipped(frame).to_csv(other, index=False)
    cf = tmp_path / "cf.csv"
    argv = ["reconstruct", str(cov_run), "--data", str(data), "-o", str(cf), "--mean-z", "--no-png"]
    assert main([*argv, "--as-condition-file", str(other)]) == 0
    assert f"decoded under those of {other}" in capsys.readouterr().out
    moved = pd.read_csv(cf)
    pd.testing.assert_frame_equal(moved[COVARIATES], _flipped(frame))  # the rows now stand for the other group
    assert np.mean(np.sign(moved["x1"]) == -np.sign(frame["x1"])) > 0.9
    # one row for every example
    one = tmp_path / "one.csv"
    pd.DataFrame({"group": ["treated"], "site": ["a"], "age": [40.0]}).to_csv(one, index=False)
    assert main([*argv, "--as-condition-file", str(one)]) == 0
    assert (pd.read_csv(cf)["x1"] > 0).mean() > 0.9


def test_encode_score_and_impute_use_each_rows_covariates(cov_run, table, tmp_path, capsys):
    frame = pd.read_csv(table).iloc[:30].copy()
    frame.loc[[0, 1, 2], "x1"] = np.nan
    data = tmp_path / "holes.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "i.csv"
    assert main(["impute", str(cov_run), "--data", str(data), "-o", str(out)]) == 0
    filled = pd.read_csv(out)
    assert list(filled.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(filled[COVARIATES], frame[COVARIATES])
    sign = np.where(frame["group"] == "treated", 1.0, -1.0)
    assert np.all(np.sign(filled["x1"][:3]) == sign[:3])  # filled from x2 and the group's shift
    # the covariates from --condition-file: the output table holds them, in the training table's order
    bare = tmp_path / "bare.csv"
    frame.drop(columns=COVARIATES).to_csv(bare, index=False)
    cov = tmp_path / "cov.csv"
    frame[COVARIATES].to_csv(cov, index=False)
    by_file = tmp_path / "i2.csv"
    assert main(["impute", str(cov_run), "--data", str(bare), "--condition-file", str(cov), "-o", str(by_file)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(by_file), filled)  # the same rows, the same fills, the same columns
    full = pd.read_csv(table)
    z = tmp_path / "z.npy"
    assert main(["encode", str(cov_run), "--data", str(table), "-o", str(z)]) == 0
    assert np.load(z).shape == (len(full), 2)
    assert "c = each row's own covariates (group, site, age)" in capsys.readouterr().out
    scores = tmp_path / "s.csv"
    assert main(["score", str(cov_run), "--data", str(table), "--iw-samples", "20", "-o", str(scores)]) == 0
    assert len(pd.read_csv(scores)) == len(full)


def test_traverse_decodes_under_one_covariate_row(cov_run, tmp_path):
    one = tmp_path / "one.csv"
    pd.DataFrame({"group": ["treated"], "site": ["c"], "age": [50.0]}).to_csv(one, index=False)
    out = tmp_path / "t.csv"
    argv = ["traverse", str(cov_run), "--condition-file", str(one), "--steps", "3", "-o", str(out), "--no-png"]
    assert main(argv) == 0
    t = pd.read_csv(out)
    assert list(t.columns) == ["unit", "value", "x1", "group", "x2", "site", "age"]
    assert (t["group"] == "treated").all() and (t["x1"] > 0).all()


def test_interpolate_decodes_each_line_under_one_covariate_row(cov_run, table, tmp_path, capsys):
    frame = pd.read_csv(table)
    one = tmp_path / "one.csv"
    pd.DataFrame({"group": ["control"], "site": ["a"], "age": [40.0]}).to_csv(one, index=False)
    out = tmp_path / "i.csv"
    argv = ["interpolate", str(cov_run), "--data", str(table), "--pair", "0", "1", "--steps", "4", "-o", str(out)]
    assert main([*argv, "--condition-file", str(one), "--no-png"]) == 0
    i = pd.read_csv(out)
    assert list(i.columns) == ["pair", "step", "x1", "group", "x2", "site", "age"] and len(i) == 4
    assert (i["group"] == "control").all() and (i["x1"] < 0).all()
    # two rows that share every covariate need no file: the line is decoded under theirs
    same = frame.iloc[[0, 1]].copy()
    same.loc[1, COVARIATES] = same.loc[0, COVARIATES]
    pair = tmp_path / "pair.csv"
    same.to_csv(pair, index=False)
    assert main(["interpolate", str(cov_run), "--data", str(pair), "-o", str(out), "--no-png"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(out)[COVARIATES].iloc[[0]], same[COVARIATES].iloc[[0]].reset_index(drop=True)
    )
    assert "each line decoded under its pair's covariates" in capsys.readouterr().out
    different = frame.iloc[[0, 1]]
    assert (different[COVARIATES].iloc[0] != different[COVARIATES].iloc[1]).any()
    _refused(capsys, [*argv, "--no-png"], ["different covariates", "--condition-file"])


# -- save / load / resume ----------------------------------------------------------------------------------
def test_resume_continues_exactly_and_keeps_the_encoding(table, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    base = ["train", "--data", str(table), *TRAIN, "--no-figures"]
    assert main([*base, "--epochs", "4", "--out", str(whole)]) == 0
    assert main([*base, "--epochs", "2", "--out", str(part)]) == 0
    assert main(["train", "--resume", str(part), "--epochs", "4", "--no-figures", "--no-progress"]) == 0
    a, b = load_file(whole / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (whole / "covariates.json").read_text() == (part / "covariates.json").read_text()


def test_a_cli_covariate_run_loads_as_an_estimator(cov_run):
    run = runs.open_run(cov_run)
    test = run.data("test")
    c = runs.conditions(run, test)
    est = VAE.load(cov_run)
    right = est.score(test.x, c)
    wrong = c.copy()
    wrong[:, 0] = 1 - wrong[:, 0]  # group is the binary first column of c
    assert right > est.score(test.x, wrong) + 3


# -- refusals: one line, exit code 2, nothing written ---------------------------------------------------
def _refused(capsys, argv, words):
    capsys.readouterr()
    assert _code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_training_refusals_leave_no_folder(table, tmp_path, capsys):
    frame = pd.read_csv(table)
    holes = tmp_path / "holes.csv"
    bad = frame.copy()
    bad.loc[5, "age"] = np.nan
    bad.to_csv(holes, index=False)
    const = tmp_path / "const.csv"
    frame.assign(site="a").to_csv(const, index=False)
    cases = [
        (["--data", str(table), "--condition-columns", "group,nope"], ["'nope'", "x1, group, x2, site, age"]),
        (["--data", str(holes), "--condition-columns", "age"], ["'age'", "missing value", "complete"]),
        (["--data", str(const), "--condition-columns", "site"], ["'site'", "one value"]),
        (["--data", "digits", "--condition-columns", "a"], ["condition_columns", "tables"]),
        (["--data", str(table), "--condition-columns", "group", "--condition", "label"], ["not both"]),
        (["--data", str(table), "--condition-columns", "x1,group,x2,site,age"], ["nothing left to model"]),
    ]
    for i, (argv, words) in enumerate(cases):
        out = tmp_path / f"r{i}"
        _refused(capsys, ["train", *argv, "--epochs", "1", "--out", str(out), "--no-progress"], words)
        assert not out.exists()


def test_command_refusals(cov_run, table, tmp_path, capsys):
    frame = pd.read_csv(table)
    unknown = tmp_path / "unknown.csv"
    frame[COVARIATES].assign(extra=1).to_csv(unknown, index=False)
    wrong_cat = tmp_path / "wrong_cat.csv"
    frame[COVARIATES].iloc[:5].assign(site="zz").to_csv(wrong_cat, index=False)
    few = tmp_path / "few.csv"
    frame[COVARIATES].iloc[:7].to_csv(few, index=False)
    lacking = tmp_path / "lacking.csv"
    frame[["x1", "x2"]].to_csv(lacking, index=False)
    r = str(cov_run)
    _refused(capsys, ["evaluate", r, "--condition-file", str(unknown)], ["'extra'", "group, site, age"])
    _refused(capsys, ["sample", r, "--condition-file", str(wrong_cat), "--no-png"], ["'zz'", "a, b, c"])
    _refused(capsys, ["evaluate", r, "--data", str(table), "--condition-file", str(few)], ["7 rows", "500"])
    _refused(capsys, ["encode", r, "--data", str(lacking)], ["'group'", "--condition-file"])
    _refused(capsys, ["sample", r, "--condition", "1", "--no-png"], ["--condition-file", "group, site, age"])
    _refused(capsys, ["reconstruct", r, "--as-condition", "1", "--no-png"], ["--as-condition-file"])
    _refused(capsys, ["sample", r, "--condition-file", str(few), "-n", "3", "--no-png"], ["-n does not apply"])
    _refused(capsys, ["synthesize", r, "--condition-file", str(few), "-n", "3"], ["-n does not apply"])
    _refused(capsys, ["traverse", r, "--no-png"], ["--condition-file", "--example"])


def test_a_label_run_or_a_plain_run_refuses_a_condition_file(tmp_path, capsys):
    frame = _table(200)
    data = tmp_path / "t.csv"
    frame.assign(y=(frame["group"] == "treated").astype(int)).drop(columns=COVARIATES).to_csv(data, index=False)
    cov = tmp_path / "c.csv"
    frame[COVARIATES].to_csv(cov, index=False)
    label_run, plain_run = tmp_path / "label", tmp_path / "plain"
    base = ["train", "--data", str(data), "--epochs", "1", "--no-figures", "--no-progress"]
    assert main([*base, "--label-column", "y", "--condition", "label", "--out", str(label_run)]) == 0
    assert main([*base, "--out", str(plain_run)]) == 0
    _refused(capsys, ["sample", str(label_run), "--condition-file", str(cov), "--no-png"], ["--condition K"])
    _refused(capsys, ["evaluate", str(label_run), "--condition-file", str(cov)], ["class labels"])
    _refused(capsys, ["evaluate", str(plain_run), "--condition-file", str(cov)], ["not conditional"])
    _refused(capsys, ["reconstruct", str(plain_run), "--as-condition-file", str(cov), "--no-png"], ["not conditional"])


# -- the estimator with 2-D covariates ---------------------------------------------------------------------
def test_estimator_conditions_on_numeric_covariates(tmp_path):
    r = np.random.default_rng(0)
    n = 400
    g = r.integers(0, 2, n).astype(float)
    age = r.normal(50, 10, n)
    shift = SHIFT * (2 * g - 1)
    X = np.c_[shift + r.normal(size=n), shift + r.normal(size=n)]
    Y = np.c_[g, age]
    vae = VAE(condition="y", latent_dim=1, epochs=40, likelihood="gaussian", random_state=0)
    vae.fit(X, Y)
    assert vae.model_.condition_dim == 2
    np.testing.assert_allclose(vae.covariate_mean_, Y.mean(0))
    np.testing.assert_allclose(vae.covariate_scale_, Y.std(0))
    flipped = np.c_[1 - g, age]
    assert vae.score(X, Y) > vae.score(X, flipped) + 3
    up = vae.sample(200, y=[1.0, 50.0], random_state=0).mean(0)
    down = vae.sample(200, y=[0.0, 50.0], random_state=0).mean(0)
    assert np.all(up - down > SHIFT), (up, down)
    assert vae.transform(X, Y).shape == (n, 1)
    loaded = VAE.load(vae.save(tmp_path / "est"))
    assert loaded.score(X, Y) == pytest.approx(vae.score(X, Y))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        vae.score(X, Y[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        vae.score(X, np.c_[g, np.full(n, np.nan)])
