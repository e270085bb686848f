"""The lean training path: direct likelihood formulas, device-side metrics, thread settings,
torch.compile fallback and bf16 autocast."""

import os
import warnings

import numpy as np
import pytest
import torch

import vaekit
from vaekit import TrainConfig, fit, likelihoods, objectives
from vaekit.train import evaluate_elbo


def _data_for(lik, batch, event, gen):
    if isinstance(lik, likelihoods.Bernoulli):
        return (torch.rand(batch, *event, generator=gen) > 0.5).float()
    if isinstance(lik, likelihoods.Categorical):
        return torch.randint(0, lik.num_classes, (batch, *event), generator=gen).float()
    if isinstance(lik, likelihoods.ContinuousBernoulli):
        return torch.rand(batch, *event, generator=gen)
    return torch.randn(batch, *event, generator=gen)


LIKELIHOODS = [
    lambda: likelihoods.Bernoulli(),
    lambda: likelihoods.Gaussian(0.3),
    lambda: likelihoods.Gaussian("learned"),
    lambda: likelihoods.Gaussian("predicted"),
    lambda: likelihoods.Categorical(5),
    lambda: likelihoods.ContinuousBernoulli(),
]


@pytest.mark.parametrize("make", LIKELIHOODS)
@pytest.mark.parametrize("event", [(6,), (2, 3, 4)])
def test_direct_log_prob_is_the_distributions_log_prob(make, event):
    gen = torch.Generator().manual_seed(0)
    lik = make().bind(event)
    if getattr(lik, "raw_scale", None) is not None:
        with torch.no_grad():
            lik.raw_scale.normal_(generator=gen)
    params = torch.randn(3, 4, *lik.param_shape(event), generator=gen).requires_grad_()  # (L, B, ...)
    x = _data_for(lik, 4, event, gen)
    fast = lik.log_prob(params, x)
    reference = lik.distribution(params).log_prob(x)
    assert fast.shape == (3, 4)
    assert torch.equal(fast, reference)  # the same formula, so the same bits
    wrt = [params] + [p for p in lik.parameters()]
    for g_fast, g_ref in zip(torch.autograd.grad(fast.sum(), wrt), torch.autograd.grad(reference.sum(), wrt)):
        assert torch.equal(g_fast, g_ref)


def test_model_log_px_z_matches_p_x():
    torch.manual_seed(0)
    model = vaekit.build_model(
        vaekit.ModelSpec(data_shape=(8,), latent_dim=3, hidden=(16,), likelihood={"name": "bernoulli"})
    )
    x = (torch.rand(5, 8) > 0.5).float()
    z = torch.randn(2, 5, 3)
    assert torch.equal(model.log_px_z(z, x), model.p_x(z).log_prob(x))


def test_unbound_likelihood_refuses():
    with pytest.raises(RuntimeError, match="not bound"):
        likelihoods.Bernoulli().log_prob(torch.zeros(2, 3), torch.zeros(2, 3))


def _digits_model(seed=0):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(
        data_shape=(64,), latent_dim=4, hidden=(64,), activation="relu", likelihood={"name": "bernoulli"}
    )
    return vaekit.build_model(spec)


def test_epoch_metrics_are_example_averages_of_the_batch_terms(tiny_digits):
    # with lr tiny the weights barely move, so the epoch's train ELBO must match an
    # independent evaluation of the same bound (closed-form KL, averaged over examples)
    train, _ = tiny_digits
    model = _digits_model()
    h = fit(model, train, config=TrainConfig(epochs=1, batch_size=64, lr=1e-9, progress=False)).history
    torch.manual_seed(5)
    independent = evaluate_elbo(model, torch.as_tensor(train), n_samples=200)
    assert abs(h.last["train_elbo"] - independent["elbo"]) < 0.15
    assert abs(h.last["train_kl"] - independent["kl"]) < 0.02
    assert h.last["train_elbo"] == pytest.approx(h.last["train_log_px_z"] - h.last["train_kl"], abs=1e-4)


def test_explicit_threads_are_taken_and_restored(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = fit(
            _digits_model(), np.zeros((20, 64), np.float32), config=TrainConfig(epochs=1, threads=1, progress=False)
        )
        assert result.threads == 1 == result.history.last["threads"]
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a launcher's (torchrun's) choice is kept
        result = fit(_digits_model(), np.zeros((20, 64), np.float32), config=TrainConfig(epochs=1, progress=False))
        assert result.threads == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=-1)


def test_compile_that_fails_falls_back_to_identical_eager_training(tiny_digits, monkeypatch):
    train, val = tiny_digits
    cfg = TrainConfig(epochs=2, batch_size=64, progress=False)
    eager = _digits_model()
    h_eager = fit(eager, train, val, cfg).history

    def lazily_broken(module, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("InductorError: no working C++ compiler\nlong traceback")

        return call

    monkeypatch.setattr(torch, "compile", lazily_broken)
    fallback = _digits_model()
    with pytest.warns(UserWarning, match="torch.compile failed .*no working C\\+\\+ compiler.*without it"):
        h_fallback = fit(
            fallback, train, val, TrainConfig(epochs=2, batch_size=64, progress=False, compile=True)
        ).history
    for k, v in eager.state_dict().items():
        assert torch.equal(v, fallback.state_dict()[k]), k
    assert h_fallback.column("val_elbo") == h_eager.column("val_elbo")

    def unavailable(module, *args, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.99")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.warns(UserWarning, match="torch.compile is unavailable"):
        fit(_digits_model(), train, config=TrainConfig(epochs=1, batch_size=64, progress=False, compile=True))


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("VAEKIT_TEST_COMPILE"),
    reason="compiling takes minutes on a busy CPU; set VAEKIT_TEST_COMPILE=1 to run it",
)
def test_compiled_training_matches_eager(tiny_digits):
    train, val = tiny_digits
    a, b = _digits_model(), _digits_model()
    h_a = fit(a, train, val, TrainConfig(epochs=3, batch_size=64, progress=False)).history
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h_b = fit(b, train, val, TrainConfig(epochs=3, batch_size=64, progress=False, compile=True)).history
    fallbacks = [
        str(w.message)
        for w in caught
        if str(w.message).startswith(("torch.compile failed", "torch.compile is unavailable"))
    ]
    assert not fallbacks, fallbacks  # it really compiled
    assert abs(h_a.last["val_elbo"] - h_b.last["val_elbo"]) < 0.5


def test_bf16_autocast_keeps_posterior_likelihood_and_kl_in_float32():
    model = _digits_model()
    x = torch.as_tensor(vaekit.datasets.digits(binarize=True).x[:32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qz = model.q_z(x)
        z = qz.rsample()
        raw = model.decoder(z)
        log_px_z = model.log_px_z(z, x)
        terms = objectives.elbo(model, x)
    assert raw.dtype == torch.bfloat16  # autocast really ran the network in bf16
    assert qz.base_dist.loc.dtype == torch.float32 and z.dtype == torch.float32
    for t in (log_px_z, terms.elbo, terms.log_px_z, terms.kl, terms.objective):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    # the likelihood is the float32 formula applied to the bf16 network output
    assert torch.equal(log_px_z, model.likelihood.log_prob(raw.float(), x))


def test_bf16_training_learns_close_to_float32(tiny_digits):
    train, val = tiny_digits
    cfg = dict(epochs=15, batch_size=64, lr=3e-3, progress=False)
    h32 = fit(_digits_model(), train, val, TrainConfig(**cfg)).history
    h16 = fit(_digits_model(), train, val, TrainConfig(**cfg, amp="bf16")).history
    assert all(np.isfinite(h16.column("val_elbo")))
    assert h16.last["val_elbo"] > h16[0]["val_elbo"] + 5
    assert abs(h16.last["val_elbo"] - h32.last["val_elbo"]) < 1.5, (h16.last["val_elbo"], h32.last["val_elbo"])
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig(amp="fp16")


def test_cli_speed_flags_reach_the_run_config(tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "--data",
        "digits",
        "--binarize",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--no-progress",
        "--out",
        "r",
    ]
    assert main([*args, "--amp", "bf16", "--threads", "1"]) == 0
    import json

    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["amp"] == "bf16" and config["train"]["threads"] == 1 and config["train"]["compile"] is False
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert np.isfinite(metrics["val"]["elbo"])
    with pytest.raises(SystemExit) as err:  # argparse: not one of the choices
        main([*args[:-1], "r2", "--amp", "fp16"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:  # a bad value is a usage error: exit code 2, one line
        main([*args[:-1], "r3", "--threads", "-2"])
    assert err.value.code == 2
    assert "threads" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists()


def test_standard_normal_prior_shortcuts_are_torchs_normal_bit_for_bit():
    from torch.distributions import Normal, kl_divergence

    prior = vaekit.StandardNormal(5)
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(7, 5, generator=gen).requires_grad_()
    log_s = torch.randn(7, 5, generator=gen).requires_grad_()
    q = Normal(mu, log_s.exp())
    general = Normal(torch.zeros(5), torch.ones(5))
    fast, reference = kl_divergence(q, prior().base_dist), kl_divergence(q, general)
    assert torch.equal(fast, reference)
    for a, b in zip(
        torch.autograd.grad(fast.sum(), [mu, log_s], retain_graph=True),
        torch.autograd.grad(reference.sum(), [mu, log_s]),
    ):
        assert torch.equal(a, b)
    z = torch.randn(3, 7, 5, generator=gen)
    assert torch.equal(prior().log_prob(z), torch.distributions.Independent(general, 1).log_prob(z))
    assert prior().sample((4,)).shape == (4, 5)
