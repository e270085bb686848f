import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

import vaekit
from vaekit.objectives import kl_per_unit

pytestmark = pytest.mark.usefixtures("no_grad")


def test_closed_form_kl_agrees_with_monte_carlo():
    torch.manual_seed(0)
    loc, scale = torch.randn(3, 4), torch.rand(3, 4) + 0.3
    q = Independent(Normal(loc, scale), 1)
    p = vaekit.StandardNormal(4)()
    closed = kl_per_unit(q, p).sum(-1)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    np.testing.assert_allclose(closed.numpy(), mc.numpy(), atol=0.02)
    # and the textbook formula 0.5 * sum(mu^2 + s^2 - 1 - log s^2)
    formula = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    np.testing.assert_allclose(closed.numpy(), formula.numpy(), rtol=1e-5)


def test_bounds_are_ordered_and_tighten(linear_gaussian):
    lg = linear_gaussian
    model = lg.model()  # an arbitrary (untrained) encoder: a loose ELBO
    x = lg.sample(64)
    exact = lg.log_px(x).mean().item()
    torch.manual_seed(1)
    elbo = torch.stack([vaekit.elbo(model, x).elbo for _ in range(200)]).mean().item()
    iwae = {}
    for k in (1, 5, 50, 500):
        torch.manual_seed(2)
        iwae[k] = torch.stack([vaekit.iwae_bound(model, x, k) for _ in range(20)]).mean().item()
    assert elbo < exact
    assert abs(iwae[1] - elbo) < 0.05 * abs(elbo)  # IWAE_1 == ELBO in expectation
    assert iwae[1] < iwae[5] < iwae[50] < iwae[500] <= exact + 0.01
    assert exact - iwae[500] < 0.5 * (exact - elbo)


def test_iwae_1_equals_elbo_in_expectation(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(8)
    torch.manual_seed(3)
    elbos = torch.stack([vaekit.elbo(model, x).elbo for _ in range(4000)])
    iw1 = torch.stack([vaekit.iwae_bound(model, x, 1) for _ in range(4000)])
    se = (iw1.std(0) / math.sqrt(4000)).numpy()
    np.testing.assert_array_less(np.abs((elbos.mean(0) - iw1.mean(0)).numpy()), 4 * se + 1e-3)


def test_exact_posterior_makes_the_elbo_equal_log_px_when_posterior_is_diagonal():
    # W with orthogonal columns makes the true posterior covariance diagonal, so the
    # diagonal-Gaussian encoder holding the exact posterior gives ELBO == log p(x) exactly.
    from conftest import LinearGaussian

    lg = LinearGaussian(d=4, h=2, sigma=0.5)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(5)))
    lg.W = q * torch.tensor([2.0, 1.0])
    model = lg.model(exact_posterior=True)
    x = lg.sample(32)
    torch.manual_seed(0)
    elbo = vaekit.elbo(model, x, n_samples=20000).elbo
    np.testing.assert_allclose(elbo.numpy(), lg.log_px(x).numpy(), atol=0.03)


def test_log_marginal_converges_to_exact_with_standard_error(linear_gaussian):
    lg = linear_gaussian
    model = lg.model()
    x = lg.sample(16)
    torch.manual_seed(4)
    est = vaekit.log_marginal(model, x, k=20000, batch_size=8, max_elements=4096)
    exact = lg.log_px(x)
    assert est.k == 20000 and "importance" in est.estimator
    err = (est.log_px - exact).abs()
    assert torch.all(err < 5 * est.stderr + 0.02), (err, est.stderr)
    assert torch.all(est.stderr > 0)
    # chunking does not change the answer
    torch.manual_seed(4)
    again = vaekit.log_marginal(model, x, k=20000, batch_size=16, max_elements=10**9)
    assert torch.allclose(again.log_px, est.log_px, atol=5 * est.stderr.max().item())


def test_beta_and_free_bits_change_the_objective_not_the_elbo(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(32)
    torch.manual_seed(0)
    t1 = vaekit.elbo(model, x, beta=1.0)
    torch.manual_seed(0)
    t2 = vaekit.elbo(model, x, beta=0.25)
    torch.testing.assert_close(t1.elbo, t2.elbo)
    torch.testing.assert_close(t2.objective, t2.log_px_z - 0.25 * t2.kl)
    torch.manual_seed(0)
    t3 = vaekit.elbo(model, x, free_bits=100.0)  # floor above every unit's KL: KL term is constant
    kl_units_floor = 100.0 * model.latent_dim
    torch.testing.assert_close(t3.objective.mean(), t3.log_px_z.mean() - kl_units_floor)


def test_elbo_with_more_samples_has_lower_variance(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(4)
    torch.manual_seed(0)
    one = torch.stack([vaekit.elbo(model, x, n_samples=1).elbo for _ in range(300)]).var(0)
    many = torch.stack([vaekit.elbo(model, x, n_samples=16).elbo for _ in range(300)]).var(0)
    assert torch.all(many < one / 4)


def test_elbo_without_a_graph_goes_through_log_marginals_path_to_the_same_values(tiny_digits, monkeypatch):
    """Without autograd on a CPU, L draws of at least a block's outputs (20 x 50 x 1088) go through
    log p(x)'s own path (for this categorical MLP decoder the fused one, and decode_params is not
    called), fewer (2 draws) in one plain call; the terms are those of decoding them together with a
    graph, where the draws go to decode_params in one call."""
    from vaekit import likelihoods, objectives
    from vaekit.nets import MLP

    torch.manual_seed(0)
    model = vaekit.Model(
        MLP(64, 8, hidden=(32,)),
        MLP(4, 64 * 17, hidden=(32,)),
        likelihoods.Categorical(17),
        latent_dim=4,
        data_shape=(64,),
    )
    x = torch.as_tensor(vaekit.datasets.digits().x[:50])
    calls, fused = [], []
    decode = model.decode_params
    model.decode_params = lambda z, *a: (calls.append(z.shape[0]), decode(z, *a))[1]
    real = objectives._categorical_mlp_log_px_z
    monkeypatch.setattr(
        objectives, "_categorical_mlp_log_px_z", lambda d, lik, z, x: fused.append(z.shape) or real(d, lik, z, x)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        by_draw = vaekit.elbo(model, x, n_samples=20)
        vaekit.elbo(model, x, n_samples=2)
    assert calls == [2] and fused == [(20, 50, 4)]
    calls.clear()
    torch.manual_seed(1)
    with torch.enable_grad():
        together = vaekit.elbo(model, x, n_samples=20, grad=True)
    assert calls == [20] and together.elbo.requires_grad and len(fused) == 1
    for term in ("elbo", "log_px_z", "kl", "objective"):
        torch.testing.assert_close(getattr(by_draw, term), getattr(together, term).detach(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("no_grad", [False], indirect=True)
def test_loss_with_iw_samples_trains_on_iwae(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(16)
    torch.manual_seed(0)
    loss, terms = vaekit.objectives.loss(model, x, iw_samples=10)
    torch.manual_seed(0)
    ref = vaekit.iwae_bound(model, x, 10)
    torch.testing.assert_close(loss, -ref.mean())
    loss.backward()
    assert model.encoder.weight.grad is not None


class _StudentTPrior(torch.nn.Module):
    """A prior with no closed-form KL from a Gaussian: the ELBO must fall back to Monte Carlo."""

    latent_dim = 2

    def forward(self):
        return Independent(torch.distributions.StudentT(3.0, torch.zeros(2), torch.ones(2)), 1)


def test_kl_falls_back_to_monte_carlo_without_closed_form():
    from vaekit.nets import MLP

    torch.manual_seed(0)
    model = vaekit.Model(
        MLP(3, 4, ()), MLP(2, 3, ()), vaekit.likelihoods.Gaussian(1.0), prior=_StudentTPrior(), data_shape=(3,)
    )
    x = torch.randn(5, 3)
    qz = model.q_z(x)
    z = qz.sample((100_000,))
    reference = (qz.log_prob(z) - model.p_z().log_prob(z)).mean(0)
    terms = vaekit.elbo(model, x, n_samples=20_000)
    np.testing.assert_allclose(terms.kl.numpy(), reference.numpy(), atol=0.03)
