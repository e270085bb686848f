"""Each figure on a small trained model: the picture's size, that it is not blank, its panels or
tiles, and that what it draws is what the model computes."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm
from trained_runs import trained_run

from vaekit import figures, generate, plots, runs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def sine(root):
    return runs.open_run(trained_run("sine", root))


@pytest.fixture(scope="module")
def pinwheel(root):
    return runs.open_run(trained_run("pinwheel", root))


@pytest.fixture(scope="module")
def digits2(root):
    return runs.open_run(trained_run("digits2", root))


@pytest.fixture(scope="module")
def digits4(root):
    return runs.open_run(trained_run("digits4", root))


def rendered(fig):
    """The figure as an RGB array, after checking the PNG's size against the figure's."""
    png = plots.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    w, h = fig.get_size_inches() * fig.dpi
    assert abs(img.shape[0] - h) < 1 and abs(img.shape[1] - w) < 1
    return img


def assert_not_blank(img, min_std=10.0, min_ink=0.01):
    assert img.std() > min_std  # pixel variance: not one flat colour
    ink = (np.abs(img - 255).sum(-1) > 30).mean()
    assert ink > min_ink, ink  # a visible share of the picture is drawn on


def panels(fig):
    """Axes that are panels, not colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def mosaic_of(ax):
    (im,) = ax.get_images()
    return np.ma.filled(np.ma.asarray(im.get_array()).astype(float), np.nan)


def test_training_curves_draw_the_history(sine):
    fig = plots.training_curves(sine.history)
    assert_not_blank(rendered(fig))
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["ELBO", "reconstruction log p(x|z)", "KL(q(z|x) || p(z))"]
    for ax, key in zip(axes, ["elbo", "log_px_z", "kl"]):
        train, val = ax.get_lines()
        np.testing.assert_allclose(train.get_ydata(), sine.history.column(f"train_{key}"))
        np.testing.assert_allclose(val.get_ydata(), sine.history.column(f"val_{key}"))
    with pytest.raises(ValueError, match="history is empty"):
        plots.training_curves([])


def test_to_png_draws_once_and_gives_savefigs_pixels(sine):
    """to_png draws a constrained-layout figure once (savefig: twice) and gives the same pixels, at the
    dpi asked, on white, and puts the figure's dpi and face colour back."""
    from matplotlib.figure import Figure

    def pixels(png):
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))

    codes = np.random.default_rng(0).normal(size=(150, 4))
    made = [
        lambda: plots.training_curves(sine.history),
        lambda: plots.latent_map(codes, colour=codes[:, 0], colour_name="first unit"),  # t-SNE, a colour bar
    ]
    for make in made:
        for dpi in (None, 60):
            fig = make()
            fig.set_facecolor("#123456")
            drawn = []
            fig.draw = lambda renderer, fig=fig, drawn=drawn: (drawn.append(1), Figure.draw(fig, renderer))[1]
            png = plots.to_png(fig, dpi=dpi)
            assert len(drawn) == 1
            assert fig.dpi == 100 and fig.get_facecolor() == pytest.approx((0x12 / 255, 0x34 / 255, 0x56 / 255, 1))
            buf = io.BytesIO()
            reference = make()
            reference.savefig(buf, format="png", dpi=dpi or reference.dpi, facecolor="white")
            ours, theirs = pixels(png), pixels(buf.getvalue())
            assert ours.shape == theirs.shape and (ours == theirs).all()
            assert Image.open(io.BytesIO(png)).info["dpi"] == pytest.approx((dpi or 100, dpi or 100), abs=0.01)


def test_sine_overview_is_the_seed_000_figure(sine):
    data = sine.data("train")
    fig = figures.overview_2d(sine.model, data.x, sine.history, colour=data.extra["phase"], n_samples=300)
    assert_not_blank(rendered(fig))
    axes = panels(fig)
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "Data coloured by true phase" and titles[1] == "Data coloured by encoder mean"
    assert "prior samples" in titles[2] and titles[3] == "Training curves"
    # panel (b) colours each point by its encoder mean
    (points,) = axes[1].collections
    np.testing.assert_allclose(points.get_array(), sine.model.encode(torch.as_tensor(data.x))[:, 0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(points.get_offsets(), data.x)
    # panel (c): 300 decoded prior samples over the data
    grey, samples = axes[2].collections
    assert len(samples.get_offsets()) == 300 and len(grey.get_offsets()) == len(data.x)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        z = torch.randn(300, 1)
    np.testing.assert_allclose(samples.get_offsets(), sine.model.decode(z).numpy(), rtol=1e-5, atol=1e-6)
    assert len(axes[3].get_lines()) == 4  # ELBO, log p(x|z), -KL, validation ELBO


def test_pinwheel_overview_maps_latent_means_by_label(pinwheel):
    data = pinwheel.data("train")
    fig = figures.overview_2d(pinwheel.model, data.x, pinwheel.history, labels=data.labels)
    assert_not_blank(rendered(fig))
    axes = panels(fig)
    assert len(axes) == 4 and axes[1].get_title() == "Encoder means by label"
    (points,) = axes[1].collections
    np.testing.assert_allclose(points.get_offsets(), pinwheel.model.encode(torch.as_tensor(data.x)).numpy(), rtol=1e-5)
    # five classes, five colours, a legend entry each
    assert len(np.unique(points.get_facecolors(), axis=0)) == 5
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="2-D points"):
        figures.overview_2d(pinwheel.model, np.zeros((5, 3)))


def test_tile_places_every_image():
    images = np.arange(7 * 6, dtype=float).reshape(7, 2, 3)  # 7 images of 2x3
    mosaic = plots.tile(images, (2, 3), ncols=3, pad=1)
    assert mosaic.shape == (3 * 3 + 1, 3 * 4 + 1)
    for i in range(7):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(mosaic[1 + 3 * r : 3 + 3 * r, 1 + 4 * c : 4 + 4 * c], images[i])
    assert np.isnan(mosaic[7:9, 5:8]).all()  # the two missing tiles of the last row
    assert (~np.isnan(mosaic)).sum() == 7 * 6
    colour = plots.tile(np.random.rand(4, 3, 5, 5), (3, 5, 5))  # channels first -> HWC
    assert colour.shape == (13, 13, 3)


def test_image_grid_and_reconstructions(digits2):
    x = digits2.data("test").x[:20]
    fig = plots.image_grid(x, (8, 8), ncols=5, value_range=(0, 1))
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    np.testing.assert_array_equal(mosaic_of(ax), plots.tile(x, (8, 8), 5))
    rec = digits2.model.reconstruct(torch.as_tensor(x), sample_z=False).numpy()
    fig = plots.reconstruction_grid(x, rec, (8, 8), ncols=5)
    assert_not_blank(rendered(fig))
    left, right = panels(fig)
    np.testing.assert_array_equal(mosaic_of(left), plots.tile(x, (8, 8), 5))
    np.testing.assert_allclose(mosaic_of(right), plots.tile(rec, (8, 8), 5))
    with pytest.raises(ValueError, match="20 originals but 3"):
        plots.reconstruction_grid(x, rec[:3], (8, 8))


def test_image_manifold_decodes_the_grid_it_claims(digits2):
    steps = 6
    fig = figures.manifold(digits2.model, steps=steps, image_shape=(8, 8))
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    # the grid, built independently: z1 = Phi^-1(p) left to right, z2 = Phi^-1(p) bottom to top
    q = norm.ppf(np.linspace(0.05, 0.95, steps))
    z = np.array([[(q[j], q[steps - 1 - i]) for j in range(steps)] for i in range(steps)], dtype=np.float32)
    decoded = digits2.model.decode(torch.as_tensor(z.reshape(-1, 2))).numpy()
    np.testing.assert_allclose(mosaic_of(ax), plots.tile(decoded, (8, 8), steps), rtol=1e-5, atol=1e-6)
    assert [float(t.get_text()) for t in ax.get_xticklabels()] == pytest.approx(q, abs=0.005)
    assert [float(t.get_text()) for t in ax.get_yticklabels()] == pytest.approx(q[::-1], abs=0.005)
    # the tiles differ: the decoder is not constant over the grid
    assert decoded.std(0).mean() > 0.02


def test_2d_manifold_draws_the_decoded_grid(pinwheel, sine):
    steps = 7
    fig = figures.manifold(pinwheel.model, steps=steps, data=pinwheel.data("train").x)
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    lines = ax.get_lines()
    assert len(lines) == 2 * steps  # rows and columns of the grid
    q = norm.ppf(np.linspace(0.05, 0.95, steps))
    row0 = np.stack([q, np.full(steps, q[-1])], 1).astype(np.float32)  # top row: z2 at its largest
    np.testing.assert_allclose(
        lines[0].get_xydata(), pinwheel.model.decode(torch.as_tensor(row0)).numpy(), rtol=1e-5, atol=1e-6
    )
    fig = figures.manifold(sine.model, steps=steps)
    (ax,) = panels(fig)
    (curve,) = ax.get_lines()
    np.testing.assert_allclose(
        curve.get_xydata(),
        sine.model.decode(torch.as_tensor(q[:, None], dtype=torch.float32)).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_latent_map_2d_pca_and_tsne(pinwheel, digits4):
    data = pinwheel.data("test")
    z = pinwheel.model.encode(torch.as_tensor(data.x)).numpy()
    fig = plots.latent_map(z, labels=data.labels)
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), z)
    assert len(ax.patches) == 2  # prior circles at 1 and 2 standard deviations

    data = digits4.data("test")
    z = digits4.model.encode(torch.as_tensor(data.x)).numpy()
    from sklearn.decomposition import PCA

    fig = plots.latent_map(z, labels=data.labels, method="pca")
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    expected = PCA(2, random_state=0).fit_transform(z.astype(np.float64))
    np.testing.assert_allclose(ax.collections[0].get_offsets(), expected, rtol=1e-4, atol=1e-5)
    assert "PCA" in ax.get_title() and len(ax.get_legend().get_texts()) == len(np.unique(data.labels))

    fig = plots.latent_map(z, labels=data.labels, method="tsne", max_points=120)
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    assert len(ax.collections[0].get_offsets()) == 120 and "t-SNE" in ax.get_title()
    with pytest.raises(ValueError, match="unknown embedding method"):
        plots.latent_map(z, method="umap")


def test_one_dimensional_code_against_the_true_phase(sine):
    data = sine.data("train")
    z = sine.model.encode(torch.as_tensor(data.x)).numpy()
    fig = plots.latent_map(z, colour=data.extra["phase"], colour_name="true phase")
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.stack([data.extra["phase"], z[:, 0]], 1), rtol=1e-6)
    # a learned 1-D code of the sine curve is monotone in the phase
    assert abs(np.corrcoef(data.extra["phase"], z[:, 0])[0, 1]) > 0.9


def test_kl_units_bars(digits4):
    kl = generate.kl_per_unit(digits4.model, torch.as_tensor(digits4.data("test").x)).numpy()
    fig = plots.kl_units(kl)
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    assert len(bars) == 4
    np.testing.assert_allclose([b.get_height() for b in bars], np.maximum(kl, 0), rtol=1e-6)
    fig = plots.kl_units(np.array([0.5, 0.001, 2.0]))
    greys = [p for p in panels(fig)[0].patches if p.get_facecolor()[:3] == pytest.approx((0.69, 0.69, 0.69), abs=0.01)]
    assert len(greys) == 1  # the unit below 0.1 nats


GREY = (0.69, 0.69, 0.69)


def test_kl_units_title_counts_the_bars_it_draws():
    """The default run's case: two units at 0.03 and 0.015 nats, next to bars of 1-2 nats. The title
    counts the blue bars, the near-zero ones are grey and labelled with their values."""
    kl = np.array([1.23, 1.41, 0.032, 1.76, 1.56, 1.71, 0.34, 0.015])
    (ax,) = panels(plots.kl_units(kl))
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    grey = [i + 1 for i, b in enumerate(bars) if b.get_facecolor()[:3] == pytest.approx(GREY, abs=0.01)]
    assert grey == [3, 8]  # units counted from 1, as on the axis
    assert ax.get_title().endswith("6 of 8 units carry at least 0.1 nats")
    assert sorted(t.get_text() for t in ax.texts) == ["0.01", "0.03"]
    (ax,) = panels(plots.kl_units(kl, threshold=0.01))  # the rule is one argument for bars and title alike
    assert ax.get_title().endswith("8 of 8 units carry at least 0.01 nats") and not ax.texts


def test_traversal_rows_are_units(digits4, pinwheel):
    model = digits4.model
    fig = figures.traversal(model, units=[3, 1], steps=5, image_shape=(8, 8))
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    values = norm.ppf(np.linspace(0.05, 0.95, 5))
    z = np.zeros((2, 5, 4), dtype=np.float32)
    z[0, :, 3], z[1, :, 1] = values, values
    expected = model.decode(torch.as_tensor(z.reshape(-1, 4))).numpy()
    np.testing.assert_allclose(mosaic_of(ax), plots.tile(expected, (8, 8), 5), rtol=1e-5, atol=1e-5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["$z_{4}$", "$z_{2}$"]
    fig = figures.traversal(pinwheel.model, steps=6, data=pinwheel.data("test").x)
    assert_not_blank(rendered(fig))
    assert len(panels(fig)[0].get_lines()) == 2  # one curve per unit


def test_interpolation_ends_are_the_examples(digits2, sine):
    x = digits2.data("test").x
    fig = figures.interpolation(digits2.model, x[:3], x[3:6], steps=6, image_shape=(8, 8))
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    mosaic = mosaic_of(ax)
    assert mosaic.shape == (3 * 9 + 1, 8 * 9 + 1)  # 3 rows; example, 6 steps, example
    np.testing.assert_array_equal(mosaic[1:9, 1:9], x[0].reshape(8, 8))
    np.testing.assert_array_equal(mosaic[1:9, 1 + 7 * 9 : 9 + 7 * 9], x[3].reshape(8, 8))
    za, zb = (digits2.model.encode(torch.as_tensor(v)) for v in (x[:1], x[3:4]))
    middle = digits2.model.decode(za + 0.4 * (zb - za)).numpy().reshape(8, 8)  # step 3 of 6 = 2/5 of the way
    np.testing.assert_allclose(mosaic[1:9, 1 + 3 * 9 : 9 + 3 * 9], middle, rtol=1e-5, atol=1e-5)
    fig = figures.interpolation(sine.model, x_from=sine.data("test").x[:2], x_to=sine.data("test").x[2:4], steps=5)
    assert_not_blank(rendered(fig))
    assert len(panels(fig)[0].get_lines()) == 2


def test_figures_leave_no_pyplot_state():
    code = (
        "import numpy as np, sys; from vaekit import plots; "
        "plots.to_png(plots.image_grid(np.random.rand(4, 9), (3, 3))); "
        "plots.to_png(plots.kl_units(np.ones(3))); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_run_figures_choose_by_the_data(sine, pinwheel, digits2, digits4):
    names = lambda run: figures.choose(figures.view(run))  # noqa: E731
    assert names(sine) == ["curves", "overview", "manifold", "kl_units", "interpolation"]
    assert names(pinwheel) == ["curves", "overview", "manifold", "kl_units", "traversal", "interpolation"]
    assert names(digits2) == [
        "curves",
        "samples",
        "reconstructions",
        "manifold",
        "latent",
        "kl_units",
        "traversal",
        "interpolation",
    ]
    assert "manifold" not in names(digits4) and "latent" in names(digits4)  # a 4-D latent: on request
    assert figures.choose(figures.view(digits4), ["manifold", "curves"]) == ["manifold", "curves"]
    with pytest.raises(ValueError, match="cannot draw 'overview' for this run: it needs 2-D data"):
        figures.choose(figures.view(digits4), ["overview"])
    with pytest.raises(ValueError, match="unknown figure 'nope'"):
        figures.choose(figures.view(digits4), ["nope"])


def test_plots_only_draws():
    """plots.py takes arrays and returns figures: it imports no torch and nothing that runs a model."""
    import ast
    import inspect
    from pathlib import Path

    import vaekit.plots

    tree = ast.parse(Path(vaekit.plots.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {("." * node.level) + (node.module or "")} | {("." * node.level) + a.name for a in node.names}
    assert not imported & {"torch", ".model", ".generate", ".runs", ".figures", ".objectives", "."}, imported
    for name in vaekit.plots.__all__:  # and no function takes a model (the figure functions' own code)
        obj = inspect.unwrap(getattr(vaekit.plots, name))
        assert "model" not in (obj.__init__ if isinstance(obj, type) else obj).__code__.co_varnames, name


def test_manifold_above_two_units_moves_the_two_most_informative(digits4):
    model, x = digits4.model, torch.as_tensor(digits4.data("test").x)
    kl = generate.kl_per_unit(model, x).numpy()
    a, b = sorted(np.argsort(kl)[-2:])  # the two units with the most KL, found independently
    steps = 4
    fig = figures.manifold(model, steps=steps, kl=kl, image_shape=(8, 8))
    assert_not_blank(rendered(fig))
    (ax,) = panels(fig)
    q = norm.ppf(np.linspace(0.05, 0.95, steps))
    z = np.zeros((steps, steps, 4), dtype=np.float32)  # the other units at the prior mean 0
    z[:, :, a] = q[None, :]
    z[:, :, b] = q[::-1, None]
    decoded = model.decode(torch.as_tensor(z.reshape(-1, 4))).numpy()
    np.testing.assert_allclose(mosaic_of(ax), plots.tile(decoded, (8, 8), steps), rtol=1e-5, atol=1e-6)
    title = ax.get_title()
    assert f"$z_{{{a + 1}}}$ and $z_{{{b + 1}}}$ of 4, the two units with the most KL" in title
    assert "other units at 0" in title
    assert ax.get_xlabel() == f"$z_{{{a + 1}}}$" and ax.get_ylabel() == f"$z_{{{b + 1}}}$"
    with pytest.raises(ValueError, match="this latent has 4 units: give dims"):
        figures.manifold(model, image_shape=(8, 8))
    # 'vaekit plot RUN manifold curves', as the README has it, on a run whose latent has more than 2 units
    from vaekit.cli import main

    assert main(["plot", str(digits4.path), "manifold", "curves"]) == 0
    assert (digits4.path / "figures" / "manifold.png").is_file()


def test_traverse_counts_units_from_1(digits4, tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "walk.npy"
    assert main(["traverse", str(digits4.path), "--units", "1,4", "--steps", "3", "-o", str(out), "--no-png"]) == 0
    assert "traversed units z1, z4 over 3 values" in capsys.readouterr().out
    walk = np.load(out)
    q = norm.ppf(np.linspace(0.05, 0.95, 3))
    for row, index in ((0, 0), (1, 3)):  # z1 is array index 0, z4 index 3
        z = np.zeros((3, 4), dtype=np.float32)
        z[:, index] = q
        np.testing.assert_allclose(
            walk[row], digits4.model.decode(torch.as_tensor(z)).numpy().reshape(3, -1), rtol=1e-5, atol=1e-6
        )
    for units, bad in (("0,2", 0), ("2,5", 5)):
        assert main(["traverse", str(digits4.path), "--units", units, "-o", str(out), "--no-png"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"unit(s) [{bad}] out of range: this model has units 1..4 (counted from 1)" in err and "\n" not in err


def test_tsne_without_opentsne_falls_back_to_scikit_learn(digits4, monkeypatch):
    z = digits4.model.encode(torch.as_tensor(digits4.data("test").x[:100])).numpy()
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # as if the 'tsne' extra were not installed
    monkeypatch.setattr(plots, "EXACT_TSNE", 50)  # as if these were more codes than the exact gradient takes
    points, _, how = plots.embed_2d(z, "tsne")
    assert points.shape == (100, 2) and np.isfinite(points).all() and "scikit-learn" in how
    again, _, _ = plots.embed_2d(z, "tsne")
    np.testing.assert_array_equal(points, again)  # seeded: the same run gives the same map


@pytest.mark.parametrize("exact", [True, False])
def test_short_tsne_keeps_the_neighbourhoods_of_the_default_one(exact, monkeypatch):
    """The latent map's t-SNE (the exact gradient here up to EXACT_TSNE codes, openTSNE above) runs a
    fifth of openTSNE's default iterations: its map keeps each code's neighbours (trustworthiness) and
    classes (5-NN labels) as well as openTSNE's full-length run does."""
    pytest.importorskip("openTSNE")
    if not exact:
        monkeypatch.setattr(plots, "EXACT_TSNE", 100)
    import openTSNE
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 100)
    centres = rng.normal(0, 1.2, (6, 8))  # overlapping classes: the map has something to get wrong
    z = centres[labels] + rng.normal(0, 1.0, (600, 8))
    short, backend = plots.tsne(z, 30.0, seed=0)
    assert backend == ("exact gradient" if exact else "openTSNE")
    full = np.asarray(openTSNE.TSNE(perplexity=30.0, initialization="pca", random_state=0, neighbors="exact").fit(z))

    def knn(points):
        return cross_val_score(KNeighborsClassifier(5), points, labels, cv=5).mean()

    assert trustworthiness(z, short, n_neighbors=10) > trustworthiness(z, full, n_neighbors=10) - 0.01
    assert knn(short) > knn(full) - 0.03 and knn(short) > 0.8 * knn(z)
    shuffled = rng.permutation(short)  # the checks can fail: a map that lost the neighbourhoods
    assert trustworthiness(z, shuffled, n_neighbors=10) < 0.7 and knn(shuffled) < 0.4


@pytest.mark.parametrize("scale", [1.0, 12.0])
def test_tsne_gradient_is_a_quarter_of_autograds_gradient_of_the_kl(scale):
    """tsne.gradient against torch's autograd of t-SNE's cost: KL(P || Q) = sum p log(p / q) with q_ij = w_ij / Z,
    up to a constant -sum p log w + log Z, whose exaggerated form (P times scale) is -scale sum p log w + log Z."""
    from vaekit.tsne import gradient

    rng = np.random.default_rng(3)
    n = 60
    y = torch.as_tensor(rng.normal(size=(n, 2)), dtype=torch.float64)
    p = torch.as_tensor(rng.random((n, n)))
    p = p + p.T
    p.fill_diagonal_(0)
    p = p / p.sum()
    leaf = y.clone().requires_grad_(True)
    d2 = ((leaf[:, None, :] - leaf[None, :, :]) ** 2).sum(-1)
    w = (1 + d2).reciprocal() * (1 - torch.eye(n, dtype=torch.float64))
    off = p > 0
    cost = -scale * (p[off] * w[off].log()).sum() + w.sum().log()
    (autograd,) = torch.autograd.grad(cost, leaf)
    np.testing.assert_allclose(gradient(y, p, scale).numpy(), autograd.numpy() / 4, rtol=1e-9, atol=1e-12)
    assert not np.allclose(gradient(y, p, scale).numpy(), 0)


def test_exact_tsne_is_deterministic_and_imports_neither_opentsne_nor_scikit_learn():
    import subprocess

    code = (
        "import sys, numpy as np; from vaekit import plots; "
        "z = np.random.default_rng(0).normal(size=(200, 6)); a, how = plots.tsne(z, 20.0); b, _ = plots.tsne(z, 20.0); "
        "print(how, np.array_equal(a, b), a.shape, np.isfinite(a).all(), "
        "sorted(m for m in ('openTSNE', 'sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exact gradient True (200, 2) True []"


# -- two processes drawing at once (figures.SharedDrawing) ---------------------------------------------------
def _fails_in_the_copy(kind, how):
    """A figure kind whose make() misbehaves (``how``) in the forked copy only, and draws normally here."""
    import os

    parent = os.getpid()

    def make(v):
        if os.getpid() != parent:
            how()
        return kind.make(v)

    return figures.Kind(kind.description, make, kind.needs, kind.default)


def test_two_processes_draw_the_same_pngs_as_one(digits4):
    """Every default figure of an image run with a 4-D code (a t-SNE map among them), drawn by this
    process and a forked copy at once, is byte for byte the PNG drawn alone, in the same order; the
    copy drew some of them (its seconds are reported too)."""
    import os

    alone = figures.render(digits4)
    seconds = {}
    drawing = figures.SharedDrawing(digits4)
    copy_pid = drawing.child.pid
    shared = drawing.finish(seconds)
    assert list(shared) == list(alone) and shared == alone
    assert set(seconds) == set(alone) and copy_pid != os.getpid()
    assert not drawing.child.is_alive()


@pytest.mark.parametrize(
    "how",
    ["raises", "dies", "hangs"],
)
def test_a_figure_the_copy_does_not_deliver_is_drawn_here(digits4, monkeypatch, how):
    """The copy failing at a figure, dying, or hanging past CHILD_WAIT_S: that figure (and any it
    had not reached) is drawn by this process, and the PNGs are still those drawn alone."""
    import os
    import time

    alone = figures.render(digits4)

    def misbehave():
        if how == "raises":
            raise RuntimeError("only in the copy")
        if how == "dies":
            os._exit(3)
        time.sleep(600)

    for name in ("latent", "curves"):  # the first two claimed: the copy takes one of them
        monkeypatch.setitem(figures.KINDS, name, _fails_in_the_copy(figures.KINDS[name], misbehave))
    monkeypatch.setattr(figures, "CHILD_WAIT_S", 2.0)
    started = time.perf_counter()
    shared = figures.render(digits4, processes=2)
    assert shared == alone
    assert time.perf_counter() - started < 60  # a hung copy is given up, not waited for


def test_without_a_copy_this_process_draws_them_all(digits4, monkeypatch):
    """Where the copy cannot be started (here: the shared counter's semaphore cannot be made, as without
    /dev/shm), SharedDrawing draws every figure in this process."""
    import multiprocessing.context

    def no_semaphores(self, *args, **kwargs):
        raise OSError(38, "Function not implemented")

    alone = figures.render(digits4)
    monkeypatch.setattr(multiprocessing.context.BaseContext, "Value", no_semaphores)
    drawing = figures.SharedDrawing(digits4)
    assert drawing.child is None
    assert drawing.finish() == alone


def test_one_figure_is_not_shared(digits4):
    drawing = figures.SharedDrawing(digits4, ["kl_units"])
    assert drawing.child is None  # no copy forked for a single figure
    assert drawing.finish() == figures.render(digits4, ["kl_units"])


def test_a_figure_that_fails_everywhere_raises_here(digits4, monkeypatch):
    def broken(v):
        raise RuntimeError("this figure cannot be drawn")

    kind = figures.KINDS["kl_units"]
    monkeypatch.setitem(figures.KINDS, "kl_units", figures.Kind(kind.description, broken, kind.needs, kind.default))
    with pytest.raises(RuntimeError, match="cannot be drawn"):
        figures.render(digits4, processes=2)


def test_two_processes_only_where_two_cores_are_free(monkeypatch):
    from vaekit import train

    monkeypatch.setattr(train, "free_cores", lambda: 2)
    assert figures.processes_free() == (2 if sys.platform.startswith("linux") else 1)
    monkeypatch.setattr(train, "free_cores", lambda: 1)
    assert figures.processes_free() == 1


def test_the_exact_tsne_map_does_not_depend_on_the_thread_count():
    """The optimisation turns the last bits that a sum over threads changes into a different map, so it
    runs on one thread whatever torch is set to (and torch's setting is put back)."""
    from vaekit.tsne import exact_tsne

    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 6)) + np.repeat(rng.normal(0, 3, (3, 6)), 100, 0)
    before = torch.get_num_threads()
    try:
        maps = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            maps.append(exact_tsne(z, 30.0))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(maps[0], maps[1])
