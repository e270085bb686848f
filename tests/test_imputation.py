"""MIWAE imputation: the training bound, the importance-weighted conditional mean and SIR draws
against a linear-Gaussian model whose conditionals are known in closed form, and the completed
tables written by ``vaekit impute`` (observed cells exactly as read)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vaekit import cli, objectives
from vaekit.imputation import MIWAEImputer, conditional_mean, multiple_imputations
from vaekit.likelihoods import Mixed
from vaekit.model import Model
from vaekit.nets import MissingAware

D, H, SIGMA = 4, 2, 0.5


def _linear_table_model(seed=0, prior_proposal=True):
    """x = W z + b + sigma eps as a model with a Mixed (all numeric) likelihood; with
    ``prior_proposal`` the encoder outputs q(z|x) = N(0, I) whatever x."""
    g = torch.Generator().manual_seed(seed)
    W, b = torch.randn(D, H, generator=g), torch.randn(D, generator=g)
    lik = Mixed([{"name": f"x{j}", "kind": "numeric"} for j in range(D)], min_scale=0.0)
    torch.manual_seed(seed)
    encoder = MissingAware(nn.Linear(2 * D, 2 * H))
    decoder = nn.Linear(H, D)
    model = Model(encoder, decoder, lik, latent_dim=H, data_shape=(D,))
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
        lik.raw_scale.fill_(math.log(math.expm1(SIGMA)))  # softplus(raw) = sigma
        if prior_proposal:
            encoder.inner.weight.zero_()
            encoder.inner.bias.zero_()
    return model, W, b


def _true_conditional(W, b, x, observed):
    """Mean and covariance of x_miss | x_obs under x ~ N(b, W W^T + sigma^2 I)."""
    C = (W @ W.T + SIGMA**2 * torch.eye(D)).double()
    o, m = observed, ~observed
    A = C[m][:, o] @ torch.linalg.inv(C[o][:, o])
    mean = b.double()[m] + A @ (x.double()[o] - b.double()[o])
    cov = C[m][:, m] - A @ C[o][:, m]
    return mean, cov


def test_the_training_loss_is_the_miwae_bound_over_observed_cells():
    model, W, b = _linear_table_model(prior_proposal=False)
    x = torch.randn(6, D)
    x[0, 1] = x[2, 3] = x[3, 0] = x[3, 2] = float("nan")
    K = 7
    torch.manual_seed(3)
    loss, _ = objectives.loss(model, x, iw_samples=K)
    # by hand: the encoder sees the zero-filled row beside the mask; only observed cells enter p(x|z)
    torch.manual_seed(3)
    mask = torch.isnan(x)
    h = model.encoder.inner(torch.cat([torch.nan_to_num(x, nan=0.0), mask.float()], -1))
    loc, log_scale = h.chunk(2, -1)
    qz = torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1)
    z = qz.rsample((K,))
    per_cell = torch.distributions.Normal(z @ W.T + b, SIGMA).log_prob(torch.nan_to_num(x, nan=0.0))
    log_p_obs = (per_cell * (~mask)).sum(-1)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(H), torch.ones(H)), 1)
    bound = torch.logsumexp(log_p_obs + prior.log_prob(z) - qz.log_prob(z), 0) - math.log(K)
    torch.testing.assert_close(loss, -bound.mean(), rtol=1e-5, atol=1e-5)


def test_conditional_mean_converges_to_the_closed_form():
    model, W, b = _linear_table_model()
    x = torch.tensor([[0.3, float("nan"), -1.2, float("nan")], [float("nan"), 1.0, 0.5, 2.0]])
    filled = conditional_mean(model, x, k=40000, seed=0)
    for row in range(2):
        observed = ~torch.isnan(x[row])
        mean, _ = _true_conditional(W, b, x[row], observed)
        assert torch.equal(filled[row][observed], x[row][observed])  # observed cells untouched
        torch.testing.assert_close(filled[row][~observed].double(), mean, atol=0.05, rtol=0)
    # with few samples the estimate differs from the closed form; it is not the plain reconstruction
    coarse = conditional_mean(model, x, k=1, seed=0)
    assert not torch.allclose(coarse, filled, atol=0.05)


def test_sampling_importance_resampling_draws_from_the_conditional():
    model, W, b = _linear_table_model()
    x = torch.tensor([[0.3, float("nan"), -1.2, float("nan")]])
    draws = multiple_imputations(model, x, m=1500, k=400, seed=1)[:, 0]  # (m, D)
    observed = ~torch.isnan(x[0])
    assert torch.equal(draws[:, observed], x[:, observed].expand(1500, -1))
    mean, cov = _true_conditional(W, b, x[0], observed)
    miss = draws[:, ~observed].double()
    se = cov.diagonal().sqrt() / math.sqrt(len(miss))
    assert ((miss.mean(0) - mean).abs() < 5 * se + 0.02).all()
    torch.testing.assert_close(torch.cov(miss.T), cov, atol=0.06, rtol=0.12)
    again = multiple_imputations(model, x, m=3, k=10, seed=1)
    assert torch.equal(again, multiple_imputations(model, x, m=3, k=10, seed=1))  # seeded


def test_bad_sample_counts_are_refused():
    model, _, _ = _linear_table_model()
    x = torch.zeros(2, D)
    with pytest.raises(ValueError, match="k must be"):
        conditional_mean(model, x, k=0)
    with pytest.raises(ValueError, match="number of imputations"):
        multiple_imputations(model, x, m=0)


# -- tables ---------------------------------------------------------------------------------
def _table(n=240, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "height": np.round(170 + 10 * z + rng.normal(size=n), 3) + 0.1 + 0.2,  # floats with many digits
            "rooms": np.clip(np.round(3 + z + 0.5 * rng.normal(size=n)), 0, None).astype(int),
            "colour": np.where(z > 0.5, "red", np.where(z < -0.5, "blue", "green")),
            "smoker": np.where(z + rng.normal(size=n) > 0, "yes", "no"),
            "id": np.arange(n),
        }
    )
    for col, rate in (("height", 0.15), ("rooms", 0.2), ("colour", 0.2), ("smoker", 0.1)):
        frame.loc[rng.random(n) < rate, col] = None
    return frame


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("impute")
    frame = _table()
    path = root / "people.csv"
    frame.to_csv(path, index=False)
    run = root / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(path),
                "--label-column",
                "id",
                "--epochs",
                "3",
                "--iw-samples",
                "5",
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


def _same_observed_cells(out: pd.DataFrame, original: pd.DataFrame) -> None:
    assert list(out.columns) == list(original.columns)
    for col in original.columns:
        seen = original[col].notna()
        assert (out.loc[seen, col].to_numpy() == original.loc[seen, col].to_numpy()).all(), col
        assert out[col].notna().all(), f"{col} still has gaps"


def test_impute_writes_observed_cells_exactly_as_read(table_run, tmp_path, capsys):
    run, path = table_run
    out = tmp_path / "done.csv"
    assert cli.main(["impute", str(run), "--data", str(path), "-o", str(out), "-k", "8"]) == 0
    original, done = pd.read_csv(path), pd.read_csv(out)
    _same_observed_cells(done, original)
    for col in ("height", "colour", "smoker", "id"):
        assert done[col].dtype == original[col].dtype, col
    assert done["rooms"].dtype == np.int64  # read as float only because of its gaps
    assert set(done["colour"]) <= {"red", "green", "blue"} and set(done["smoker"]) <= {"yes", "no"}
    assert "missing cells" in capsys.readouterr().out


def test_impute_multiple_stacked_and_separate(table_run, tmp_path):
    run, path = table_run
    original = pd.read_csv(path)
    out = tmp_path / "many.csv"
    assert cli.main(["impute", str(run), "--data", str(path), "--multiple", "3", "-k", "4", "-o", str(out)]) == 0
    stacked = pd.read_csv(out)
    assert list(stacked.columns) == ["imputation", *original.columns]
    assert sorted(stacked["imputation"].unique()) == [1, 2, 3]
    copies = [stacked[stacked["imputation"] == i].drop(columns="imputation").reset_index(drop=True) for i in (1, 2, 3)]
    for copy in copies:
        _same_observed_cells(copy, original)
    gaps = original["height"].isna()
    assert not np.allclose(copies[0].loc[gaps, "height"], copies[1].loc[gaps, "height"])  # draws differ
    assert (
        cli.main(
            [
                "impute",
                str(run),
                "--data",
                str(path),
                "--multiple",
                "2",
                "-k",
                "4",
                "--separate",
                "-o",
                str(tmp_path / "each.csv"),
            ]
        )
        == 0
    )
    for i in (1, 2):
        _same_observed_cells(pd.read_csv(tmp_path / f"each_{i}.csv"), original)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--separate"], "--separate applies to --multiple"),
        (["-o", "out.json"], "must end in .csv or .tsv"),
        (["--multiple", "0"], "expected"),
    ],
)
def test_impute_refuses_bad_arguments_in_one_line(table_run, tmp_path, capsys, argv, message):
    run, path = table_run
    argv = [a if a != "out.json" else str(tmp_path / a) for a in argv]
    try:
        code = cli.main(["impute", str(run), "--data", str(path), *argv])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_impute_refuses_a_run_not_trained_on_a_table(tmp_path, capsys):
    run = tmp_path / "sine"
    assert (
        cli.main(["train", "--data", "sine", "--epochs", "1", "--out", str(run), "--no-figures", "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert cli.main(["impute", str(run), "--data", "x.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not trained on a table" in err[0]


def test_imputer_on_arrays_and_frames_keeps_observed_values():
    frame = _table(160, seed=2).drop(columns="id")
    imp = MIWAEImputer(latent_dim=2, hidden=(16,), epochs=2, iw_samples=4, k=5)
    done = imp.fit_transform(frame)
    _same_observed_cells(done, frame)
    copies = imp.multiple_imputations(frame, m=2)
    assert len(copies) == 2 and all(c.notna().all().all() for c in copies)
    X = frame[["height"]].assign(rooms=frame["rooms"]).to_numpy(dtype=float)
    filled = MIWAEImputer(latent_dim=1, hidden=(8,), epochs=2, method="reconstruction").fit(X).transform(X)
    assert isinstance(filled, np.ndarray) and filled.shape == X.shape and not np.isnan(filled).any()
    seen = ~np.isnan(X)
    assert np.array_equal(filled[seen], X[seen])
    with pytest.raises(ValueError, match="not fitted"):
        MIWAEImputer().transform(X)
    with pytest.raises(ValueError, match="method"):
        MIWAEImputer(method="magic").fit(X)


def test_imputer_is_a_scikit_learn_estimator():
    from sklearn.base import clone

    imp = MIWAEImputer(latent_dim=3, epochs=7, k=9)
    copy = clone(imp)
    assert copy.get_params() == imp.get_params() and copy.get_params()["k"] == 9
    assert imp.set_params(k=11).k == 11


def test_imputer_from_a_run_matches_the_cli(table_run, tmp_path):
    from vaekit import runs

    run, path = table_run
    out = tmp_path / "cli.csv"
    assert cli.main(["impute", str(run), "--data", str(path), "-o", str(out), "-k", "6"]) == 0
    imputer = MIWAEImputer.from_run(runs.open_run(run), k=6)
    done = imputer.transform(pd.read_csv(path).drop(columns="id"))
    expected = pd.read_csv(out).drop(columns="id")
    pd.testing.assert_frame_equal(done.reset_index(drop=True), expected, check_dtype=False)
    with pytest.raises(ValueError, match="not trained on a table"):  # a run without a table schema
        MIWAEImputer.from_run(type("NoTable", (), {"schema": None, "path": "runs/sine"})())
