"""Priors, posteriors, two stochastic layers and the conditional VAE: each against a closed form or
an independent computation, each through evaluate, log_marginal and checkpoints."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

import vaekit
from vaekit import checkpoint, objectives
from vaekit.evaluation import GapConfig, evaluate
from vaekit.posteriors import IAF, Diagonal, FullCovariance, draw
from vaekit.priors import MixtureOfGaussians, StandardNormal
from vaekit.spec import ModelSpec, build_model, iaf_steps
from vaekit.train import TrainConfig, fit

VARIANTS = [
    dict(),
    dict(prior="mog", n_components=3),
    dict(prior="vamp", n_components=4),
    dict(posterior="full"),
    dict(posterior="iaf", iaf_steps=2),
    dict(layers=2, top_dim=2),
    dict(condition_dim=3),
    dict(condition_dim=3, conditional_prior=True, posterior="iaf"),
]


def _spec(**kw):
    return ModelSpec(data_shape=(10,), latent_dim=3, hidden=(16,), likelihood="bernoulli", **kw)


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 10, generator=g) > 0.5).float(), torch.randint(0, 3, (n,), generator=g)


def _perturb(model, seed=0):
    """Random non-zero weights everywhere (zero-initialised flow steps included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


# -- priors ------------------------------------------------------------------------------
def test_mixture_with_one_standard_component_equals_standard_prior(linear_gaussian):
    a = linear_gaussian.model()
    b = linear_gaussian.model()
    b.prior = MixtureOfGaussians(linear_gaussian.h, n_components=1)  # starts at N(0, I)
    x = linear_gaussian.sample(16)
    z = torch.randn(5, 16, linear_gaussian.h)
    torch.testing.assert_close(b.p_z().log_prob(z), a.p_z().log_prob(z))
    noise = torch.randn(200, linear_gaussian.h)
    la, lb = objectives.log_marginal(a, x, k=200, noise=noise), objectives.log_marginal(b, x, k=200, noise=noise)
    torch.testing.assert_close(lb.log_px, la.log_px)
    torch.testing.assert_close(lb.stderr, la.stderr)
    # the ELBO: the mixture's KL is Monte Carlo; on the same draws it equals log q - log N(0, I)
    torch.manual_seed(3)
    eb = objectives.elbo(b, x, n_samples=4)
    torch.manual_seed(3)
    qz = a.q_z(x)
    zs = qz.rsample((4,))
    expected = (a.log_px_z(zs, x) + a.p_z().log_prob(zs) - qz.log_prob(zs)).mean(0)
    torch.testing.assert_close(eb.elbo, expected)
    # and the standard prior's closed-form KL is the mean of the mixture's Monte Carlo one
    with torch.no_grad():
        torch.manual_seed(4)
        ea = objectives.elbo(a, x, n_samples=4000)
        torch.manual_seed(4)
        eb = objectives.elbo(b, x, n_samples=4000)
    torch.testing.assert_close(eb.log_px_z, ea.log_px_z)
    assert float((ea.kl - eb.kl).abs().max()) < 0.1


def test_vamp_prior_is_the_mixture_of_posteriors_at_pseudo_inputs():
    model = _perturb(build_model(_spec(prior="vamp", n_components=4)))
    z = torch.randn(7, 5, 3)
    h = model.encoder(model.prior.pseudo_inputs)  # (K, 6)
    loc, scale = h[:, :3], h[:, 3:].exp()
    per_component = Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (7, 5, K)
    expected = torch.logsumexp(per_component, -1) - math.log(4)
    torch.testing.assert_close(model.p_z().log_prob(z), expected)
    # the pseudo-inputs are learned: the ELBO has a gradient on them
    x, _ = _data()
    objectives.elbo(model, x).elbo.sum().backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


# -- posteriors ---------------------------------------------------------------------------
def test_iaf_with_zero_initialised_steps_equals_the_diagonal_gaussian():
    h = torch.randn(6, 9)
    iaf, diag = IAF(3, iaf_steps(3, 3))(h), Diagonal(3)(h[:, :6])
    eps = torch.randn(4, 6, 3)
    z_iaf, log_q = draw(iaf, noise=eps)
    torch.testing.assert_close(z_iaf, diag.from_noise(eps))
    torch.testing.assert_close(log_q, diag.log_prob(z_iaf))
    other = torch.randn(4, 6, 3)  # not drawn from it: log_prob inverts the flow
    torch.testing.assert_close(iaf.log_prob(other), diag.log_prob(other))


def test_iaf_log_prob_is_the_change_of_variables_and_inverts_its_draws():
    torch.manual_seed(0)
    posterior = _perturb(IAF(3, iaf_steps(3, 2)))
    h = torch.randn(1, 9)
    q = posterior(h)
    eps = torch.randn(1, 3)
    z, log_q = draw(q, noise=eps)
    jac = torch.autograd.functional.jacobian(lambda e: q.from_noise(e.unsqueeze(0))[0], eps[0])  # dz/deps
    base = Normal(0.0, 1.0).log_prob(eps).sum()
    torch.testing.assert_close(log_q[0], base - torch.linalg.slogdet(jac)[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(q.log_prob(z.clone()), log_q, atol=1e-4, rtol=1e-4)  # by inversion


def test_full_covariance_log_prob_matches_torch_multivariate_normal():
    h = torch.randn(
        5, FullCovariance(3).n_params(), dtype=torch.float64
    )  # 3 means, 3 log-diagonals, 3 below the diagonal
    q = FullCovariance(3)(h)
    L = q.scale_tril
    assert torch.equal(L, L.tril()) and bool((L.diagonal(dim1=-2, dim2=-1) > 0).all())
    torch.testing.assert_close(L.diagonal(dim1=-2, dim2=-1), h[:, 3:6].exp())
    reference = MultivariateNormal(h[:, :3], covariance_matrix=L @ L.transpose(-1, -2))
    z = torch.randn(8, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z))
    eps = torch.randn(8, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(q.from_noise(eps), h[:, :3] + (L @ eps.unsqueeze(-1)).squeeze(-1))


def _correlated_posterior_model(lg, family):
    """The linear-Gaussian model with its encoder set to the best q of ``family``: the exact
    posterior for full covariance, the mean-field optimum (exact mean, precision's diagonal) for diagonal."""
    M = lg.W.T @ lg.W + lg.sigma**2 * torch.eye(lg.h)
    A = torch.linalg.solve(M, lg.W.T)
    cov = lg.sigma**2 * torch.linalg.inv(M)
    posterior = FullCovariance(lg.h) if family == "full" else Diagonal(lg.h)
    encoder = nn.Linear(lg.d, posterior.n_params())
    decoder = nn.Linear(lg.h, lg.d)
    with torch.no_grad():
        decoder.weight.copy_(lg.W)
        decoder.bias.copy_(lg.b)
        encoder.weight.zero_()
        encoder.weight[: lg.h] = A
        encoder.bias.zero_()
        encoder.bias[: lg.h] = -A @ lg.b
        if family == "full":
            L = torch.linalg.cholesky(cov)
            encoder.bias[lg.h : 2 * lg.h] = L.diagonal().log()
            rows, cols = torch.tril_indices(lg.h, lg.h, offset=-1)
            encoder.bias[2 * lg.h :] = L[rows, cols]
        else:
            encoder.bias[lg.h :] = -0.5 * (M / lg.sigma**2).diagonal().log()
    model = vaekit.Model(
        encoder,
        decoder,
        vaekit.likelihoods.Gaussian(lg.sigma),
        posterior=posterior,
        latent_dim=lg.h,
        data_shape=(lg.d,),
    )
    return model, cov


def _correlated_lg():
    from conftest import LinearGaussian

    lg = LinearGaussian(d=4, h=2, sigma=0.5)
    lg.W = torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.5, 0.3], [1.0, 1.2]])  # near-parallel columns: correlated z
    return lg


def _iaf_model(lg, steps=200):
    """An IAF posterior (2 MADE steps) trained on the ELBO of the linear-Gaussian model, its decoder fixed."""
    torch.manual_seed(0)
    posterior = IAF(lg.h, iaf_steps(lg.h, 2))
    model = vaekit.Model(
        nn.Linear(lg.d, posterior.n_params()),
        nn.Linear(lg.h, lg.d),
        vaekit.likelihoods.Gaussian(lg.sigma),
        posterior=posterior,
        latent_dim=lg.h,
        data_shape=(lg.d,),
    )
    with torch.no_grad():
        model.decoder.weight.copy_(lg.W)
        model.decoder.bias.copy_(lg.b)
    model.decoder.requires_grad_(False)
    x = lg.sample(128, seed=7)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        (-objectives.elbo(model, x, n_samples=4, grad=True).elbo.mean()).backward()
        opt.step()
    return model


def _mean_field_gap(lg) -> float:
    """KL(q_mf || posterior) of the best diagonal Gaussian, the same for every x:
    (tr(P S) - h + log det Sigma - log det S) / 2 with P the posterior precision, S = diag(1 / P_jj)."""
    M = lg.W.T @ lg.W + lg.sigma**2 * torch.eye(lg.h)
    cov = lg.sigma**2 * torch.linalg.inv(M)
    P = torch.linalg.inv(cov)
    S = torch.diag(1 / P.diagonal())
    return 0.5 * float(torch.trace(P @ S) - lg.h + torch.logdet(cov) - torch.logdet(S))


def test_approximation_gap_by_family_on_a_correlated_posterior():
    """evaluate's own gaps, with log p(x) known exactly: the approximation gap is what the posterior
    family costs, ~0 for full covariance, the closed-form mean-field KL for the diagonal Gaussian, in
    between (near full) for an IAF; the gaps' importance-sampled log p(x) is right for every family."""
    lg = _correlated_lg()
    x = lg.sample(6)
    exact = lg.log_px(x).double().numpy()
    kl_mf = _mean_field_gap(lg)
    assert kl_mf > 0.3  # the posterior is strongly correlated
    cfg = GapConfig(steps=300, final_samples=2000)
    models = {
        "diagonal": _correlated_posterior_model(lg, "diagonal")[0],
        "full": _correlated_posterior_model(lg, "full")[0],
        "iaf": _iaf_model(lg),
    }
    gaps = {}
    for family, model in models.items():
        r = evaluate(model, x, iw_samples=1000, gaps=cfg, seed=1)
        g = r.gaps
        assert f"q* ({family})" in g.log_px.estimator and "the model's own q(z|x)" in g.log_px.estimator
        assert np.all(np.abs(g.log_px.values - exact) < 4 * g.log_px.mc_stderr + 0.01), (family, g.log_px.values, exact)
        # the decomposition adds up exactly, and each gap is >= 0 within its error
        np.testing.assert_allclose(
            g.log_px.values - g.elbo_encoder.values, g.approximation.values + g.amortisation.values, atol=1e-9
        )
        assert np.all(g.amortisation.values > -4 * g.amortisation.mc_stderr - 0.01), family
        gaps[family] = g.approximation
    diag, full, iaf = gaps["diagonal"], gaps["full"], gaps["iaf"]
    assert np.all(np.abs(diag.values - kl_mf) < 4 * diag.mc_stderr + 0.02), (diag.values, kl_mf)
    assert np.all(np.abs(full.values) < 4 * full.mc_stderr + 0.01), full.values
    assert -4 * iaf.mean_mc_stderr - 0.01 < iaf.mean < 0.5 * kl_mf, (iaf.mean, kl_mf)


# -- two stochastic layers ------------------------------------------------------------------
def _linear_two_layer(seed=0):
    """layers=2 with linear networks and z1's prior scale fixed: a linear-Gaussian model,
    z2 ~ N(0, I), z1 ~ N(A z2 + a, diag s^2), x ~ N(W z1 + b, sigma^2 I)."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        data_shape=(4,), latent_dim=2, top_dim=1, layers=2, hidden=(), likelihood={"name": "gaussian", "scale": 0.5}
    )
    model = build_model(spec)
    lower = model.prior.lower.net[0]
    with torch.no_grad():
        lower.weight[2:] = 0  # log s does not depend on z2
        lower.bias[2:] = math.log(0.7)
    W, b = model.decoder.inner.net[0].weight, model.decoder.inner.net[0].bias
    A, a = lower.weight[:2], lower.bias[:2]
    cov_z1 = A @ A.T + 0.49 * torch.eye(2)
    px = MultivariateNormal(W @ a + b, W @ cov_z1 @ W.T + 0.25 * torch.eye(4))
    return model, px


def _fit_posterior(model, x, steps=300):
    """Train q(z1|x) q(z2|z1) alone (the generative model stays the closed-form one) on IWAE_10."""
    params = list(model.encoder.parameters()) + list(model.posterior.parameters())
    opt = torch.optim.Adam(params, lr=0.02)
    torch.manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        (-objectives.iwae_bound(model, x, k=10).mean()).backward()
        opt.step()
    return model


def test_two_layer_bounds_are_ordered_below_the_exact_log_likelihood():
    model, px = _linear_two_layer()
    with torch.no_grad():
        x = px.sample((64,))
        exact = px.log_prob(x).mean().item()
        torch.manual_seed(0)
        elbo = objectives.elbo(model, x, n_samples=200).elbo.mean().item()
        iwae = {k: objectives.log_marginal(model, x, k=k).log_px.mean().item() for k in (5, 50, 5000)}
    assert elbo < iwae[5] < iwae[50] < iwae[5000] <= exact + 0.02
    assert exact - iwae[5000] < 0.2 * (exact - elbo)  # IWAE_k approaches log p(x) as k grows
    # encode gives (z1, z2) by default (what decode takes), the top layer z2 or z1 on request
    assert model.encode(x).shape == (64, 3) and model.decode(model.encode(x)).shape == (64, 4)
    assert model.encode(x, layer="top").shape == (64, 1) and model.encode(x, layer="bottom").shape == (64, 2)
    torch.testing.assert_close(model.encode(x, layer="top"), model.encode(x)[:, 2:])


def test_two_layer_log_marginal_converges_to_exact():
    model, px = _linear_two_layer(seed=1)
    x = px.sample((8,))
    _fit_posterior(model, x)
    lm = objectives.log_marginal(model, x, k=20000)
    err = (lm.log_px - px.log_prob(x)).abs()
    assert bool((err < 4 * lm.stderr + 0.01).all()), (err, lm.stderr)


# -- the conditional VAE --------------------------------------------------------------------
@pytest.mark.slow
def test_conditional_samples_are_recognised_by_a_digit_classifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x, y = (digits.data / 16 > 0.5).astype(np.float32), digits.target
    model = build_model(
        ModelSpec(data_shape=(64,), latent_dim=8, hidden=(128,), likelihood="bernoulli", condition_dim=10)
    )
    fit(model, x, config=TrainConfig(epochs=25, batch_size=64, lr=3e-3, seed=0, progress=False), condition=y)
    classifier = LogisticRegression(max_iter=2000).fit(x, y)
    labels = np.repeat(np.arange(10), 20)
    torch.manual_seed(0)
    samples = model.sample(len(labels), c=torch.as_tensor(labels)).numpy()
    accuracy = (classifier.predict(samples) == labels).mean()
    assert accuracy > 0.8, accuracy  # chance is 0.1
    one = model.sample(20, c=7).numpy()  # one condition for all
    assert (classifier.predict(one) == 7).mean() > 0.6


def test_conditional_model_bounds_and_errors():
    model = _perturb(build_model(_spec(condition_dim=3, conditional_prior=True)))
    x, c = _data()
    lm = objectives.log_marginal(model, x, k=50, c=c)
    onehot = nn.functional.one_hot(c, 3).float()
    torch.manual_seed(0)
    a = objectives.log_marginal(model, x, k=50, c=onehot).log_px
    torch.manual_seed(0)
    b = objectives.log_marginal(model, x, k=50, c=c).log_px
    torch.testing.assert_close(a, b)  # labels are one-hot vectors
    # the batched estimate is per example: a different condition changes log p(x|c)
    other = objectives.log_marginal(model, x, k=50, c=(c + 1) % 3).log_px
    assert not torch.allclose(other, lm.log_px)
    assert objectives.elbo(model, x, c=c).elbo.shape == (40,)
    with pytest.raises(ValueError, match="conditional: give the condition"):
        objectives.elbo(model, x)
    with pytest.raises(ValueError, match="class labels must be integers in"):
        objectives.elbo(model, x, c=c + 3)
    with pytest.raises(ValueError, match="got 39 conditions for 40 examples"):
        objectives.elbo(model, x, c=c[:39])
    with pytest.raises(ValueError, match="not conditional"):
        objectives.elbo(build_model(_spec()), x, c=c)
    with pytest.raises(ValueError, match="needs condition="):
        fit(model, x.numpy(), epochs=1, progress=False)
    assert model.sample(5, c=2).shape == (5, 10)


# -- every variant: evaluate, save/load, resume ------------------------------------------------
@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "vae")
def test_variant_trains_evaluates_and_round_trips(kw, tmp_path):
    spec = _spec(**kw)
    model = build_model(spec)
    x, c = _data()
    cond = dict(condition=c.numpy()) if spec.condition_dim else {}
    history = fit(
        model, x.numpy(), config=TrainConfig(epochs=2, batch_size=20, iw_samples=3, progress=False), **cond
    ).history
    assert all(math.isfinite(r["train_elbo"]) for r in history)
    path = checkpoint.save(model, tmp_path / "m.safetensors")
    loaded = checkpoint.load(path)
    assert loaded.spec == model.spec and loaded.spec.posterior == spec.posterior and loaded.spec.prior == spec.prior
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    cond = dict(c=c) if spec.condition_dim else {}
    torch.manual_seed(5)
    a = objectives.log_marginal(model, x, k=30, **cond)
    torch.manual_seed(5)
    b = objectives.log_marginal(loaded, x, k=30, **cond)
    torch.testing.assert_close(a.log_px, b.log_px)
    if not spec.condition_dim:
        r = evaluate(model, x[:8], iw_samples=50, gaps=GapConfig(steps=20, final_samples=10))
        assert math.isfinite(r.log_px.mean) and math.isfinite(r.gaps.approximation.mean)
        assert r.elbo.mean <= r.log_px.mean + 1.0
        r.to_dict()


def test_resume_of_a_variant_continues_exactly(tmp_path):
    spec = _spec(posterior="iaf", prior="mog", n_components=2)
    x, _ = _data(60)
    cfg = TrainConfig(epochs=4, batch_size=20, seed=1, progress=False)
    torch.manual_seed(0)
    full = build_model(spec)
    fit(full, x.numpy(), config=cfg)

    def stop(model, state):
        if state.epoch == 2:
            checkpoint.save_trainer(tmp_path / "t.safetensors", model, state)
            raise KeyboardInterrupt

    torch.manual_seed(0)
    part = build_model(spec)
    with pytest.raises(KeyboardInterrupt):
        fit(part, x.numpy(), config=cfg, callbacks=[stop])
    resumed = build_model(spec)
    fit(resumed, x.numpy(), config=cfg, resume=checkpoint.load_trainer(tmp_path / "t.safetensors", resumed))
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# -- the spec: fields, checks, conflicts ---------------------------------------------------------
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(prior="laplace"), "setting prior='laplace' is not allowed: expected one of normal, mog, vamp"),
        (dict(posterior="flow"), "setting posterior='flow' is not allowed: expected one of diagonal, full, iaf"),
        (dict(layers=3), "setting layers=3 is not allowed"),
        (dict(n_components=5), "n_components=5 applies only to prior mog or vamp"),
        (dict(prior="mog", n_components=0), "setting n_components=0 is not allowed"),
        (dict(iaf_steps=2), "iaf_steps=2 applies only to posterior iaf"),
        (dict(top_dim=2), "top_dim=2 applies only to layers 2"),
        (dict(layers=2, prior="vamp"), "layers=2 conflicts with prior='vamp'"),
        (dict(layers=2, posterior="iaf"), "layers=2 conflicts with posterior='iaf'"),
        (dict(layers=2, condition_dim=3), "layers=2 conflicts with condition_dim=3"),
        (dict(prior="vamp", posterior="full"), "prior='vamp' conflicts with posterior='full'"),
        (dict(conditional_prior=True), "conditional_prior=True needs a conditional model"),
        (dict(condition_dim=3, prior="mog"), "condition_dim=3 conflicts with prior='mog'"),
        (dict(condition_dim=-1), "setting condition_dim=-1 is not allowed"),
    ],
)
def test_spec_refuses_invalid_and_conflicting_variants(kw, message):
    with pytest.raises(ValueError, match=message):
        _spec(**kw)


def test_spec_conv_refuses_condition_and_defaults_resolve():
    with pytest.raises(ValueError, match="condition_dim=2 conflicts with network='conv'"):
        ModelSpec(data_shape=(1, 8, 8), network="conv", condition_dim=2)
    with pytest.raises(ValueError, match="condition_dim=2 conflicts with network='conv'"):  # auto picked conv
        build_model(ModelSpec(data_shape=(1, 8, 8), condition_dim=2))
    assert _spec(prior="vamp").n_components == 10 and _spec(posterior="iaf").iaf_steps == 2
    assert _spec(layers=2).top_dim == 1
    spec = _spec(posterior="iaf", prior="mog")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in _spec().to_dict().items() if k not in ("prior", "posterior", "layers", "n_components")}
    assert ModelSpec.from_dict(old) == _spec()  # a checkpoint spec from before the variants


def test_free_bits_need_a_factorised_family():
    model = build_model(_spec(posterior="full"))
    with pytest.raises(ValueError, match="free bits need a KL per latent unit"):
        objectives.elbo(model, _data()[0], free_bits=0.1)


def test_user_prior_without_arguments_still_works(linear_gaussian):
    class Shifted(nn.Module):
        latent_dim = 2

        def forward(self):
            return StandardNormal(2)()

    model = linear_gaussian.model()
    model.prior = Shifted()
    assert objectives.elbo(model, linear_gaussian.sample(4)).elbo.shape == (4,)


# -- the command line: flags from the ModelSpec fields --------------------------------------------
def _cli(*argv):
    from vaekit.cli import main

    try:
        return main(list(argv))
    except SystemExit as e:
        return e.code


def test_cli_trains_and_resumes_a_variant_and_refuses_a_conflict(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [
        "train",
        "--data",
        "digits",
        "--binarize",
        "--hidden",
        "16",
        "--latent-dim",
        "3",
        "--no-progress",
        "--no-figures",
        "--posterior",
        "iaf",
        "--prior",
        "mog",
        "--n-components",
        "3",
    ]
    assert _cli(*common, "--epochs", "3", "--out", "a") == 0
    assert _cli(*common, "--epochs", "2", "--out", "b") == 0
    assert _cli("train", "--resume", "b", "--epochs", "3", "--no-progress", "--no-figures") == 0
    a, b = vaekit.load(tmp_path / "a"), vaekit.load(tmp_path / "b")
    assert a.spec.posterior == "iaf" and a.spec.prior == "mog" and a.spec.n_components == 3
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    capsys.readouterr()
    assert _cli("train", "--layers", "2", "--posterior", "full", "--epochs", "1", "--out", "c") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers=2 conflicts with posterior='full'" in err[0]
    assert not (tmp_path / "c").exists()
