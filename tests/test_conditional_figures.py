"""The figures of conditional runs, drawn per class: the 2-D overview's prior samples coloured by the
class they were decoded under, the manifold and the traversal with one panel per class (the most
frequent few), the interpolation with one line per class; for a run on table covariates the classes
are the combinations of its categorical covariates. Layout checks, not pixels."""

import numpy as np
import pandas as pd
import pytest

from vaekit import figures, plots, runs
from vaekit.cli import main

FAST = ["--epochs", "3", "--hidden", "16", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def pinwheel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpin") / "run"
    argv = ["train", "--data", "pinwheel", "--condition", "label", "--latent-dim", "2", *FAST, "--out", str(out)]
    assert main(argv) == 0  # with the figures drawn at the end of training
    return out


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ccov")
    r = np.random.default_rng(0)
    n = 300
    group = r.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    shift = pd.Series(group).map({"a": -2.0, "b": 0.0, "c": 2.0}).to_numpy()
    frame = pd.DataFrame(
        {"x1": shift + r.normal(size=n), "x2": shift + r.normal(size=n), "g": group, "dose": r.normal(5, 1, n)}
    )
    frame.to_csv(root / "t.csv", index=False)
    out = root / "run"
    argv = ["train", "--data", str(root / "t.csv"), "--condition-columns", "g,dose", "--latent-dim", "2", *FAST]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_training_writes_the_conditional_figures(pinwheel_run):
    written = {p.stem for p in (pinwheel_run / "figures").glob("*.png")}
    assert {"overview", "manifold", "traversal", "interpolation"} <= written


def test_overview_colours_the_prior_samples_by_class(pinwheel_run):
    v = figures.view(runs.open_run(pinwheel_run))
    fig = figures.KINDS["overview"].make(v)
    samples = fig.axes[2]
    legend = samples.get_legend()
    assert legend.get_title().get_text() == "decoded under"
    assert [t.get_text() for t in legend.get_texts()] == [f"class {k}" for k in range(5)]
    assert "per class" in samples.get_title()


def test_manifold_and_traversal_have_one_panel_per_frequent_class(pinwheel_run):
    run = runs.open_run(pinwheel_run)
    v = figures.view(run)
    counts = np.bincount(runs.class_labels(v.fit))
    expected = sorted(np.argsort(-counts, kind="stable")[: figures.CLASS_PANELS])
    for name in ("manifold", "traversal"):
        fig = figures.KINDS[name].make(v)
        assert _titles(fig) == [f"decoded under class {k}" for k in expected], name
        assert "per class" in fig.get_suptitle()


def test_interpolation_has_one_path_per_class(pinwheel_run):
    v = figures.view(runs.open_run(pinwheel_run))
    fig = figures.KINDS["interpolation"].make(v)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"class {k}" for k in range(5)]


def test_each_panel_is_decoded_under_its_own_class(pinwheel_run, monkeypatch):
    """The panels' grids go through the decoder with their class: record the conditions it is given."""
    from vaekit import generate

    seen = []
    decode = generate.decode

    def recording(model, z, *args, c=None, **kwargs):
        seen.append(c)
        return decode(model, z, *args, c=c, **kwargs)

    monkeypatch.setattr(generate, "decode", recording)
    v = figures.view(runs.open_run(pinwheel_run))
    figures.KINDS["manifold"].make(v)
    assert seen == [k for _, k in figures._groups(v, figures.CLASS_PANELS)] and len(seen) == figures.CLASS_PANELS


def test_covariate_groups_are_the_categorical_combinations(covariate_run):
    run = runs.open_run(covariate_run)
    v = figures.view(run)
    names = [name for name, _ in figures._groups(v, 10)]
    assert names == [f"g={k} (dose at the mean)" for k in ("a", "b", "c")]  # by frequency: 50 %, 30 %, 20 %
    chosen = figures.choose(v)
    assert {"overview", "manifold", "interpolation"} <= set(chosen)
    manifold = figures.KINDS["manifold"].make(v)
    assert _titles(manifold) == [f"decoded under {n}" for n in names]
    overview = figures.KINDS["overview"].make(v)
    assert [t.get_text() for t in overview.axes[2].get_legend().get_texts()] == sorted(names)
    interpolation = figures.KINDS["interpolation"].make(v)
    assert [t.get_text() for t in interpolation.axes[0].get_legend().get_texts()] == ["g=a", "g=b", "g=c"]
    pngs = figures.render(run, ["overview", "manifold", "traversal", "interpolation"], dpi=40)
    assert all(png.startswith(b"\x89PNG") for png in pngs.values())


def test_class_panels_needs_one_title_per_figure():
    fig = plots.image_grid(np.zeros((4, 4)), (2, 2))
    with pytest.raises(ValueError, match="one title per figure"):
        plots.class_panels([fig, fig], ["only one"])
    both = plots.class_panels([fig, fig], ["a", "b"], title="t")
    assert _titles(both) == ["a", "b"] and both.get_suptitle() == "t"


def test_the_report_says_what_the_condition_is(pinwheel_run, covariate_run):
    from vaekit import report

    assert report.data_summary(runs.open_run(pinwheel_run))["condition"] == "the class label, one-hot of 5 classes"
    said = report.data_summary(runs.open_run(covariate_run))["condition"]
    assert said.startswith("the table columns g, dose;") and "g (categorical, one-hot of 3)" in said


def test_the_latent_map_of_a_covariate_run_is_coloured_by_group(covariate_run):
    """The latent map colours a run on table covariates the way its overview does: one colour per
    combination of its categorical covariates (here g), in a legend."""
    v = figures.view(runs.open_run(covariate_run))
    fig = figures.KINDS["latent"].make(v)
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    assert sorted(t.get_text() for t in legend.get_texts()) == ["g=a", "g=b", "g=c"]
