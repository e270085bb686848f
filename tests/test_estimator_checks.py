"""scikit-learn's own conformance suite over vaekit's estimators."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from vaekit import VAE, VAEOutlierDetector

# tiny networks and few epochs: the checks test the API, not the quality of the fit
_SMALL = dict(hidden=(8,), epochs=3, batch_size=64, n_iw_samples=8, device="cpu")

# Checks that cannot apply, with the reason. Empty: every check passes. (scikit-learn itself skips
# the array-API check unless SCIPY_ARRAY_API=1 is set, and its pandas checks when pandas is absent;
# both pass when enabled.)
WAIVED: dict[str, dict[str, str]] = {"VAE": {}, "VAEOutlierDetector": {}}


def _waived(estimator):
    return WAIVED[type(estimator).__name__]


@parametrize_with_checks(
    [VAE(latent_dim=2, **_SMALL), VAEOutlierDetector(VAE(latent_dim=2, **_SMALL), n_samples=8)],
    expected_failed_checks=_waived,
)
def test_sklearn_conformance(estimator, check):
    check(estimator)
