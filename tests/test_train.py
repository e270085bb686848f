import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import vaekit
from vaekit import TrainConfig, fit
from vaekit.errors import TrainingError
from vaekit.nets import MLP
from vaekit.train import evaluate_elbo


def _digits_model(seed=0, latent=4):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(
        data_shape=(64,), latent_dim=latent, hidden=(64,), activation="relu", likelihood={"name": "bernoulli"}
    )
    return vaekit.build_model(spec)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_on_digits_improves_validation_elbo(tiny_digits):
    train, val = tiny_digits
    model = _digits_model()
    before = evaluate_elbo(model, torch.as_tensor(val))["elbo"]
    history = fit(model, train, val, TrainConfig(epochs=30, batch_size=64, lr=3e-3, progress=False)).history
    after = history.last["val_elbo"]
    assert after > before + 15, (before, after)  # untrained ~ -44 nats; trained well above
    assert len(history) == 30 and history.column("epoch") == list(range(1, 31))
    assert all(k in history.last for k in ("train_elbo", "train_log_px_z", "train_kl", "val_kl", "beta"))


def test_same_seed_gives_identical_weights(tiny_digits):
    train, val = tiny_digits
    cfg = TrainConfig(epochs=3, batch_size=50, seed=7, progress=False)
    a, b = _digits_model(1), _digits_model(1)
    fit(a, train, val, cfg)
    fit(b, train, val, cfg)
    for k, v in _weights(a).items():
        assert torch.equal(v, b.state_dict()[k]), k
    c = _digits_model(1)
    fit(c, train, val, TrainConfig(epochs=3, batch_size=50, seed=8, progress=False))
    assert not torch.equal(a.encoder.net[0].weight, c.encoder.net[0].weight)


def test_resume_from_state_continues_exactly(tiny_digits):
    train, val = tiny_digits
    cfg = TrainConfig(epochs=6, batch_size=64, seed=3, warmup=4, early_stopping=50, progress=False)
    full = _digits_model(2)
    h_full = fit(full, train, val, cfg).history

    saved = {}

    def grab(model, state):
        if state.epoch == 2:
            import os
            import tempfile

            from vaekit import checkpoint

            path = os.path.join(tempfile.mkdtemp(), "trainer.safetensors")
            checkpoint.save_trainer(path, model, state)
            saved["path"] = path
            raise KeyboardInterrupt  # simulate a kill right after the checkpoint

    part = _digits_model(2)
    with pytest.raises(KeyboardInterrupt):
        fit(part, train, val, cfg, callbacks=[grab])
    from vaekit import checkpoint

    resumed = _digits_model(99)  # different init: everything must come from the checkpoint
    torch.manual_seed(12345)  # and the global RNG must be restored from it too
    state = checkpoint.load_trainer(saved["path"], resumed)
    h_res = fit(resumed, train, val, cfg, resume=state).history
    for k, v in _weights(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["val_elbo"] for r in h_res] == [r["val_elbo"] for r in h_full]


def test_non_finite_loss_names_epoch_and_batch(tiny_digits):
    train, _ = tiny_digits
    model = _digits_model()
    seen = []

    def poison(model, state):
        seen.append(state.epoch)
        if state.epoch == 2:
            with torch.no_grad():
                model.decoder.net[-1].bias.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"non-finite at epoch 3, batch 1; no checkpoint was written"):
        fit(model, train, config=TrainConfig(epochs=5, batch_size=100, progress=False), callbacks=[poison])
    assert seen == [1, 2]  # no checkpoint callback after the bad epoch


def test_early_stopping_restores_best(tiny_digits):
    train, val = tiny_digits
    model = _digits_model()
    # a huge lr makes validation worse after the first epochs
    h = fit(model, train, val, TrainConfig(epochs=200, batch_size=64, lr=0.05, early_stopping=3, progress=False))
    state, h = h.state, h.history
    assert state.stopped_early and len(h) < 200
    assert len(h) == state.best_epoch + 3
    best = max(h.column("val_elbo"))
    torch.manual_seed(0)
    assert abs(evaluate_elbo(model, torch.as_tensor(val), n_samples=50)["elbo"] - best) < 2.0


def test_warmup_schedule_rises_linearly(tiny_digits):
    train, _ = tiny_digits
    h = fit(
        _digits_model(), train, config=TrainConfig(epochs=6, batch_size=100, beta=2.0, warmup=4, progress=False)
    ).history
    betas = h.column("beta")
    np.testing.assert_allclose(betas, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0], rtol=1e-6)


def test_large_beta_collapses_kl_and_free_bits_keeps_it(tiny_digits):
    train, _ = tiny_digits
    h_beta = fit(
        _digits_model(), train, config=TrainConfig(epochs=15, batch_size=64, beta=20.0, lr=3e-3, progress=False)
    ).history
    h_free = fit(
        _digits_model(),
        train,
        config=TrainConfig(epochs=15, batch_size=64, beta=20.0, free_bits=1.0, lr=3e-3, progress=False),
    ).history
    assert h_beta.last["train_kl"] < 0.05
    assert h_free.last["train_kl"] > 20 * h_beta.last["train_kl"] and h_free.last["train_kl"] > 0.5


def test_iwae_training_learns(tiny_digits):
    train, val = tiny_digits
    model = _digits_model()
    h = fit(model, train, val, TrainConfig(epochs=10, batch_size=64, lr=3e-3, iw_samples=5, progress=False)).history
    assert h.last["val_elbo"] > h[0]["val_elbo"] + 3


def test_linear_vae_recovers_ppca_maximum_likelihood():
    # data from a PPCA model; PCA(n_components).score gives the closed-form PPCA maximum
    # average log-likelihood (Tipping & Bishop 1999). A linear VAE with a learned Gaussian
    # scale reaches it (its ELBO is tight at the optimum: Lucas et al. 2019).
    rng = np.random.default_rng(0)
    d, h, n = 8, 2, 3000
    W = rng.normal(size=(d, h)) * np.array([3.0, 1.5])
    x = (rng.normal(size=(n, h)) @ W.T + 0.5 * rng.normal(size=(n, d)) + rng.normal(size=d)).astype(np.float32)
    target = PCA(n_components=h).fit(x).score(x)

    torch.manual_seed(0)
    model = vaekit.Model(
        MLP(d, 2 * h, hidden=()),
        MLP(h, d, hidden=()),
        vaekit.likelihoods.Gaussian("learned"),
        latent_dim=h,
        data_shape=(d,),
    )
    fit(model, x, config=TrainConfig(epochs=300, batch_size=256, lr=1e-2, progress=False))
    torch.manual_seed(1)
    xt = torch.as_tensor(x)
    elbo = evaluate_elbo(model, xt, n_samples=20)["elbo"]
    logpx = vaekit.log_marginal(model, xt, k=200).log_px.mean().item()
    assert abs(logpx - target) < 0.01 * abs(target), (logpx, target)
    assert abs(elbo - target) < 0.03 * abs(target), (elbo, target)  # ELBO tightens more slowly


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="early stopping needs validation"):
        fit(_digits_model(), np.zeros((10, 64), np.float32), config=TrainConfig(epochs=1, early_stopping=2))
    with pytest.raises(ValueError, match="shape"):
        fit(_digits_model(), np.zeros((10, 3), np.float32), config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="Bernoulli"):
        fit(_digits_model(), np.full((10, 64), 3.0, np.float32), config=TrainConfig(epochs=1))
