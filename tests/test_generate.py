import numpy as np
import pytest
import torch
from scipy.stats import norm

import vaekit
from vaekit import generate
from vaekit.nets import MLP


def _model(likelihood, latent_dim=3, d=6, seed=0):
    torch.manual_seed(seed)
    lik = vaekit.likelihoods.create(likelihood)
    n_out = lik.param_shape((d,))
    return vaekit.Model(
        MLP(d, 2 * latent_dim, (16,)), MLP(latent_dim, n_out, (16,)), lik, latent_dim=latent_dim, data_shape=(d,)
    )


def test_prior_quantiles_are_normal_ppf():
    values = generate.prior_quantiles(7, 0.05, 0.95).numpy()
    np.testing.assert_allclose(values, norm.ppf(np.linspace(0.05, 0.95, 7)), atol=1e-6)
    assert generate.prior_quantiles(1).item() == pytest.approx(0.0, abs=1e-7)  # the median
    with pytest.raises(ValueError, match="0 < low <= high < 1"):
        generate.prior_quantiles(5, 0.0, 0.9)


def test_quantile_grid_layout():
    base = torch.tensor([0.5, -1.0, 2.0, 3.0])
    grid = generate.quantile_grid(4, steps=5, dims=(2, 0), base=base)
    values = norm.ppf(np.linspace(0.05, 0.95, 5))
    assert grid.shape == (5, 5, 4)
    # columns: unit 2 increases left to right; rows: unit 0 decreases top to bottom
    np.testing.assert_allclose(grid[3, :, 2].numpy(), values, atol=1e-6)
    np.testing.assert_allclose(grid[:, 1, 0].numpy(), values[::-1], atol=1e-6)
    # the other units stay at the base
    assert torch.all(grid[:, :, 1] == -1.0) and torch.all(grid[:, :, 3] == 3.0)
    assert generate.quantile_grid(1, steps=4).shape == (1, 4, 1)
    with pytest.raises(ValueError, match="two different units"):
        generate.quantile_grid(3, dims=(1, 1))


def test_interpolate_is_the_straight_line_with_both_ends():
    a, b = torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([[4.0, -3.0], [2.0, 0.0]])
    path = generate.interpolate(a, b, steps=5)  # (5, 2, 2)
    assert path.shape == (5, 2, 2)
    assert torch.equal(path[0], a) and torch.allclose(path[-1], b)
    steps = path[1:] - path[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps))  # evenly spaced
    with pytest.raises(ValueError, match="steps >= 2"):
        generate.interpolate(a, b, steps=1)


def test_traverse_moves_one_unit_per_row():
    base = torch.tensor([0.3, -0.2, 1.0])
    values = torch.tensor([-1.0, 0.0, 2.0])
    z = generate.traverse(base, [2, 0], values)
    assert z.shape == (2, 3, 3)
    assert torch.equal(z[0, :, 2], values) and torch.equal(z[1, :, 0], values)
    assert torch.all(z[0, :, :2] == base[:2]) and torch.all(z[1, :, 1:] == base[1:])
    with pytest.raises(ValueError, match=r"unit\(s\) \[3\] out of range"):
        generate.traverse(base, [3], values)


def test_decode_mode_rounds_bernoulli_means_and_draws_are_binary():
    model = _model("bernoulli")
    z = torch.randn(50, 3)
    mean = generate.decode(model, z)
    mode = generate.decode(model, z, how="mode")
    assert torch.equal(mode, (mean >= 0.5).float())
    torch.manual_seed(1)
    draws = generate.decode(model, z.expand(400, 50, 3), how="draw")
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # draws average to the mean (400 draws: standard error <= 0.025)
    assert (draws.mean(0) - mean).abs().max() < 0.13


def test_decode_mode_of_a_categorical_is_the_most_likely_level():
    model = _model(vaekit.likelihoods.Categorical(5))
    z = torch.randn(20, 3)
    params = model.decoder(z).reshape(20, 5, 6)  # (B, K, D): blocks per class
    mode = generate.decode(model, z, how="mode")
    assert torch.equal(mode, params.argmax(1).float())


def test_decode_mode_refused_without_a_mode():
    model = _model("continuous_bernoulli")
    with pytest.raises(ValueError, match="no most probable value"):
        generate.decode(model, torch.zeros(2, 3), how="mode")
    with pytest.raises(ValueError, match="how must be"):
        generate.decode(model, torch.zeros(2, 3), how="median")


def test_kl_per_unit_matches_the_closed_form_and_the_elbo_kl():
    model = _model("bernoulli")
    x = (torch.rand(300, 6) > 0.5).float()
    kl = generate.kl_per_unit(model, x, batch_size=64)
    mu, sigma = model.encode(x, return_scale=True)
    closed = 0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log())  # KL(N(mu, sigma^2) || N(0, 1)) per unit
    torch.testing.assert_close(kl, closed.mean(0), rtol=1e-5, atol=1e-6)
    assert kl.sum().item() == pytest.approx(vaekit.elbo(model, x).kl.mean().item(), rel=1e-5)


def test_batched_encode_and_reconstruct_equal_the_model():
    model = _model("gaussian")
    x = torch.randn(70, 6)
    mean, scale = generate.encode(model, x, batch_size=16)
    m, s = model.encode(x, return_scale=True)
    torch.testing.assert_close(mean, m)
    torch.testing.assert_close(scale, s)
    rec = generate.reconstruct(model, x, sample_z=False, batch_size=16)
    torch.testing.assert_close(rec, model.decode(m))
