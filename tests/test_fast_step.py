"""The training step's fast path (objectives.fast_loss): the same loss, batch sums and gradients as the
Distribution-based ELBO (objectives.loss) for every likelihood it covers, the same random numbers, the
general path for everything it does not cover, and the same training run end to end."""

import math

import numpy as np
import pytest
import torch

import vaekit
from vaekit import objectives, train
from vaekit.train import TrainConfig, fit

LIKELIHOODS = [
    {"name": "bernoulli"},
    {"name": "continuous_bernoulli"},
    {"name": "gaussian", "scale": 1.0},
    {"name": "gaussian", "scale": "learned"},
    {"name": "gaussian", "scale": "predicted"},
    {"name": "categorical", "num_classes": 3},
]


def _model(likelihood, seed=0, **spec):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(
        data_shape=(12,), latent_dim=3, hidden=(16,), activation="relu", likelihood=likelihood, **spec
    )
    return vaekit.build_model(spec)


def _data(n=40, seed=0):
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def _general(model, x, beta, n_samples):
    loss, t = objectives.loss(model, x, beta=beta, n_samples=n_samples)
    return loss, torch.stack([t.objective, t.elbo, t.log_px_z, t.kl]).detach().sum(1)


def _loss_and_grads(fn, model, x, beta, n_samples):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss, sums = fn(model, x, beta, n_samples)
    loss.backward()
    return loss.detach(), sums, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("likelihood", LIKELIHOODS, ids=lambda d: "-".join(str(v) for v in d.values()))
@pytest.mark.parametrize("beta,n_samples", [(1.0, 1), (0.3, 3)])
def test_fast_loss_sums_and_gradients_equal_the_distribution_elbo(likelihood, beta, n_samples):
    model = _model(likelihood)
    model.train()
    x = _data()
    assert objectives.fast_step_supported(model)
    fast = _loss_and_grads(objectives.fast_loss, model, x, beta, n_samples)
    general = _loss_and_grads(_general, model, x, beta, n_samples)
    torch.testing.assert_close(fast[0], general[0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(fast[1], general[1], rtol=1e-6, atol=1e-4)
    for g_fast, g_general in zip(fast[2], general[2]):
        torch.testing.assert_close(g_fast, g_general, rtol=1e-5, atol=1e-6)
    # the sums are (objective, ELBO, log p(x|z), KL) and hang together as the bound says
    objective, elbo, log_px_z, kl = fast[1].tolist()
    assert kl > 0
    assert elbo == pytest.approx(log_px_z - kl, rel=1e-6)
    assert objective == pytest.approx(log_px_z - beta * kl, rel=1e-6)


def test_fast_loss_draws_the_same_noise_as_the_posterior():
    # z = mu + sigma * eps with eps the posterior's own draw (a fused multiply-add: equal to rounding)
    model = _model({"name": "bernoulli"})
    x = _data()
    torch.manual_seed(7)
    z_general = model.q_z(x).rsample()
    torch.manual_seed(7)
    seen = []
    model.decoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    objectives.fast_loss(model, x)
    torch.testing.assert_close(seen[0], z_general, rtol=1e-6, atol=1e-6)


def test_the_bernoulli_sum_matches_torchs_bernoulli_log_prob():
    logits = torch.randn(50, 12, generator=torch.Generator().manual_seed(1)) * 4
    x = _data(50)
    fast = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum()
    assert abs(float(fast - reference)) <= 1e-6 * abs(float(reference))


@pytest.mark.parametrize(
    "spec,kwargs",
    [
        ({"prior": "mog"}, {}),
        ({"posterior": "full"}, {}),
        ({}, {"free_bits": 0.1}),
        ({}, {"iw_samples": 4}),
    ],
)
def test_models_and_objectives_it_does_not_cover_take_the_general_path(spec, kwargs):
    model = _model({"name": "bernoulli"}, **spec)
    assert not objectives.fast_step_supported(model, **kwargs)
    step = train.LossStep(model, TrainConfig(**kwargs), "cpu")
    assert not step.fast
    x = _data()
    torch.manual_seed(3)
    loss, sums = step(x, 1.0)
    torch.manual_seed(3)
    expected, _ = objectives.loss(model, x, n_samples=1, **kwargs)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_a_conditional_model_takes_the_general_path():
    model = _model({"name": "bernoulli"}, condition_dim=2)
    assert not objectives.fast_step_supported(model)


def test_an_encoder_of_the_wrong_width_gets_the_models_error():
    model = _model({"name": "bernoulli"})
    model.encoder = torch.nn.Linear(12, 5)
    with pytest.raises(ValueError, match="encoder returned 5 outputs"):
        objectives.fast_loss(model, _data())


def test_a_run_on_the_fast_path_matches_the_general_path(monkeypatch):
    x = _data(200).numpy()
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False, seed=0, threads=1, warmup=1, beta=0.5)
    model_fast, model_general = _model({"name": "bernoulli"}), _model({"name": "bernoulli"})
    fast = fit(model_fast, x, config=config)
    monkeypatch.setattr(objectives, "fast_step_supported", lambda *a, **k: False)
    general = fit(model_general, x, config=config)
    for a, b in zip(fast.history, general.history):
        for key in ("train_objective", "train_elbo", "train_log_px_z", "train_kl", "beta"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    state_fast, state_general = model_fast.state_dict(), model_general.state_dict()
    for name in state_fast:
        torch.testing.assert_close(state_fast[name], state_general[name], rtol=1e-4, atol=1e-5)
    assert np.isfinite(fast.history[-1]["train_elbo"])


def test_log_marginals_bernoulli_log_likelihood_equals_the_likelihoods_own():
    model = _model({"name": "bernoulli"})
    x = _data(8)
    z = torch.randn(5, 8, 3, generator=torch.Generator().manual_seed(2)) * 30  # logits far into both tails
    with torch.no_grad():
        fast = objectives._log_px_z(model, z, x, None)
        reference = model.log_px_z(z, x)
    assert fast.shape == (5, 8)
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=1e-6)
    # the estimate through it is the one the Distribution-based weights give, on shared noise
    noise = torch.randn(64, 3, generator=torch.Generator().manual_seed(5))
    estimate = vaekit.log_marginal(model, x, k=64, noise=noise).log_px
    with torch.no_grad():
        qz = model.q_z(x)
        zs = qz.base_dist.loc + qz.base_dist.scale * noise.unsqueeze(1)
        log_w = model.p_x(zs).log_prob(x) + model.p_z().log_prob(zs) - qz.log_prob(zs)
        expected = torch.logsumexp(log_w.double(), 0) - np.log(64)
    torch.testing.assert_close(estimate.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "likelihood", [{"name": "categorical", "num_classes": 5}, {"name": "gaussian"}, {"name": "bernoulli"}]
)
def test_log_marginal_decodes_other_decoders_in_cache_sized_blocks_of_draws(likelihood, monkeypatch):
    """Decoders without the fused path (here a Bernoulli one behind a forward hook, a categorical and a
    Gaussian one) are called on blocks of draws of about CPU_LOGIT_BLOCK outputs; the estimates are
    those of one call per batch."""
    model = _model(likelihood)
    x = _data(8) * (4 if likelihood["name"] == "categorical" else 1)
    if likelihood["name"] == "bernoulli":
        model.decoder.register_forward_hook(lambda *a: None)  # not a plain MLP any more: the general path
    noise = torch.randn(60, 3, generator=torch.Generator().manual_seed(5))
    rows = []
    model.decoder.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    outputs = 8 * model.likelihood.param_shape((12,))[0]  # decoder outputs per draw of the batch
    monkeypatch.setattr(objectives, "CPU_LOGIT_BLOCK", 7 * outputs)  # 7 draws per block
    blocked = vaekit.log_marginal(model, x, k=60, noise=noise)
    assert rows == [7 * 8] * 8 + [4 * 8]  # 60 draws of 8 examples: 8 blocks of 7 and one of 4
    rows.clear()
    monkeypatch.setattr(objectives, "CPU_LOGIT_BLOCK", 2**30)
    whole = vaekit.log_marginal(model, x, k=60, noise=noise)
    assert rows == [60 * 8]
    torch.testing.assert_close(blocked.log_px, whole.log_px, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(blocked.stderr, whole.stderr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, event", [("categorical", (6,)), ("categorical256", (1, 3, 4))])
def test_categorical_log_prob_without_grad_equals_log_prob_and_log_marginal_uses_it(dtype, name, event, monkeypatch):
    """A categorical likelihood's log_prob_without_grad, log sum exp(l) without the largest logit taken out:
    equal to log_prob (torch's logsumexp) to float rounding for moderate logits, and for pixels whose sum
    overflows or underflows, which torch's logsumexp takes; log_marginal uses it for a decoder that it
    calls as a module."""
    from vaekit import likelihoods

    lik = (likelihoods.Categorical(7) if name == "categorical" else likelihoods.Categorical256(16)).bind(event)
    g = torch.Generator().manual_seed(3)
    params = torch.randn(5, 4, *lik.param_shape(event), generator=g, dtype=dtype) * 4
    flat = params.view(5, 4, -1)
    flat[0, 0, :3] = 95.0  # a sum of exponentials past float32's largest
    flat[1, 2] = -120.0 + torch.rand(flat.shape[-1], generator=g, dtype=dtype)  # every logit of it far below
    levels = lik.num_classes
    x = torch.randint(0, levels, (4, *event), generator=g).to(dtype) * lik.step
    fast = lik.log_prob_without_grad(params, x)
    reference = lik.log_prob(params, x)
    assert fast.shape == (5, 4) and fast.dtype == dtype and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=1e-4 if dtype == torch.float32 else 1e-9)
    if dtype == torch.float32:  # the plain sum would have been inf or -inf there: the fallback took them
        plain = (params.view(5, 4, levels, -1).exp().sum(-2).log()).view(5, 4, -1)
        assert not torch.isfinite(plain[0, 0]).all() and not torch.isfinite(plain[1, 2]).all()
    model = vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=event,
            latent_dim=2,
            hidden=(8,),
            likelihood={"name": name, **({"num_classes": 7} if name == "categorical" else {"levels": 16})},
        )
    ).to(dtype)
    taken = []
    real = likelihoods.Categorical.log_prob_without_grad
    monkeypatch.setattr(likelihoods.Categorical, "log_prob_without_grad", lambda *a: taken.append(1) or real(*a))
    noise = torch.randn(16, 2, generator=g, dtype=dtype)
    # a decoder with a hook is called as a module (an MLP's own is otherwise read layer by layer)
    handle = model.decoder.register_forward_hook(lambda *a: None)
    estimate = vaekit.log_marginal(model, x, k=16, noise=noise).log_px
    handle.remove()
    assert taken
    with torch.no_grad():
        qz = model.q_z(x)
        zs = qz.base_dist.loc + qz.base_dist.scale * noise.unsqueeze(1)
        log_w = model.p_x(zs).log_prob(x) + model.p_z().log_prob(zs) - qz.log_prob(zs)
        expected = torch.logsumexp(log_w.double(), 0) - np.log(16)
    torch.testing.assert_close(estimate.double(), expected, rtol=1e-6, atol=1e-5)


def _log_marginal_takes(monkeypatch, path, model, x, noise, atol):
    """log_marginal takes the fused ``path`` for this model; with a hook on the decoder it calls the
    decoder as a module instead (the path gives None), and the estimates are the same."""
    taken = []
    real = getattr(objectives, path)
    monkeypatch.setattr(objectives, path, lambda *a: taken.append(real(*a) is not None) or real(*a))
    fast = vaekit.log_marginal(model, x, k=noise.shape[0], noise=noise).log_px
    assert taken and all(taken)
    seen = []
    handle = model.decoder.register_forward_hook(lambda *a: seen.append(1))
    taken.clear()
    hooked = vaekit.log_marginal(model, x, k=noise.shape[0], noise=noise).log_px
    handle.remove()
    assert seen and not any(taken)  # the hook ran: the decoder was called as a module
    torch.testing.assert_close(fast.double(), hooked.double(), rtol=1e-6, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_marginals_fused_mlp_path_equals_the_decoders_own_logits(dtype, monkeypatch):
    """log p(x|z) from the decoder's last hidden layer (bias inside the product, x . l over the hidden
    units) equals sum x l - softplus(l) on the logits of decode_params, also deep in both tails, for
    two hidden layers of another activation and float64; log_marginal takes that path, and a hook on
    the decoder sends it back to decode_params."""
    torch.manual_seed(0)
    spec = vaekit.ModelSpec(data_shape=(12,), latent_dim=3, hidden=(16, 8), activation="tanh", likelihood="bernoulli")
    model = vaekit.build_model(spec).to(dtype)
    with torch.no_grad():
        model.decoder.net[-1].weight.mul_(150)  # logits past softplus's threshold of 20, both signs
    x = _data(8).to(dtype)
    z = torch.randn(5, 8, 3, generator=torch.Generator().manual_seed(2), dtype=dtype)
    with torch.no_grad():
        fused = objectives._bernoulli_mlp_log_px_z(model.decoder, z, x)
        logits = model.decode_params(z).double()
        expected = (x.double() * logits - torch.nn.functional.softplus(logits)).sum(-1)
    assert fused is not None and fused.dtype == dtype and fused.shape == (5, 8)
    assert logits.max() > 40 and logits.min() < -40
    torch.testing.assert_close(fused.double(), expected, rtol=1e-6, atol=1e-6 if dtype == torch.float64 else 2e-4)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(5), dtype=dtype)
    _log_marginal_takes(monkeypatch, "_bernoulli_mlp_log_px_z", model, x, noise, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name, hidden, activation", [("categorical", (16, 8), "tanh"), ("categorical256", (12,), "relu")]
)
def test_log_marginals_fused_categorical_path_equals_the_decoders_own_logits(
    dtype, name, hidden, activation, monkeypatch
):
    """log p(x|z) of a categorical decoder from its last hidden layer (the observed classes' logits
    summed over the hidden units, the exponentials in base 2) equals the likelihood's log_prob of
    decode_params, in float64, to float rounding; in float32 also for draws where a pixel's sum of
    exponentials overflows or underflows (those rows go to torch's logsumexp) beside draws where none
    does. log_marginal takes the path, and not for a decoder with a hook."""
    torch.manual_seed(0)
    event = (10,) if name == "categorical" else (12,)
    extra = {"num_classes": 7} if name == "categorical" else {"levels": 16}
    spec = vaekit.ModelSpec(
        data_shape=event, latent_dim=3, hidden=hidden, activation=activation, likelihood={"name": name, **extra}
    )
    model = vaekit.build_model(spec).to(dtype)
    lik, e = model.likelihood, math.prod(event)
    g = torch.Generator().manual_seed(4)
    x = (torch.randint(0, lik.num_classes, (6, *event), generator=g) * lik.step).to(dtype)
    z = torch.randn(40, 6, 3, generator=g, dtype=dtype) * 2
    with torch.no_grad():
        last = model.decoder.net[-1]
        last.weight.mul_(10)  # logits of tens, both signs
        if dtype == torch.float32:  # pixel 0: every class's logit 400 h_0 - 200, past both ends of exp in float32
            rows = torch.arange(lik.num_classes) * e
            last.weight[rows] = 0.0
            last.weight[rows, 0] = 400.0
            last.bias[rows] = -200.0
        fused = objectives._categorical_mlp_log_px_z(model.decoder, lik, z, x)
        logits = model.decode_params(z)
        expected = lik.log_prob(logits.double(), x.double())
    assert fused is not None and fused.dtype == dtype and fused.shape == (40, 6)
    # float32: logits of up to 200, each rounded by about 1e-5, summed over the pixels in another order
    torch.testing.assert_close(fused.double(), expected, rtol=1e-6, atol=1e-9 if dtype == torch.float64 else 1e-3)
    if dtype == torch.float32:  # the plain sums: inf or below a normal float for some draws, not all
        sums = logits.view(40, 6, lik.num_classes, e)[..., 0].exp().sum(-1)
        broken = ~((sums > torch.finfo(dtype).tiny * 2**24) & (sums < math.inf))
        assert broken.any() and not broken.all()
    noise = torch.randn(16, 3, generator=g, dtype=dtype)
    _log_marginal_takes(
        monkeypatch, "_categorical_mlp_log_px_z", model, x, noise, atol=1e-4 if dtype == torch.float32 else 1e-9
    )


def test_the_fast_step_under_bf16_autocast_keeps_float32_sums_near_the_general_path():
    model = _model({"name": "bernoulli"})
    x = _data()
    config = TrainConfig(amp="bf16")
    fast, general = train.LossStep(model, config, "cpu"), train.LossStep(model, config, "cpu")
    general.fast = False
    assert fast.fast
    torch.manual_seed(9)
    loss_fast, sums_fast = fast(x, 1.0)
    torch.manual_seed(9)
    loss_general, sums_general = general(x, 1.0)
    assert sums_fast.dtype == torch.float32 and loss_fast.dtype == torch.float32
    torch.testing.assert_close(sums_fast, sums_general, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(loss_fast, loss_general, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_grouped_softplus_sum_is_exact_in_both_tails_and_recomputes_underflowing_rows(dtype, monkeypatch):
    """sum_d softplus(l_d) from products of sigmoid(-l) over groups of 8: equal to torch's softplus in
    float64, to float rounding, for moderate logits, deep negative ones (products near 1) and a width
    that 8 does not divide;
    a row whose products underflow (logits of +100) goes to the exact softplus, and only that row."""
    g = torch.Generator().manual_seed(0)
    d = 8 * 12 + 5
    logits = torch.randn(6, d, generator=g, dtype=dtype) * 4
    logits[1] = -60 - 30 * torch.rand(d, generator=g, dtype=dtype)  # softplus ~ exp(l): tiny, positive
    logits[2] = 100.0  # every product of 8 sigmoid(-100) underflows
    logits[3, 0 : 8 * 12 : 12] = 95.0  # one group (columns j, j + D // 8, ...) underflows, the rest are moderate
    hidden = torch.randn(6, 7, generator=g, dtype=dtype)
    weight = torch.linalg.lstsq(hidden, logits).solution.t()  # hidden @ weight.t() reproduces the logits
    logits = hidden @ weight.t()
    expected = torch.nn.functional.softplus(logits.double()).sum(1)
    calls = []
    real = torch.nn.functional.softplus
    monkeypatch.setattr(
        torch.nn.functional, "softplus", lambda t, *a, **k: calls.append(t.shape[0]) or real(t, *a, **k)
    )
    got = objectives._sum_softplus(-logits.clone(), hidden, weight)
    assert calls == [2]  # rows 2 and 3, recomputed together
    torch.testing.assert_close(got.double(), expected, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)
    # the deep negative tail is exact to an absolute float rounding per logit, like the sum itself
    assert abs(float(got[1])) < d * torch.finfo(dtype).eps
