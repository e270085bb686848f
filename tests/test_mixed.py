"""The mixed likelihood for tables: exact log-likelihoods per column, missing values, round trips,
and learning on real and generated tables."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import vaekit
from vaekit import likelihoods as L
from vaekit import runs
from vaekit.data.tables import Schema
from vaekit.tabular import column_log_likelihoods, impute

COLUMNS = [
    {"name": "height", "kind": "numeric", "unit_scale": 7.5},
    {"name": "smoker", "kind": "binary"},
    {"name": "colour", "kind": "categorical", "size": 3},
    {"name": "weight", "kind": "numeric", "unit_scale": 0.2},
]


def _mixed():
    lik = L.Mixed(COLUMNS).bind((6,))
    with torch.no_grad():
        lik.raw_scale.copy_(torch.tensor([0.3, -1.0]))
    return lik


@torch.no_grad()
def test_log_prob_matches_scipy_in_the_data_units():
    lik = _mixed()
    g = torch.Generator().manual_seed(0)
    params = torch.randn(4, 6, generator=g)
    x = torch.tensor(
        [
            [0.5, 1, 0, 0, 1, -1.2],
            [-1.0, 0, 1, 0, 0, 0.3],
            [2.0, 1, 0, 1, 0, 0.0],
            [0.1, 0, 0, 0, 1, 2.5],
        ]
    )
    got = lik.distribution(params).log_prob_columns(x).double().numpy()
    scales = lik.scales().detach().double().numpy()
    p = params.double().numpy()
    xs = x.double().numpy()
    for i in range(4):
        # a standardised column z = (v - m) / s modelled as N(mu, sigma): v ~ N(m + s mu, s sigma)
        m, s = 170.0, 7.5
        v = m + s * xs[i, 0]
        assert got[i, 0] == pytest.approx(stats.norm.logpdf(v, m + s * p[i, 0], s * scales[0]), abs=1e-5)
        prob = 1 / (1 + np.exp(-p[i, 1]))
        assert got[i, 1] == pytest.approx(stats.bernoulli.logpmf(xs[i, 1], prob), abs=1e-5)
        logits = p[i, 2:5]
        k = int(np.argmax(xs[i, 2:5]))
        assert got[i, 2] == pytest.approx(logits[k] - np.log(np.exp(logits).sum()), abs=1e-5)
        assert got[i, 3] == pytest.approx(stats.norm.logpdf(xs[i, 5], p[i, 5], scales[1]) - math.log(0.2), abs=1e-5)
    np.testing.assert_allclose(lik.distribution(params).log_prob(x).numpy(), got.sum(1), rtol=1e-5)


@torch.no_grad()
def test_each_column_is_normalised():
    lik = _mixed()
    params = torch.randn(1, 6)
    d = lik.distribution(params)
    # binary: p(0) + p(1) = 1
    base = torch.tensor([[0.0, 0, 1, 0, 0, 0]])
    probs = [d.log_prob_columns(base.clone().index_fill_(1, torch.tensor([1]), v))[0, 1].exp() for v in (0.0, 1.0)]
    assert float(sum(probs)) == pytest.approx(1.0, abs=1e-6)
    # categorical: the three one-hot values
    total = 0.0
    for k in range(3):
        x = base.clone()
        x[0, 2:5] = 0
        x[0, 2 + k] = 1
        total += float(d.log_prob_columns(x)[0, 2].exp())
    assert total == pytest.approx(1.0, abs=1e-6)
    # numeric: the density integrates to 1 over the column's own units (v = m + 0.2 z)
    grid = torch.linspace(-30, 30, 200001)
    x = base.repeat(len(grid), 1)
    x[:, 5] = grid
    dens = lik.distribution(params.expand(len(grid), 6)).log_prob_columns(x)[:, 3].double().exp()
    dv = 0.2 * 60 / 200000
    assert float(dens.sum()) * dv == pytest.approx(1.0, abs=1e-4)


def test_missing_values_drop_out_and_keep_gradients_finite():
    lik = _mixed()
    params = torch.randn(3, 6, requires_grad=True)
    full = torch.tensor([[0.5, 1, 0, 1, 0, -1.2]] * 3)
    x = full.clone()
    x[0, 0] = float("nan")  # numeric missing
    x[1, 1] = float("nan")  # binary missing
    x[2, 2:5] = float("nan")  # categorical missing
    cols_full = lik.distribution(params).log_prob_columns(full)
    cols = lik.distribution(params).log_prob_columns(x)
    assert cols[0, 0] == 0 and cols[1, 1] == 0 and cols[2, 2] == 0
    keep = torch.ones_like(cols, dtype=torch.bool)
    keep[0, 0] = keep[1, 1] = keep[2, 2] = False
    torch.testing.assert_close(cols[keep], cols_full[keep])
    # log_prob per example is the sum of the observed columns
    torch.testing.assert_close(lik.distribution(params).log_prob(x), (cols_full * keep).sum(1))
    lik.distribution(params).log_prob(x).sum().backward()
    assert torch.isfinite(params.grad).all() and torch.isfinite(lik.raw_scale.grad).all()


def test_broadcast_over_samples_mean_sample_and_validate():
    lik = _mixed()
    params = torch.randn(5, 3, 6)  # (L, B, D)
    x = torch.tensor([[0.5, 1, 0, 1, 0, -1.2]] * 3)
    assert lik.distribution(params).log_prob(x).shape == (5, 3)
    mean = lik.mean(params)
    torch.testing.assert_close(mean[..., 2:5].sum(-1), torch.ones(5, 3))
    assert ((mean[..., 1] > 0) & (mean[..., 1] < 1)).all()
    draw = lik.distribution(params).sample()
    assert set(draw[..., 1].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(draw[..., 2:5].sum(-1), torch.ones(5, 3))
    lik.validate(np.array([[0.5, np.nan, np.nan, np.nan, np.nan, 1.0]]))  # missing is fine
    with pytest.raises(ValueError, match="binary column 'smoker'"):
        lik.validate(np.array([[0.5, 0.3, 1, 0, 0, 1.0]]))
    with pytest.raises(ValueError, match="categorical column 'colour' must be one-hot"):
        lik.validate(np.array([[0.5, 1, 1, 1, 0, 1.0]]))
    with pytest.raises(ValueError, match="infinite"):
        lik.validate(np.array([[np.inf, 1, 1, 0, 0, 1.0]]))


def test_config_round_trip_and_save_load(tmp_path):
    lik = L.Mixed(COLUMNS)
    assert L.create(lik.config()).config() == lik.config()
    spec = vaekit.ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,), likelihood=lik.config(), network="table")
    model = vaekit.build_model(spec)
    x = torch.tensor([[0.5, float("nan"), 0, 1, 0, -1.2]])
    vaekit.save(model, tmp_path / "m.safetensors")
    again = vaekit.load(tmp_path / "m.safetensors")
    torch.manual_seed(0)
    a = vaekit.elbo(model, x).elbo
    torch.manual_seed(0)
    b = vaekit.elbo(again, x).elbo
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all()


# -- learning -------------------------------------------------------------------------------
def _independent_baseline(train: np.ndarray, val: np.ndarray) -> float:
    """Mean log-likelihood of ``val`` under independent Gaussians fitted to ``train``'s columns."""
    m, s = train.mean(0), train.std(0)
    return float(stats.norm.logpdf(val, m, s).sum(1).mean())


def test_breast_cancer_table_learns(tmp_path):
    """scikit-learn's breast-cancer table (569 x 30 numeric, diagnosis as label): the mixed model's
    validation ELBO ends far above the untrained model's and above independent Gaussians per column."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    path = tmp_path / "cancer.csv"
    frame.to_csv(path, index=False)
    settings = {
        "data": str(path),
        "label_column": "diagnosis",
        "epochs": 150,
        "hidden": (64,),
        "latent_dim": 8,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup": 10,
        "out": str(tmp_path / "run"),
        "progress": False,
        "device": "cpu",
    }
    parts = runs.load_splits(runs.data_config(runs.normalise_settings(settings)))
    untrained = vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=(30,),
            latent_dim=8,
            hidden=(64,),
            activation="relu",
            likelihood=parts["train"].schema.likelihood().config(),
            network="table",
        )
    )
    torch.manual_seed(0)
    before = vaekit.train.evaluate_elbo(untrained, torch.as_tensor(parts["val"].x), n_samples=10)["elbo"]
    result = runs.train(settings, log=lambda m: None)
    after = result.metrics["val"]["elbo"]
    raw = frame.drop(columns=["diagnosis"]).to_numpy()
    idx = vaekit.datasets.split(len(frame), (0.8, 0.1, 0.1), 0)
    baseline = _independent_baseline(raw[idx[0]], raw[idx[1]])
    print(
        f"breast cancer, validation nats per example: untrained ELBO {before:.1f}, independent Gaussians "
        f"{baseline:.1f}, trained ELBO {after:.1f}"
    )
    # untrained, the decoder predicts each standardised column's mean with scale 1: about the
    # independent-Gaussians model; trained, the correlations between the features are captured
    assert after > before + 20
    assert after > baseline + 20
    cols = result.metrics["columns"]["columns"]
    assert len(cols) == 30 and all(math.isfinite(v["log_lik"]) for v in cols.values())
    labels = parts["val"].labels
    assert labels is not None and set(np.unique(labels)) <= {0, 1}


def make_mixed_table(n: int, seed: int = 0, missing: float = 0.1):
    """Rows driven by a 2-D latent z: three numeric columns linear in z plus noise, two yes/no
    columns and one four-way category whose probabilities depend on z. ``missing`` of the
    cells of a few columns are blanked at random."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    frame = pd.DataFrame(
        {
            "a": 3 + 2 * z[:, 0] + 0.2 * rng.normal(size=n),
            "b": -1 + z[:, 0] - z[:, 1] + 0.2 * rng.normal(size=n),
            "c": 100 + 30 * z[:, 1] + 5 * rng.normal(size=n),
            "flag": np.where(rng.random(n) < 1 / (1 + np.exp(-3 * z[:, 0])), "yes", "no"),
            "hot": np.where(rng.random(n) < 1 / (1 + np.exp(3 * z[:, 1])), "true", "false"),
        }
    )
    logits = 2.5 * np.stack([z[:, 0], -z[:, 0], z[:, 1], -z[:, 1]], 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cats = np.array(["north", "south", "east", "west"])
    frame["side"] = cats[[rng.choice(4, p=p) for p in probs]]
    for col in ("a", "c", "flag", "side"):
        frame.loc[rng.random(n) < missing, col] = None
    return frame


def _marginal_column_baselines(schema: Schema, x_train: np.ndarray, x_val: np.ndarray) -> dict[str, float]:
    """Per observed value: each column's log-likelihood under its own training marginal, in the
    same units as the mixed likelihood's per-column numbers."""
    out, pos = {}, 0
    for c in schema.modelled:
        if c["kind"] == "numeric":
            t, v = x_train[:, pos], x_val[:, pos]
            t, v = t[~np.isnan(t)], v[~np.isnan(v)]
            out[c["name"]] = float(stats.norm.logpdf(v, t.mean(), t.std()).mean() - math.log(c["scale"]))
            pos += 1
        elif c["kind"] == "binary":
            t, v = x_train[:, pos], x_val[:, pos]
            p = np.nanmean(t)
            v = v[~np.isnan(v)]
            out[c["name"]] = float(np.mean(np.where(v == 1, np.log(p), np.log(1 - p))))
            pos += 1
        else:
            k = len(c["categories"])
            t, v = x_train[:, pos : pos + k], x_val[:, pos : pos + k]
            freq = np.nanmean(t, 0)
            v = v[~np.isnan(v).any(1)]
            out[c["name"]] = float(np.log(freq[v.argmax(1)]).mean())
            pos += k
    return out


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    make_mixed_table(1500).to_csv(tmp / "mixed.csv", index=False)
    settings = {
        "data": str(tmp / "mixed.csv"),
        "epochs": 60,
        "hidden": (64,),
        "latent_dim": 2,
        "batch_size": 64,
        "lr": 3e-3,
        "out": str(tmp / "run"),
        "progress": False,
        "device": "cpu",
        "val_fraction": 0.2,
    }
    result = runs.train(settings, log=lambda m: None)
    return tmp, result


def test_generated_mixed_table_learns_each_column(mixed_run):
    tmp, result = mixed_run
    run = runs.open_run(result.run_dir)
    assert [c["kind"] for c in run.schema.columns] == [
        "numeric",
        "numeric",
        "numeric",
        "binary",
        "binary",
        "categorical",
    ]
    parts = runs.load_splits(run.config["data"], run.schema)
    assert np.isnan(parts["train"].x).any()  # the missing cells are there, masked
    cols = column_log_likelihoods(run.model, parts["val"].x, n_samples=20)["columns"]
    base = _marginal_column_baselines(run.schema, parts["train"].x, parts["val"].x)
    print(
        "per column (nats per observed value), VAE vs independent marginal:",
        {k: (round(cols[k]["log_lik"], 3), round(base[k], 3)) for k in cols},
    )
    # every column is predicted better from the shared latent than from its own marginal
    for name in ("a", "b", "c"):
        assert cols[name]["log_lik"] > base[name] + 0.5, name
    for name in ("flag", "hot", "side"):
        assert cols[name]["log_lik"] > base[name] + 0.1, name
    # the untrained model, same architecture
    torch.manual_seed(1)
    fresh = vaekit.build_model(run.model.spec)
    torch.manual_seed(0)
    before = vaekit.train.evaluate_elbo(fresh, torch.as_tensor(parts["val"].x), n_samples=10)["elbo"]
    print(f"validation ELBO: untrained {before:.2f}, trained {result.metrics['val']['elbo']:.2f} nats per example")
    # the data carry about two latent dimensions of shared information; the KL of encoding them is
    # paid out of the per-column gains above
    assert result.metrics["val"]["elbo"] > before + 2


def test_imputation_beats_column_means_and_modes(mixed_run):
    tmp, result = mixed_run
    run = runs.open_run(result.run_dir)
    fresh = make_mixed_table(400, seed=7, missing=0.0)
    fresh.to_csv(tmp / "truth.csv", index=False)
    hidden = fresh.copy()
    rng = np.random.default_rng(3)
    hide_a = rng.random(len(fresh)) < 0.3
    hide_side = rng.random(len(fresh)) < 0.3
    hidden.loc[hide_a, "a"] = None
    hidden.loc[hide_side, "side"] = None
    hidden.to_csv(tmp / "holes.csv", index=False)
    data = runs.read_input(run, str(tmp / "holes.csv"))
    filled = runs.format_output(run, impute(run.model, data.x))
    assert list(filled.columns) == list(fresh.columns)
    assert not filled.isna().any().any()
    # observed cells come back unchanged (numeric up to float32 round-off)
    np.testing.assert_allclose(filled.loc[~hide_a, "b"], fresh.loc[~hide_a, "b"], rtol=1e-4, atol=1e-4)
    assert (filled.loc[~hide_side, "side"] == fresh.loc[~hide_side, "side"]).all()
    col_a = next(c for c in run.schema.columns if c["name"] == "a")
    rmse = float(np.sqrt(np.mean((filled.loc[hide_a, "a"] - fresh.loc[hide_a, "a"]) ** 2)))
    rmse_mean = float(np.sqrt(np.mean((col_a["mean"] - fresh.loc[hide_a, "a"]) ** 2)))
    acc = float((filled.loc[hide_side, "side"] == fresh.loc[hide_side, "side"]).mean())
    mode = fresh["side"].mode()[0]
    acc_mode = float((fresh.loc[hide_side, "side"] == mode).mean())
    print(
        f"imputation: numeric RMSE {rmse:.3f} vs mean {rmse_mean:.3f}; category accuracy {acc:.2f} vs mode {acc_mode:.2f}"
    )
    assert rmse < 0.5 * rmse_mean
    assert acc > acc_mode + 0.15


def test_samples_come_back_as_a_table_with_the_original_categories(mixed_run):
    tmp, result = mixed_run
    run = runs.open_run(result.run_dir)
    torch.manual_seed(0)
    table = runs.format_output(run, run.model.sample(200, draw=True))
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["a", "b", "c", "flag", "hot", "side"]
    assert set(table["flag"]) <= {"yes", "no"} and set(table["side"]) <= {"north", "south", "east", "west"}
    assert len(set(table["side"])) >= 3
    # the learned dependence survives generation: a and b are correlated as in the data (a - 3 = 2 z0, b + 1 = z0 - z1)
    r = np.corrcoef(table["a"].astype(float), table["b"].astype(float))[0, 1]
    truth = make_mixed_table(5000, seed=9, missing=0.0)
    r_true = np.corrcoef(truth["a"], truth["b"])[0, 1]
    assert abs(r - r_true) < 0.2


def test_mixed_is_built_from_child_likelihoods_and_reads_old_checkpoints():
    lik = _mixed()
    assert isinstance(lik.numeric, L.Gaussian) and isinstance(lik.binary, L.Bernoulli)
    assert [type(c) for c in lik.categorical] == [L.Categorical] and lik.categorical[0].num_classes == 3
    assert lik.handles_missing() and lik.column_names() == ["height", "smoker", "colour", "weight"]
    # a checkpoint from before the children held the numeric scales as "raw_scale"
    old = {("raw_scale" if k == "numeric.raw_scale" else k): v for k, v in lik.state_dict().items()}
    assert "raw_scale" in old and "numeric.raw_scale" not in old
    fresh = L.create(lik.config()).bind((6,))
    assert fresh.config() == lik.config()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.scales(), lik.scales())
    params, x = torch.randn(3, 6), torch.tensor([[0.5, 1, 0, 0, 1, float("nan")]] * 3)
    torch.testing.assert_close(fresh.distribution(params).log_prob(x), lik.distribution(params).log_prob(x))


def test_categorical256_is_a_categorical_with_a_levels_map():
    lik = L.Categorical256(levels=4).bind((2,))
    assert isinstance(lik, L.Categorical) and lik.config() == {"name": "categorical256", "levels": 4}
    params = torch.randn(5, 8)
    x = torch.tensor([[0.0, 1.0], [1 / 3, 2 / 3], [2 / 3, 0.0], [1.0, 1 / 3], [0.0, 0.0]])
    logits = params.reshape(5, 4, 2).movedim(1, -1).double().numpy()  # (5, 2, levels)
    log_pmf = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    idx = np.round(x.double().numpy() * 3).astype(int)
    want = np.take_along_axis(log_pmf, idx[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(lik.log_prob(params, x).double().numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(lik.distribution(params).log_prob(x).double().numpy(), want, rtol=1e-5)
    probs = np.exp(log_pmf)
    np.testing.assert_allclose(lik.mean(params).double().numpy(), probs @ (np.arange(4) / 3), rtol=1e-5)
    mode = lik.distribution(params).base_dist.mode
    np.testing.assert_allclose(mode.numpy(), probs.argmax(-1) / 3, rtol=1e-6)  # a pixel value, not a class index
