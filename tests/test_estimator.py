"""The scikit-learn estimators: behaviour beyond the conformance suite."""

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import vaekit
from vaekit import VAE, VAEOutlierDetector, runs

SMALL = dict(hidden=(16,), epochs=5, batch_size=32, n_iw_samples=16, device="cpu")


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 2))
    W = rng.normal(size=(2, 5))
    return (z @ W + 0.1 * rng.normal(size=(300, 5))).astype(np.float64)


@pytest.fixture(scope="module")
def fitted(blobs):
    return VAE(latent_dim=2, random_state=0, **{**SMALL, "epochs": 30, "lr": 1e-2, "batch_size": 64}).fit(blobs)


def test_fit_sets_the_fitted_state(fitted, blobs):
    assert fitted.n_features_in_ == 5 and fitted.model_.latent_dim == 2
    assert fitted.likelihood_.config() == {"name": "gaussian", "scale": "learned", "min_scale": 1e-3}
    assert [row["epoch"] for row in fitted.history_] == list(range(1, 31))
    assert fitted.history_[-1]["train_elbo"] > fitted.history_[0]["train_elbo"]  # it learns
    assert list(fitted.get_feature_names_out()) == ["vae0", "vae1"]
    Z = fitted.transform(blobs)
    assert Z.shape == (300, 2) and Z.dtype == np.float64
    assert fitted.transform(blobs.astype(np.float32)).dtype == np.float32
    torch.testing.assert_close(torch.as_tensor(Z), fitted.model_.encode(torch.as_tensor(blobs)))


def test_transform_inverse_transform_and_sample(fitted, blobs):
    recon = fitted.inverse_transform(fitted.transform(blobs))
    assert recon.shape == blobs.shape
    # the decoded posterior means explain most of the variance of this 2-D linear data
    assert np.sum((recon - blobs) ** 2) < 0.1 * np.sum((blobs - blobs.mean(0)) ** 2)
    with pytest.raises(ValueError, match="latent_dim=2"):
        fitted.inverse_transform(np.zeros((3, 4)))
    a = fitted.sample(7, random_state=1)
    assert a.shape == (7, 5)
    np.testing.assert_array_equal(a, fitted.sample(7, random_state=1))
    assert not np.array_equal(a, fitted.sample(7, random_state=2))
    assert fitted.sample(3, draw=True, random_state=0).shape == (3, 5)


def test_score_samples_is_the_importance_sampled_log_marginal(fitted, blobs):
    s = fitted.score_samples(blobs[:40])
    assert s.shape == (40,) and s.dtype == np.float64
    np.testing.assert_array_equal(s, fitted.score_samples(blobs[:40]))  # deterministic once fitted
    # above the ELBO on average (IWAE_K >= ELBO) ...
    elbo = vaekit.elbo(fitted.model_, torch.as_tensor(blobs[:40]), n_samples=200).elbo.detach().numpy()
    assert s.mean() > elbo.mean()
    # ... and with many samples, equal to log_marginal with independent draws within Monte Carlo error
    many = copy.deepcopy(fitted).set_params(n_iw_samples=3000)
    torch.manual_seed(0)
    ref = vaekit.log_marginal(fitted.model_, torch.as_tensor(blobs[:40]), k=3000)
    diff = np.abs(many.score_samples(blobs[:40]) - ref.log_px.numpy())
    assert np.all(diff < 0.05 + 8 * ref.stderr.numpy()), diff.max()
    assert many.score(blobs[:40]) > fitted.score(blobs[:40])  # IWAE_K grows with K
    assert fitted.score(blobs[:40]) == pytest.approx(s.mean())


def test_same_random_state_same_model_and_the_global_rng_is_untouched(blobs):
    torch.manual_seed(123)
    expected_next = torch.randn(2)
    torch.manual_seed(123)
    a = VAE(latent_dim=2, random_state=3, **SMALL).fit(blobs[:100])
    torch.testing.assert_close(torch.randn(2), expected_next)
    b = VAE(latent_dim=2, random_state=3, **SMALL).fit(blobs[:100])
    c = VAE(latent_dim=2, random_state=4, **SMALL).fit(blobs[:100])
    np.testing.assert_array_equal(a.transform(blobs), b.transform(blobs))
    assert not np.allclose(a.transform(blobs), c.transform(blobs))


def test_auto_likelihood_follows_the_data():
    rng = np.random.default_rng(1)
    binary = (rng.random((40, 3)) > 0.5).astype(float)
    counts = rng.integers(0, 5, size=(40, 3)).astype(float)
    unit = rng.random((40, 3))
    one_feature = rng.normal(size=(5, 1))
    names = [
        VAE(random_state=0, **SMALL).fit(x).likelihood_.config()["name"] for x in (binary, counts, unit, one_feature)
    ]
    assert names == ["bernoulli", "categorical", "continuous_bernoulli", "gaussian"]
    fixed = VAE(likelihood="gaussian", scale=0.5, random_state=0, **SMALL).fit(unit)
    assert fixed.likelihood_.config()["scale"] == 0.5
    with pytest.raises(ValueError, match="Bernoulli likelihood needs data in"):
        VAE(likelihood="bernoulli", **SMALL).fit(rng.normal(size=(10, 2)))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"latent_dim": 0}, r"VAE: setting latent_dim=0 is not allowed: expected an integer >= 1"),
        ({"hidden": (8, -1)}, r"setting hidden=\(8, -1\) is not allowed: expected positive integers"),
        ({"epochs": 0}, "setting epochs=0 is not allowed: expected an integer >= 1"),
        ({"lr": 0}, "setting lr=0.0 is not allowed: expected a finite number > 0"),
        ({"early_stopping": 3}, "early_stopping needs validation data"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"likelihood": "poisson"}, "setting likelihood='poisson' is not allowed: expected auto or one of"),
        ({"activation": "swish"}, "setting activation='swish' is not allowed: expected one of elu"),
        ({"device": "tpu"}, "setting device='tpu' is not allowed: expected auto, cpu, cuda"),
    ],
)
def test_bad_hyper_parameters_fail_in_fit_with_one_clear_line(blobs, params, message):
    est = VAE(**{**SMALL, **params})  # __init__ never raises (scikit-learn's convention)
    with pytest.raises(ValueError, match=message) as err:
        est.fit(blobs[:20])
    assert "\n" not in str(err.value)


def test_validation_fraction_and_early_stopping(blobs):
    est = VAE(
        latent_dim=2, validation_fraction=0.2, early_stopping=2, random_state=0, **{**SMALL, "epochs": 60, "lr": 0.05}
    )
    est.fit(blobs)
    assert "val_elbo" in est.history_[-1]
    assert len(est.history_) < 60  # stopped early (lr 0.05 makes the validation ELBO wander)
    with pytest.raises(ValueError, match="leaves no validation"):
        VAE(validation_fraction=0.1, **SMALL).fit(blobs[:3])


def test_pickle_and_clone(fitted, blobs):
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(blobs), fitted.transform(blobs))
    np.testing.assert_array_equal(again.score_samples(blobs[:20]), fitted.score_samples(blobs[:20]))
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params() and not hasattr(fresh, "model_")


def test_save_and_load_round_trip(fitted, blobs, tmp_path):
    path = fitted.save(tmp_path / "run")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "history.jsonl"} <= names
    config = json.loads((path / "config.json").read_text())
    assert set(config) >= {"model", "train", "data"} and config["data"]["source"] == "array"
    loaded = VAE.load(path)
    assert loaded.get_params() == fitted.get_params()
    # trained in float32, so the float32 file holds the weights exactly
    np.testing.assert_array_equal(loaded.transform(blobs), fitted.transform(blobs))
    np.testing.assert_array_equal(loaded.score_samples(blobs[:10]), fitted.score_samples(blobs[:10]))
    assert loaded.history_ == [dict(r) for r in fitted.history_]
    # the CLI's run reader opens it; the run's own data are refused with a clear message
    run = runs.open_run(path)
    assert run.model.latent_dim == 2
    with pytest.raises(vaekit.DataError, match="in-memory arrays .* give the data to use"):
        runs.read_input(run, None)
    np.save(tmp_path / "x.npy", blobs[:5].astype(np.float32))
    assert runs.read_input(run, str(tmp_path / "x.npy")).x.shape == (5, 5)
    with pytest.raises(ValueError, match="exists and is not empty"):
        fitted.save(path)


def test_load_a_cli_run_as_an_estimator(tmp_path):
    result = runs.train(
        {
            "data": "digits",
            "binarize": True,
            "epochs": 2,
            "hidden": (16,),
            "latent_dim": 3,
            "out": str(tmp_path / "r"),
            "progress": False,
            "device": "cpu",
        },
        log=lambda s: None,
    )
    est = VAE.load(result.run_dir)
    assert est.latent_dim == 3 and est.hidden == (16,) and est.n_features_in_ == 64
    x = vaekit.datasets.digits(binarize=True).x[:10]
    expected = vaekit.load(result.run_dir).encode(torch.as_tensor(x)).double().numpy()
    np.testing.assert_allclose(est.transform(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(vaekit.CheckpointError, match="not a vaekit run folder"):
        VAE.load(tmp_path)


def test_feature_names_from_a_dataframe(blobs, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(blobs[:50], columns=list("abcde"))
    est = VAE(random_state=0, **SMALL).fit(frame)
    assert list(est.feature_names_in_) == list("abcde")
    loaded = VAE.load(est.save(tmp_path / "r"))
    assert list(loaded.feature_names_in_) == list("abcde")
    est.set_output(transform="pandas")
    assert list(est.transform(frame).columns) == [f"vae{i}" for i in range(8)]  # the default latent_dim, 8


def test_latent_features_in_a_pipeline_classify_digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    vae = VAE(latent_dim=8, hidden=(32,), activation="tanh", epochs=10, random_state=0, device="cpu")
    pipe = make_pipeline(StandardScaler(), vae, LogisticRegression(max_iter=2000))
    accuracy = pipe.fit(Xtr, ytr).score(Xte, yte)
    assert accuracy > 0.7, accuracy  # chance is 0.1; measured 0.82


def test_grid_search_over_latent_dim(blobs):
    search = GridSearchCV(VAE(random_state=0, **SMALL), {"latent_dim": [1, 2]}, cv=2)
    search.fit(blobs[:120])
    assert search.best_params_["latent_dim"] in (1, 2)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))  # held-out mean log p(x)


# -- the outlier detector ----------------------------------------------------------------
@pytest.fixture(scope="module")
def outlier_case():
    """Inliers near a 2-D plane in 6-D, z ~ N(0, I); outliers far from all of them: 6 standard
    deviations out along the plane and off it. (Outliers off the plane but near its centre
    fool the KL score: the encoder may map them close to the prior's mean.)"""
    rng = np.random.default_rng(2)
    W = rng.normal(size=(2, 6))
    inliers = rng.normal(size=(400, 2)) @ W + 0.1 * rng.normal(size=(400, 6))
    test_in = rng.normal(size=(100, 2)) @ W + 0.1 * rng.normal(size=(100, 6))
    direction = rng.normal(size=(20, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    test_out = (6 * direction + 0.5 * rng.normal(size=(20, 2))) @ W + rng.normal(size=(20, 6))
    X_test = np.vstack([test_in, test_out])
    y_anomaly = np.r_[np.zeros(100), np.ones(20)]
    return inliers, X_test, y_anomaly


def test_detector_finds_obvious_outliers_with_each_score(outlier_case):
    train, X_test, y_anomaly = outlier_case
    vae = VAE(latent_dim=2, hidden=(32,), epochs=40, lr=1e-2, batch_size=64, random_state=0, device="cpu")
    det = VAEOutlierDetector(vae, n_samples=32).fit(train)
    assert roc_auc_score(y_anomaly, -det.score_samples(X_test)) > 0.98
    np.testing.assert_allclose(det.decision_function(X_test), det.score_samples(X_test) - det.offset_)
    np.testing.assert_array_equal(det.predict(X_test), np.where(det.decision_function(X_test) >= 0, 1, -1))
    x = torch.as_tensor(X_test)
    for kind in ("recon", "kl"):  # the same trained model, scored the other two ways
        s = vaekit.anomaly.score(det.vae_.model_, x, kind, 32).numpy()
        assert roc_auc_score(y_anomaly, -s) > 0.98, kind


def test_contamination_sets_the_share_flagged_and_auto_is_tukeys_fence(outlier_case):
    train = outlier_case[0][:200]
    vae = VAE(latent_dim=2, random_state=0, **SMALL)
    for c in (0.05, 0.2):
        det = VAEOutlierDetector(vae, contamination=c)
        flagged = det.fit_predict(train) == -1
        assert np.mean(flagged) == pytest.approx(c, abs=1 / len(train))
        np.testing.assert_array_equal(flagged, det.predict(train) == -1)
    det = VAEOutlierDetector(vae).fit(train)
    s = det.score_samples(train)
    q1, q3 = np.percentile(s, [25, 75])
    assert det.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert np.mean(det.predict(train) == -1) == pytest.approx(np.mean(s < q1 - 1.5 * (q3 - q1)))


def test_detector_kl_score_is_minus_the_kl(outlier_case):
    train = outlier_case[0]
    det = VAEOutlierDetector(VAE(latent_dim=2, random_state=0, **SMALL), score_type="kl").fit(train)
    kl = vaekit.anomaly.kl_to_prior(det.vae_.model_, torch.as_tensor(train[:10])).numpy()
    np.testing.assert_allclose(det.score_samples(train[:10]), -kl, rtol=1e-10)
    assert np.all(kl > 0)


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"contamination": 0.6}, ValueError, r"contamination must be 'auto' or a number in \(0, 0.5\]"),
        ({"contamination": 0.0}, ValueError, "contamination"),
        ({"score_type": "iforest"}, ValueError, "score_type must be one of logpx, recon, kl"),
        ({"n_samples": 0}, ValueError, "n_samples must be an int >= 1"),
        ({"vae": LogisticRegression()}, TypeError, "vae must be a vaekit.VAE"),
    ],
)
def test_detector_bad_parameters(outlier_case, params, error, message):
    with pytest.raises(error, match=message):
        VAEOutlierDetector(**params).fit(outlier_case[0][:20])


def test_detector_grid_search_reaches_the_vae(outlier_case):
    det = VAEOutlierDetector(VAE(**SMALL), random_state=0)
    assert "vae__latent_dim" in det.get_params()
    det.set_params(vae__latent_dim=3).fit(outlier_case[0][:50])
    assert det.vae_.model_.latent_dim == 3 and det.vae_.random_state == 0
