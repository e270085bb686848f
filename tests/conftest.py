import pytest
import torch
from torch import nn

import vaekit


class LinearGaussian:
    """x = W z + b + sigma * eps, z ~ N(0, I): log p(x) = log N(x; b, W W^T + sigma^2 I) in closed form."""

    def __init__(self, d=4, h=2, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(d, h, generator=g)
        self.b = torch.randn(d, generator=g)
        self.sigma = sigma
        self.d, self.h = d, h

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.h, generator=g)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.d, generator=g)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.d)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def model(self, exact_posterior=False, seed=0):
        """A vaekit Model with this generative model as decoder. The encoder is linear; with
        ``exact_posterior`` its mean is the true posterior mean (covariance need not be diagonal)."""
        torch.manual_seed(seed)
        encoder = nn.Linear(self.d, 2 * self.h)
        decoder = nn.Linear(self.h, self.d)
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
            if exact_posterior:
                # posterior of z: N(M^-1 W^T (x - b), sigma^2 M^-1), M = W^T W + sigma^2 I
                M = self.W.T @ self.W + self.sigma**2 * torch.eye(self.h)
                A = torch.linalg.solve(M, self.W.T)
                encoder.weight.zero_()
                encoder.bias.zero_()
                encoder.weight[: self.h] = A
                encoder.bias[: self.h] = -A @ self.b
                var = self.sigma**2 * torch.linalg.inv(M).diagonal()
                encoder.bias[self.h :] = 0.5 * var.log()
        lik = vaekit.likelihoods.Gaussian(self.sigma)
        return vaekit.Model(encoder, decoder, lik, latent_dim=self.h, data_shape=(self.d,))


@pytest.fixture
def linear_gaussian():
    return LinearGaussian()


@pytest.fixture
def tiny_digits():
    ds = vaekit.datasets.digits(binarize=True)
    return ds.x[:400], ds.x[400:500]


@pytest.fixture
def no_grad(request):
    """Evaluate without autograd (parametrise with False to keep gradients)."""
    with torch.set_grad_enabled(not getattr(request, "param", True)):
        yield
