import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaekit import likelihoods as L


def _bound(lik, shape):
    return lik.bind(shape)


def test_bernoulli_matches_scipy():
    torch.manual_seed(0)
    logits = torch.randn(5, 6)
    x = (torch.rand(5, 6) > 0.5).float()
    lik = _bound(L.Bernoulli(), (6,))
    ours = lik.distribution(logits).log_prob(x)
    p = torch.sigmoid(logits).numpy()
    ref = stats.bernoulli.logpmf(x.numpy(), p).sum(1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lik.mean(logits).numpy(), p, rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, math.sqrt(0.03)])
def test_fixed_gaussian_keeps_log_2pi(scale):
    torch.manual_seed(1)
    mu, x = torch.randn(4, 3), torch.randn(4, 3)
    lik = _bound(L.Gaussian(scale), (3,))
    ours = lik.distribution(mu).log_prob(x).numpy()
    ref = stats.norm.logpdf(x.numpy(), mu.numpy(), scale).sum(1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    # the constant is really there: at x == mu the density is -D/2 log(2 pi sigma^2)
    at_mean = lik.distribution(mu).log_prob(mu)
    np.testing.assert_allclose(at_mean.numpy(), -1.5 * math.log(2 * math.pi * scale**2), rtol=1e-6)


def test_learned_gaussian_scale_is_a_parameter_and_matches_scipy():
    lik = _bound(L.Gaussian("learned"), (3,))
    assert lik.raw_scale is not None and lik.raw_scale.requires_grad
    with torch.no_grad():
        lik.raw_scale.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    scale = (1e-3 + torch.nn.functional.softplus(lik.raw_scale)).detach().numpy()
    mu, x = torch.randn(2, 3), torch.randn(2, 3)
    ref = stats.norm.logpdf(x.numpy(), mu.numpy(), scale).sum(1)
    np.testing.assert_allclose(lik.distribution(mu).log_prob(x).detach().numpy(), ref, rtol=1e-5)


def test_predicted_gaussian_uses_two_blocks():
    lik = _bound(L.Gaussian("predicted"), (3,))
    assert lik.param_shape((3,)) == (6,)
    params = torch.randn(2, 6)
    loc, raw = params[:, :3], params[:, 3:]
    scale = 1e-3 + torch.nn.functional.softplus(raw)
    x = torch.randn(2, 3)
    ref = stats.norm.logpdf(x.numpy(), loc.numpy(), scale.numpy()).sum(1)
    np.testing.assert_allclose(lik.distribution(params).log_prob(x).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(lik.mean(params).numpy(), loc.numpy())


def test_categorical_matches_scipy_and_mean_is_expected_level():
    K, D = 5, 3
    lik = _bound(L.Categorical(K), (D,))
    assert lik.param_shape((D,)) == (K * D,)
    torch.manual_seed(2)
    params = torch.randn(4, K * D)
    x = torch.randint(0, K, (4, D)).float()
    logits = params.reshape(4, K, D).permute(0, 2, 1)  # (B, D, K)
    probs = logits.softmax(-1).numpy()
    ref = np.array([sum(np.log(probs[b, d, int(x[b, d])]) for d in range(D)) for b in range(4)])
    np.testing.assert_allclose(lik.distribution(params).log_prob(x).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(lik.mean(params).numpy(), probs @ np.arange(K), rtol=1e-5)
    draws = lik.distribution(params).sample()
    assert draws.shape == (4, D) and float(draws.max()) <= K - 1


def _torch_categorical(lik, params, x):
    """log p(x) per example from torch's own Categorical over the likelihood's logits (B, *event, K)."""
    logits = lik._logits(params)
    n = len(lik.event_shape)
    return torch.distributions.Independent(torch.distributions.Categorical(logits=logits), n).log_prob(x.long())


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_categorical_log_prob_and_gradient_equal_torch_categorical(shape):
    """Categorical.log_prob (its fused value and gradient, _CategoricalLogLik) against torch's
    Categorical: values and gradients to float rounding, logits tens of nats apart included."""
    K = 17
    lik = _bound(L.Categorical(K), shape)
    torch.manual_seed(3)
    params = (torch.randn(8, K * shape[0], *shape[1:]) * 6).requires_grad_()
    x = torch.randint(0, K, (8, *shape)).float()
    ours = lik.log_prob(params, x)
    ref = _torch_categorical(lik, params, x)
    assert ours.grad_fn is not None and "CategoricalLogLik" in type(ours.grad_fn.next_functions[0][0]).__name__
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=2e-5)
    weights = torch.linspace(-1, 2, 8)  # a gradient that differs per example
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), params)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), params)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    # float64 against finite differences
    p64 = params.detach()[:2].double().requires_grad_()
    assert torch.autograd.gradcheck(lambda q: lik.log_prob(q, x[:2]), (p64,))


def test_categorical_log_prob_is_finite_for_extreme_logits_and_half_types():
    K = 4
    lik = _bound(L.Categorical(K), (3,))
    params = torch.tensor([[1e4, -1e4, 0.0, 500.0, -500.0, 0.0, -1e4, 1e4, 0.0, 0.0, 0.0, -200.0]])
    x = torch.tensor([[0.0, 1.0, 3.0]])
    ours = lik.log_prob(params.requires_grad_(), x)
    ref = _torch_categorical(lik, params, x)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref)
    (grad,) = torch.autograd.grad(ours.sum(), params)
    assert torch.isfinite(grad).all()
    half = params.detach().bfloat16().requires_grad_()
    value = lik.log_prob(half, x)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()  # a sum kept in float32
    torch.testing.assert_close(value, _torch_categorical(lik, half.detach().float(), x))
    (g_half,) = torch.autograd.grad(value.sum(), half)
    assert g_half.dtype == torch.bfloat16 and torch.isfinite(g_half.float()).all()


def test_categorical_log_prob_refuses_a_second_derivative():
    lik = _bound(L.Categorical(3), (2,))
    params = torch.randn(2, 6, requires_grad=True)
    value = lik.log_prob(params, torch.tensor([[0.0, 2.0], [1.0, 1.0]]))
    (grad,) = torch.autograd.grad(value.sum(), params, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_continuous_bernoulli_is_normalised():
    lik = _bound(L.ContinuousBernoulli(), (1,))
    for logit in (-3.0, 0.0, 0.01, 2.5):
        grid = torch.linspace(0, 1, 20001)[:, None]
        dens = lik.distribution(torch.full((20001, 1), logit)).log_prob(grid).exp()
        assert abs(torch.trapezoid(dens, grid[:, 0]).item() - 1.0) < 1e-3


def test_images_event_dims_are_summed():
    lik = _bound(L.Bernoulli(), (1, 4, 4))
    d = lik.distribution(torch.zeros(3, 1, 4, 4))
    assert d.batch_shape == (3,) and d.event_shape == (1, 4, 4)
    np.testing.assert_allclose(d.log_prob(torch.ones(3, 1, 4, 4)).numpy(), 16 * math.log(0.5), rtol=1e-6)


@pytest.mark.parametrize(
    "data,expected",
    [
        (np.array([[0, 1], [1, 0]], float), L.Bernoulli),
        (np.array([[0, 16], [3, 8]], float), L.Categorical),
        (np.array([[0.2, 0.9], [0.0, 1.0]]), L.ContinuousBernoulli),
        (np.array([[-1.5, 2.0], [0.3, 9.1]]), L.Gaussian),
    ],
)
def test_auto_choice(data, expected):
    lik = L.auto(data)
    assert type(lik) is expected
    if expected is L.Categorical:
        assert lik.num_classes == 17


def test_bad_data_and_names_raise_clear_errors():
    with pytest.raises(ValueError, match="Bernoulli likelihood needs data in \\[0, 1\\]"):
        L.Bernoulli().validate(np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match="integer data"):
        L.Categorical(3).validate(np.array([[0.5]]))
    with pytest.raises(ValueError, match="NaN"):
        L.Gaussian().validate(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="unknown likelihood"):
        L.create("bce")
    with pytest.raises(ValueError, match="positive"):
        L.Gaussian(-1.0)


def test_create_round_trips_config():
    for lik in (L.Bernoulli(), L.Gaussian(0.3), L.Gaussian("predicted"), L.Categorical(7), L.ContinuousBernoulli()):
        again = L.create(lik.config())
        assert again.config() == lik.config()
