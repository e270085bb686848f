"""The three anomaly scores against closed forms, and common random numbers."""

import math

import numpy as np
import pytest
import torch

from vaekit import anomaly


def _posterior(model, x):
    qz = model.q_z(x)
    return qz.mean.detach(), qz.stddev.detach()


def test_kl_to_prior_is_the_closed_form(linear_gaussian):
    model = linear_gaussian.model(exact_posterior=True)
    x = linear_gaussian.sample(50)
    mu, s = _posterior(model, x)
    expected = 0.5 * (mu**2 + s**2 - 1 - 2 * s.log()).sum(-1)
    torch.testing.assert_close(anomaly.kl_to_prior(model, x), expected)


def test_reconstruction_log_prob_matches_closed_form(linear_gaussian):
    # x | z ~ N(W z + b, sigma^2 I), z ~ N(mu, diag s^2): E[log p(x|z)] =
    #   log N(x; W mu + b, sigma^2 I) - tr(W diag(s^2) W^T) / (2 sigma^2)
    lg = linear_gaussian
    model = lg.model(exact_posterior=True)
    x = lg.sample(20)
    mu, s = _posterior(model, x)
    mean = mu @ lg.W.T + lg.b
    log_n = torch.distributions.Normal(mean, lg.sigma).log_prob(x).sum(-1)
    trace = (s**2 * (lg.W**2).sum(0)).sum(-1)
    expected = log_n - trace / (2 * lg.sigma**2)
    L = 20000
    got = anomaly.reconstruction_log_prob(model, x, n_samples=L, noise=anomaly.common_noise(L, lg.h, 0))
    # Monte Carlo error of a mean of L draws is about sd / sqrt(L); the spread of log p(x|z) here is a few nats
    assert torch.allclose(got, expected, atol=0.1), (got - expected).abs().max()
    assert not torch.allclose(got, log_n, atol=0.1)  # the trace term matters: not just the mean's likelihood


def test_log_px_with_common_noise_matches_closed_form(linear_gaussian):
    lg = linear_gaussian
    model = lg.model(exact_posterior=True)
    x = lg.sample(20)
    k = 2000
    got = anomaly.log_px(model, x, k=k, noise=anomaly.common_noise(k, lg.h, 3))
    assert torch.allclose(got, lg.log_px(x), atol=0.02), (got - lg.log_px(x)).abs().max()


def test_scores_with_common_noise_do_not_depend_on_the_batch(linear_gaussian):
    model = linear_gaussian.model(exact_posterior=False).double()
    x = linear_gaussian.sample(30).double()
    for kind in anomaly.SCORES:
        noise = anomaly.common_noise(16, 2, 7, dtype=torch.float64)
        full = anomaly.score(model, x, kind, 16, noise)
        one_by_one = torch.cat([anomaly.score(model, x[i : i + 1], kind, 16, noise) for i in range(30)])
        reordered = anomaly.score(model, x.flip(0), kind, 16, noise).flip(0)
        torch.testing.assert_close(full, one_by_one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(full, reordered, rtol=1e-12, atol=1e-12)


def test_without_noise_the_monte_carlo_scores_vary_and_kl_is_negated(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(10)
    torch.manual_seed(0)
    a = anomaly.score(model, x, "recon", 4)
    b = anomaly.score(model, x, "recon", 4)
    assert not torch.equal(a, b)
    torch.testing.assert_close(anomaly.score(model, x, "kl"), -anomaly.kl_to_prior(model, x))


def test_common_noise_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.randn(3)
    torch.manual_seed(5)
    anomaly.common_noise(100, 4, seed=1)
    torch.testing.assert_close(torch.randn(3), expected)
    torch.testing.assert_close(anomaly.common_noise(10, 2, 1), anomaly.common_noise(10, 2, 1))


def test_bad_arguments_raise(linear_gaussian):
    model = linear_gaussian.model()
    x = linear_gaussian.sample(4)
    with pytest.raises(ValueError, match="unknown anomaly score"):
        anomaly.score(model, x, "mahalanobis")
    with pytest.raises(ValueError, match="noise must have shape"):
        anomaly.log_px(model, x, k=8, noise=torch.zeros(7, 2))
    with pytest.raises(ValueError, match="noise must have shape"):
        anomaly.reconstruction_log_prob(model, x, n_samples=8, noise=torch.zeros(8, 3))
    with pytest.raises(ValueError, match="n_samples"):
        anomaly.reconstruction_log_prob(model, x, n_samples=0)


def test_chunking_over_draws_gives_the_same_answer(linear_gaussian):
    model = linear_gaussian.model().double()
    x = linear_gaussian.sample(9).double()
    noise = anomaly.common_noise(50, 2, 0, dtype=torch.float64)
    whole = anomaly.reconstruction_log_prob(model, x, 50, noise)
    chunked = anomaly.reconstruction_log_prob(model, x, 50, noise, batch_size=4, max_elements=4 * 4 * 3)
    torch.testing.assert_close(whole, chunked)
    assert math.isfinite(float(whole.sum())) and np.all(whole.numpy() < 0)
