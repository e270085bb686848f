import json
import math

import numpy as np
import pytest
import torch
from conftest import LinearGaussian
from torch import nn

import vaekit
from vaekit.batches import inference
from vaekit.cli import main
from vaekit.evaluation import GapConfig
from vaekit.objectives import elements_per_draw


# -- closed forms for the linear-Gaussian model ----------------------------------------------
def posterior(lg, x):
    """Exact posterior of z given x: mean (N, H) and covariance (H, H)."""
    precision = lg.W.T @ lg.W / lg.sigma**2 + torch.eye(lg.h)
    cov = torch.linalg.inv(precision)
    mean = ((x - lg.b) @ lg.W / lg.sigma**2) @ cov
    return mean, cov


def kl_to_posterior(loc, var, mean, cov):
    """KL(N(loc, diag var) || N(mean, cov)) per example."""
    prec = torch.linalg.inv(cov)
    diff = mean - loc
    h = cov.shape[0]
    return 0.5 * (
        (prec.diagonal() * var).sum(-1) + ((diff @ prec) * diff).sum(-1) - h + torch.logdet(cov) - var.log().sum(-1)
    )


def perturbed_encoder_model(lg, shift=0.3, log_scale_shift=0.4):
    """The exact posterior mean plus a shift, and too wide scales: an imperfect amortised encoder."""
    model = lg.model(exact_posterior=True)
    with torch.no_grad():
        model.encoder.bias[: lg.h] += shift
        model.encoder.bias[lg.h :] += log_scale_shift
    return model


def correlated_lg():
    # nearly parallel columns of W: a posterior correlation of -0.88, which no diagonal Gaussian
    # reaches (the best one is 0.75 nats away from it)
    lg = LinearGaussian(d=4, h=2, sigma=0.5)
    lg.W = torch.tensor([[1.0, 0.8], [1.0, 1.2], [0.5, 0.3], [-1.0, -0.6]])
    return lg


def orthogonal_lg():
    # orthogonal columns of W make the true posterior covariance diagonal
    lg = LinearGaussian(d=4, h=2, sigma=0.5)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(5)))
    lg.W = q * torch.tensor([2.0, 1.0])
    return lg


# -- log p(x) and the bounds -------------------------------------------------------------------
def test_log_px_converges_to_the_exact_value_and_lies_above_the_elbo():
    lg = LinearGaussian(d=4, h=2, sigma=0.5)
    model = perturbed_encoder_model(lg)
    x = lg.sample(24)
    r = vaekit.evaluate(model, x, iw_samples=5000, iwae_k=(5, 50), elbo_samples=200, seed=1)
    exact = lg.log_px(x).double().numpy()
    assert r.log_px.samples == 5000 and "k=5000" in r.log_px.estimator
    assert np.all(np.abs(r.log_px.values - exact) < 5 * r.log_px.mc_stderr + 0.01)
    assert abs(r.log_px.mean - exact.mean()) < 5 * r.log_px.mean_mc_stderr + 0.005
    # the ELBO against its closed form log p(x) - KL(q || posterior), within its own standard error
    qz = model.q_z(x)
    mean, cov = posterior(lg, x)
    elbo_exact = exact - kl_to_posterior(qz.mean, qz.variance, mean, cov).detach().double().numpy()
    assert np.all(np.abs(r.elbo.values - elbo_exact) < 5 * r.elbo.mc_stderr + 1e-4)
    assert r.elbo.samples == 200 and "200-sample" in r.elbo.estimator
    # ordering: ELBO < IWAE_5 < IWAE_50 < log p(x) on average, each below the truth
    assert r.elbo.mean < r.iwae[5].mean < r.iwae[50].mean < r.log_px.mean < exact.mean() + 0.01
    assert np.all(r.log_px.values > r.elbo.values)
    np.testing.assert_allclose(r.elbo.values, r.log_px_z.values - r.kl.values, atol=1e-9)


def test_log_marginal_sample_chunks_do_not_change_the_numbers_and_memory_stays_bounded(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(10)
    per = elements_per_draw(model, x)
    seen = []
    decode = model.decode_params

    def spy(z):
        seen.append(math.prod(z.shape[:-1]))
        return decode(z)

    model.decode_params = spy
    # one example per batch: 3000 draws decoded in chunks of 200, or all at once
    torch.manual_seed(0)
    small = vaekit.log_marginal(model, x, k=3000, batch_size=1, max_elements=200 * per)
    assert max(seen) == 200 and len(seen) == 10 * 15  # really chunked, never above the budget
    seen.clear()
    torch.manual_seed(0)
    large = vaekit.log_marginal(model, x, k=3000, batch_size=1, max_elements=10**9)
    assert max(seen) == 3000
    torch.testing.assert_close(small.log_px, large.log_px, atol=1e-5, rtol=0)
    # batch_size=None picks the examples per batch from the budget
    seen.clear()
    torch.manual_seed(0)
    vaekit.log_marginal(model, x, k=100, max_elements=400 * per)
    assert seen and all(s <= 400 for s in seen) and max(seen) == 400  # 4 examples x 100 draws per call


def test_bits_per_dim_and_collapse_of_a_decoder_that_ignores_z():
    # decoder: constant zero logits whatever z, so p(x|z) = 2^-D and log p(x) = -D ln 2 exactly;
    # encoder: q(z|x) = p(z). The posterior has collapsed completely.
    d, h = 16, 3
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * h))
    decoder = nn.Sequential(nn.Linear(h, d), nn.Unflatten(1, (4, 4)))
    for layer in (encoder[1], decoder[0]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    model = vaekit.Model(encoder, decoder, vaekit.likelihoods.Bernoulli(), latent_dim=h, data_shape=(4, 4))
    x = (torch.rand(50, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    r = vaekit.evaluate(model, x, iw_samples=100)
    np.testing.assert_allclose(r.log_px.values, -d * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(r.log_px.mc_stderr, 0, atol=1e-6)  # float64 sums  # equal weights: no Monte Carlo error
    assert r.bits_per_dim is not None  # images: (4, 4) data
    np.testing.assert_allclose(r.bits_per_dim.values, 1.0, rtol=1e-6)
    assert r.n_active == 0 and r.kl.mean == 0
    assert r.collapse == "full" and r.collapsed
    assert any("posterior collapse" in w for w in r.warnings)
    assert r.to_dict()["posterior_collapse"]["collapsed"] is True
    # flat data: no bits per dimension unless asked
    flat = vaekit.Model(encoder[1], decoder[0], vaekit.likelihoods.Bernoulli(), latent_dim=h, data_shape=(d,))
    assert vaekit.evaluate(flat, x.reshape(50, d), iw_samples=10).bits_per_dim is None
    assert vaekit.evaluate(flat, x.reshape(50, d), iw_samples=10, bits_per_dim=True).bits_per_dim.mean == pytest.approx(
        1.0
    )


# -- trained digits models ---------------------------------------------------------------------
def _train_digits(train, beta, seed=0):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(
        data_shape=(64,), latent_dim=4, hidden=(64,), activation="relu", likelihood={"name": "bernoulli"}
    )
    model = vaekit.build_model(spec)
    vaekit.fit(
        model,
        train,
        None,
        vaekit.TrainConfig(epochs=15, batch_size=64, lr=3e-3, beta=beta, seed=seed, progress=False, device="cpu"),
    )
    return model


@pytest.fixture(scope="module")
def digits_models():
    ds = vaekit.datasets.digits(binarize=True)
    train, test = ds.x[:400], ds.x[400:520]
    return {"healthy": _train_digits(train, 1.0), "beta": _train_digits(train, 30.0), "test": test}


def test_a_trained_digits_model_has_active_units_and_a_large_beta_collapses(digits_models):
    test = digits_models["test"]
    healthy = vaekit.evaluate(digits_models["healthy"], test, iw_samples=200)
    assert healthy.n_active >= 2 and healthy.collapse != "full" and healthy.kl.mean > 1.0
    # active units against an independent computation from the encoder means
    means = digits_models["healthy"].encode(torch.as_tensor(test)).numpy()
    np.testing.assert_array_equal(healthy.active_units, means.var(0, ddof=1) > 0.01)
    # KL per unit: the textbook formula, summed over units gives the KL
    mu, sd = (t.numpy() for t in digits_models["healthy"].encode(torch.as_tensor(test), return_scale=True))
    formula = 0.5 * (mu**2 + sd**2 - 1 - 2 * np.log(sd))
    np.testing.assert_allclose(healthy.kl_per_unit, formula, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(healthy.kl_per_unit.sum(1), healthy.kl.values, rtol=1e-5, atol=1e-5)

    collapsed = vaekit.evaluate(digits_models["beta"], test, iw_samples=200)
    assert collapsed.collapse == "full" and collapsed.kl.mean < 0.1 and collapsed.n_active == 0
    assert any("posterior collapse" in w for w in collapsed.warnings)
    assert healthy.log_px.mean > collapsed.log_px.mean + 0.3  # the collapsed model also fits worse


def test_same_seed_same_numbers_and_the_global_random_state_is_left_alone(digits_models):
    model, test = digits_models["healthy"], digits_models["test"][:40]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = vaekit.evaluate(model, test, iw_samples=50, seed=7, gaps=GapConfig(steps=60, check_every=20, final_samples=20))
    after = torch.rand(3)
    b = vaekit.evaluate(model, test, iw_samples=50, seed=7, gaps=GapConfig(steps=60, check_every=20, final_samples=20))
    c = vaekit.evaluate(model, test, iw_samples=50, seed=8)
    assert torch.equal(before, after)
    assert json.dumps(a.to_dict(per_example=True)) == json.dumps(b.to_dict(per_example=True))
    assert not np.array_equal(a.log_px.values, c.log_px.values)
    d = a.to_dict(per_example=True)
    assert len(d["log_px"]["values"]) == 40 and d["log_px"]["samples"] == 50 and "estimator" in d["elbo"]


# -- the inference gaps ------------------------------------------------------------------------
PRECISE = GapConfig(final_samples=4000)


def test_gap_decomposition_matches_the_closed_form_when_the_posterior_is_not_diagonal():
    lg = correlated_lg()
    model = perturbed_encoder_model(lg)
    x = lg.sample(24)
    r = vaekit.evaluate(model, x, iw_samples=3000, elbo_samples=100, gaps=PRECISE, seed=2)
    g = r.gaps
    exact = lg.log_px(x).double().numpy()
    mean, cov = posterior(lg, x)
    precision = torch.linalg.inv(cov)
    # the best diagonal Gaussian: the posterior mean with variances 1 / diag(precision)
    kl_star = kl_to_posterior(mean, (1 / precision.diagonal()).expand_as(mean), mean, cov).double().numpy()
    qz = model.q_z(x)
    kl_enc = kl_to_posterior(qz.mean, qz.variance, mean, cov).detach().double().numpy()
    assert kl_star.min() > 0.5  # the family really cannot reach the posterior here
    assert g.converged_fraction == 1.0
    # the decomposition adds up, exactly by construction and against an independent ELBO estimate
    np.testing.assert_allclose(
        g.log_px.values - g.elbo_encoder.values, g.approximation.values + g.amortisation.values, atol=1e-9
    )
    total = g.log_px.mean - r.elbo.mean
    assert abs(total - (g.approximation.mean + g.amortisation.mean)) < 4 * r.elbo.mean_mc_stderr + 0.01
    # each gap against its closed form, within the Monte Carlo error (+0.02 nats of optimisation slack)
    assert np.all(np.abs(g.log_px.values - exact) < 4 * g.log_px.mc_stderr + 0.01)
    assert np.all(np.abs(g.approximation.values - kl_star) < 4 * g.approximation.mc_stderr + 0.02)
    assert np.all(np.abs(g.amortisation.values - (kl_enc - kl_star)) < 4 * g.amortisation.mc_stderr + 0.02)
    assert np.all(g.approximation.values > -3 * g.approximation.mc_stderr)
    assert np.all(g.amortisation.values > -3 * g.amortisation.mc_stderr)


def test_approximation_gap_vanishes_when_the_true_posterior_is_diagonal():
    lg = orthogonal_lg()
    model = perturbed_encoder_model(lg)
    x = lg.sample(24)
    r = vaekit.evaluate(model, x, iw_samples=2000, gaps=PRECISE, seed=3)
    g = r.gaps
    mean, cov = posterior(lg, x)
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-6)
    qz = model.q_z(x)
    kl_enc = kl_to_posterior(qz.mean, qz.variance, mean, cov).detach().double().numpy()
    assert abs(g.approximation.mean) < 4 * g.approximation.mean_mc_stderr + 0.005
    assert np.all(np.abs(g.approximation.values) < 4 * g.approximation.mc_stderr + 0.02)
    assert np.all(np.abs(g.amortisation.values - kl_enc) < 4 * g.amortisation.mc_stderr + 0.02)
    assert g.amortisation.mean > 0.3  # the perturbed encoder is far from its best


def test_refinement_that_runs_out_of_steps_says_so():
    lg = orthogonal_lg()
    model = perturbed_encoder_model(lg, shift=2.0)
    x = lg.sample(8)
    r = vaekit.evaluate(model, x, iw_samples=100, gaps=GapConfig(steps=20, check_every=10))
    assert r.gaps.converged_fraction == 0.0 and np.all(r.gaps.steps_taken == 20)
    assert any("converged for 0%" in w for w in r.warnings)
    assert r.to_dict()["gaps"]["refinement"]["converged_fraction"] == 0.0


def test_bad_python_input_raises():
    lg = LinearGaussian()
    model = lg.model()
    with pytest.raises(ValueError, match="shape"):
        vaekit.evaluate(model, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="iw_samples"):
        vaekit.evaluate(model, lg.sample(5), iw_samples=-1)
    with pytest.raises(ValueError, match="NaN"):
        vaekit.evaluate(model, torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="steps"):
        GapConfig(steps=0)


# -- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    run = root / "run"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--binarize",
                "--epochs",
                "4",
                "--hidden",
                "32",
                "--latent-dim",
                "3",
                "--lr",
                "3e-3",
                "--no-progress",
                "--out",
                str(run),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return run


def test_vaekit_evaluate_prints_a_table_and_writes_metrics_json(digits_run, capsys):
    capsys.readouterr()
    before = json.loads((digits_run / "metrics.json").read_text())
    assert main(["evaluate", str(digits_run), "--iw-samples", "200", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for text in (
        "log p(x)",
        "IWAE_50",
        "ELBO",
        "KL(q(z|x) || p(z))",
        "bits/dim",
        "active",
        "k=200",
        "posterior collapse",
    ):
        assert text in out, text
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["train"] == before["train"] and metrics["val"] == before["val"]  # training's keys kept
    assert metrics["estimator"] == before["estimator"]
    ev = metrics["evaluate"]
    assert ev["data"] == {"source": "digits test split", "n": 180}
    assert ev["log_px"]["samples"] == 200 and ev["elbo"]["mean"] < ev["log_px"]["mean"] < 0
    assert ev["active_units"]["count"] >= 1 and len(ev["kl_per_unit"]["mean"]) == 3
    assert ev["bits_per_dim"]["mean"] == pytest.approx(-ev["log_px"]["mean"] / (64 * math.log(2)))
    # the printed mean is the written one
    assert f"{ev['log_px']['mean']:.4f}" in out


def test_vaekit_evaluate_json_is_reproducible_and_has_the_gaps(digits_run, capsys):
    argv = [
        "evaluate",
        str(digits_run),
        "--iw-samples",
        "50",
        "--iwae",
        "5",
        "--gaps",
        "--gap-steps",
        "40",
        "--json",
        "--seed",
        "4",
        "--no-save",
        "--device",
        "cpu",
    ]
    capsys.readouterr()
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert first == second
    gaps = first["gaps"]
    assert gaps["refinement"]["steps"] == 40 and "criterion" in gaps["refinement"]
    assert gaps["amortisation"]["mean"] > -3 * gaps["amortisation"]["mc_stderr"]
    assert (
        abs(
            gaps["log_px"]["mean"]
            - gaps["elbo_encoder"]["mean"]
            - gaps["approximation"]["mean"]
            - gaps["amortisation"]["mean"]
        )
        < 1e-6
    )


@pytest.mark.parametrize("case", ["missing run", "wrong shape", "bad values"])
def test_vaekit_evaluate_bad_input_is_one_line_and_exit_2(digits_run, tmp_path, capsys, case):
    metrics_before = (digits_run / "metrics.json").read_bytes()
    if case == "missing run":
        argv, match = ["evaluate", str(tmp_path / "nowhere")], "not a vaekit run folder"
    elif case == "wrong shape":
        np.save(tmp_path / "x.npy", np.zeros((5, 10), dtype=np.float32))
        argv, match = ["evaluate", str(digits_run), "--data", str(tmp_path / "x.npy")], "shape"
    else:
        np.save(tmp_path / "x.npy", np.full((5, 64), 3.0, dtype=np.float32))
        argv, match = ["evaluate", str(digits_run), "--data", str(tmp_path / "x.npy")], "[0, 1]"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err
    assert (digits_run / "metrics.json").read_bytes() == metrics_before  # nothing written on refusal


def test_log_marginal_with_a_mixture_proposal_is_exact_where_the_narrow_one_is_not():
    # the best diagonal Gaussian of a correlated posterior is narrower than it: as a proposal its
    # importance weights are heavy-tailed and IWAE_k stays well below log p(x); a defensive mixture
    # with a doubly wide copy gets log p(x) right within its standard error
    lg = correlated_lg()
    x = lg.sample(16)
    model = lg.model()
    mean, cov = posterior(lg, x)
    narrow = (1 / torch.linalg.inv(cov).diagonal()).sqrt().expand_as(mean).contiguous()
    exact = lg.log_px(x)
    torch.manual_seed(0)
    alone = vaekit.log_marginal(model, x, k=2000, proposal=(mean, narrow))
    torch.manual_seed(0)
    mixed = vaekit.log_marginal(model, x, k=2000, proposal=[(mean, narrow), (mean, 2 * narrow)])
    assert "2-component" in mixed.estimator
    assert torch.all((mixed.log_px - exact).abs() < 4 * mixed.stderr + 0.01)
    assert (exact - alone.log_px).mean() > 0.08 > 3 * (exact - mixed.log_px).mean().abs()
    with pytest.raises(ValueError, match="shape"):
        vaekit.log_marginal(model, x, k=10, proposal=(mean[:3], narrow[:3]))


def test_elbo_keeps_a_graph_only_in_training(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(8)
    model.train()
    assert vaekit.elbo(model, x).elbo.requires_grad
    model.eval()
    terms = vaekit.elbo(model, x)
    assert not any(t.requires_grad for t in (terms.elbo, terms.log_px_z, terms.kl, terms.objective))
    model.train()
    with inference(model):
        assert not vaekit.elbo(model, x).elbo.requires_grad
    assert model.training  # the context restored the flag
    model.eval()
    kept = vaekit.elbo(model, x, grad=True).elbo  # e.g. to optimise through a frozen model
    kept.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # the numbers are the same either way (same draws)
    torch.manual_seed(0)
    a = vaekit.elbo(model, x).elbo
    torch.manual_seed(0)
    b = vaekit.elbo(model, x, grad=True).elbo.detach()
    torch.testing.assert_close(a, b)


def test_evaluate_a_float64_estimator_model():
    """The estimator keeps its model in float64; evaluate, the anomaly scores and generate follow the
    model's dtype instead of casting the data to float32."""
    from vaekit import anomaly, generate

    x = np.random.default_rng(0).normal(size=(80, 3))
    model = vaekit.VAE(epochs=2, latent_dim=2).fit(x).model_
    assert next(model.parameters()).dtype == torch.float64
    result = vaekit.evaluate(model, x, iw_samples=20, iwae_k=(), elbo_samples=2)
    assert np.isfinite(result.log_px.mean) and result.log_px.mean >= result.elbo.mean - 0.5
    for kind in anomaly.SCORES:
        assert torch.isfinite(anomaly.raw_score(model, torch.as_tensor(x[:5]), kind, n_samples=8)).all()
    mean, _ = generate.encode(model, x[:5].astype(np.float32))
    assert mean.shape == (5, 2) and generate.reconstruct(model, x[:5]).shape == (5, 3)


def test_vaekit_evaluate_is_callable_after_importing_its_module(linear_gaussian):
    import vaekit.evaluation as module  # the module has its own name, so the function stays vaekit.evaluate

    assert vaekit.evaluate is module.evaluate
    model, x = linear_gaussian.model(), linear_gaussian.sample(6)
    a = vaekit.evaluate(model, x, iw_samples=5, iwae_k=(), elbo_samples=2, seed=3)
    b = module.evaluate(model, x, iw_samples=5, iwae_k=(), elbo_samples=2, seed=3)
    np.testing.assert_array_equal(a.log_px.values, b.log_px.values)
