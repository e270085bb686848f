"""What the command parsers show that is defined in modules which import torch: names for
``choices`` and defaults for ``--help``, copied here so that ``vaekit COMMAND --help`` and argument
errors load nothing heavy. tests/test_startup.py checks every copy against its source, so a change
there fails the tests until it is made here too."""

from __future__ import annotations

SPLITS = ("train", "val", "test")

# vaekit.anomaly.SCORES: the anomaly scores, in that order
ANOMALY_SCORES = ("logpx", "recon", "kl")

# vaekit.evaluation.GapConfig(): the refinement that --gaps runs
GAP_STEPS = 1000
GAP_LR = 0.02

# vaekit.imputation.DEFAULT_K: importance samples per row
IMPUTE_K = 50

# vaekit.figures.KINDS: figure name -> what it draws
FIGURES = {
    "curves": "ELBO, reconstruction and KL per epoch, train and validation",
    "overview": (
        "the seeds' four panels for 2-D data: data, code, decoded prior samples (a conditional run: per class), curves"
    ),
    "samples": "decoded prior samples (image grid, or over the 2-D data; a conditional run: one row per class)",
    "reconstructions": "held-out images beside their reconstructions",
    "manifold": (
        "decoded grid of latent points through the prior's quantiles (above two latent units: the two "
        "with the most KL, the others at 0; a conditional run: one panel per class, at most 4)"
    ),
    "latent": "map of encoder means (t-SNE above two dimensions), coloured by label or known value",
    "kl_units": "KL per latent unit (nats)",
    "traversal": (
        "one latent unit at a time through the prior's quantiles, others at 0 (a conditional run: one "
        "panel per class, at most 4)"
    ),
    "interpolation": (
        "decoded straight lines between the codes of held-out examples (a conditional run: one per class, "
        "between two examples of it)"
    ),
}
