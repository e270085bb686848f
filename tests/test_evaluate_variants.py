"""evaluate on the richer families: the inference gaps of full-covariance, IAF and conditional runs
from the command line, the KL per unit where it is defined (and why not where it is not), no NaN
anywhere in what is printed or written, and true estimator strings in training's final line."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vaekit import runs
from vaekit.cli import main
from vaekit.evaluation import GapConfig, evaluate, unit_kl
from vaekit.posteriors import FullCovariance
from vaekit.priors import MixtureOfGaussians, StandardNormal
from vaekit.spec import ModelSpec, build_model


def _no_nan(text: str):
    """json.loads that fails on NaN / Infinity."""

    def refuse(name):
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


TRAIN = ["--data", "digits", "--binarize", "--epochs", "2", "--hidden", "16", "--latent-dim", "3"]
TRAIN += ["--no-progress", "--no-figures", "--device", "cpu", "--seed", "0"]


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name, extra in {
        "full": ["--posterior", "full"],
        "iaf": ["--posterior", "iaf"],
        "mog": ["--prior", "mog", "--n-components", "3"],
        "cond": ["--condition", "label", "--epochs", "25", "--lr", "3e-3"],
    }.items():
        assert main(["train", *TRAIN, *extra, "--out", str(root / name)]) == 0
        out[name] = root / name
    return out


GAPS = ["--iw-samples", "60", "--iwae", "none", "--elbo-samples", "4", "--gaps", "--gap-steps", "30"]


@pytest.mark.parametrize("name", ["full", "iaf"])
def test_cli_gaps_of_a_full_covariance_and_an_iaf_run(variant_runs, name, capsys):
    run = variant_runs[name]
    capsys.readouterr()
    assert main(["evaluate", str(run), *GAPS, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "approximation gap" in out and "amortisation gap" in out and "nan" not in out.lower()
    ev = _no_nan((run / "metrics.json").read_text())["evaluate"]  # written, and without NaN
    g = ev["gaps"]
    assert f"q* ({name})" in g["log_px"]["estimator"] and "the model's own q(z|x)" in g["log_px"]["estimator"]
    assert (
        abs(g["log_px"]["mean"] - g["elbo_encoder"]["mean"] - g["approximation"]["mean"] - g["amortisation"]["mean"])
        < 1e-6
    )
    # the refined q is at least as good as the encoder's, and the mixture's log p(x) bounds both ELBOs
    assert g["amortisation"]["mean"] > -4 * g["amortisation"]["mc_stderr"] - 0.05
    assert g["log_px"]["mean"] > g["elbo_refined"]["mean"] - 4 * g["log_px"]["mc_stderr"] - 0.05
    # the gaps' log p(x) and evaluate's own (q as proposal) estimate the same number
    both = g["log_px"]["mc_stderr"] + ev["log_px"]["mc_stderr"]
    assert abs(g["log_px"]["mean"] - ev["log_px"]["mean"]) < 6 * both + 0.2
    if name == "full":  # the KL of the marginals is defined, and said not to add up to the KL
        assert ev["kl_per_unit"]["defined"] and "total correlation" in ev["kl_per_unit"]["estimator"]
        assert len(ev["kl_per_unit"]["mean"]) == 3
    else:
        assert not ev["kl_per_unit"]["defined"] and ev["kl_per_unit"]["mean"] is None
        assert "not defined for posterior=iaf" in ev["kl_per_unit"]["estimator"]
        assert "not defined for posterior=iaf" in out
    assert ev["active_units"]["count"] is not None  # defined for every family


def test_cli_gaps_of_a_conditional_run_are_gaps_of_log_p_x_given_c(variant_runs, capsys):
    run = variant_runs["cond"]
    capsys.readouterr()
    assert main(["evaluate", str(run), *GAPS, "--device", "cpu", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "log p(x|c) [mixture]" in out and "approximation gap" in out and "nan" not in out.lower()
    # the same code path in Python: the labels enter every term (wrong labels fit far worse)
    opened = runs.open_run(run, device=torch.device("cpu"))
    data = runs.read_input(opened, None)
    x = torch.as_tensor(data.x[:12])
    labels = torch.as_tensor(runs.conditions(opened, data, "test")[:12])
    cfg = GapConfig(steps=30, final_samples=50)
    right = evaluate(opened.model, x, iw_samples=100, gaps=cfg, c=labels).gaps
    wrong = evaluate(opened.model, x, iw_samples=100, gaps=cfg, c=(labels + 5) % 10).gaps
    assert "log p(x|c)" in right.log_px.estimator and "q(z|x, c)" in right.log_px.estimator
    assert right.log_px.mean > wrong.log_px.mean + 3
    np.testing.assert_allclose(
        right.log_px.values - right.elbo_encoder.values, right.approximation.values + right.amortisation.values
    )


def test_training_final_line_names_the_kl_estimator(variant_runs, tmp_path, capsys):
    for name, closed in (("mog", False), ("iaf", False), ("full", False)):
        metrics = json.loads((variant_runs[name] / "metrics.json").read_text())
        estimator = metrics["estimator"]
        assert ("closed-form KL" in estimator) == closed, (name, estimator)
        assert "Monte Carlo KL" in estimator and "same 10 draws" in estimator
    capsys.readouterr()
    assert main(["train", *TRAIN, "--out", str(tmp_path / "vae")]) == 0
    printed = capsys.readouterr()
    line = [t for t in (printed.out + printed.err).splitlines() if "final ELBO" in t][-1]
    assert "closed-form KL" in line and "Monte Carlo KL" not in line
    assert main(["train", *TRAIN, "--prior", "vamp", "--n-components", "2", "--out", str(tmp_path / "vamp")]) == 0
    printed = capsys.readouterr()
    line = [t for t in (printed.out + printed.err).splitlines() if "final ELBO" in t][-1]
    assert "Monte Carlo KL" in line and "closed-form" not in line


# -- the KL per unit ----------------------------------------------------------------------------
def test_kl_per_unit_of_a_full_covariance_q_is_the_marginals_and_misses_the_total_correlation():
    torch.manual_seed(0)
    q = FullCovariance(3)(torch.randn(7, FullCovariance(3).n_params(), dtype=torch.float64))
    p = StandardNormal(3).double()()
    values, estimator = unit_kl(q, p)
    var = q.covariance_matrix.diagonal(dim1=-2, dim2=-1)
    formula = 0.5 * (q.loc**2 + var - 1 - var.log())  # KL(N(mu_j, S_jj) || N(0, 1))
    torch.testing.assert_close(values, formula)
    # total KL = sum of the marginals' KLs + total correlation KL(q || prod_j q_j), each in closed form
    total = torch.distributions.kl_divergence(
        q, MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    )
    tc = 0.5 * (var.log().sum(-1) - torch.logdet(q.covariance_matrix))
    torch.testing.assert_close(values.sum(-1) + tc, total)
    assert bool((tc > 0.01).all()) and "total correlation" in estimator and "closed form" in estimator


def test_kl_per_unit_of_a_mixture_prior_is_a_monte_carlo_kl_of_the_marginals():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(2, n_components=3).double()
    with torch.no_grad():
        prior.loc.mul_(2)
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    p = prior()
    loc, scale = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64) + 0.3
    q = torch.distributions.Independent(Normal(loc, scale), 1)
    values, estimator = unit_kl(q, p, samples=40000)
    assert "40000-sample Monte Carlo" in estimator and "not the KL" in estimator
    # independent: the one-dimensional integral on a grid, p_j(z) = sum_k pi_k N(z; mu_kj, s_kj)
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    pi = torch.softmax(prior.logits, 0)
    for j in range(2):
        pj = (pi * Normal(prior.loc[:, j], prior.log_scale[:, j].exp()).log_prob(grid[:, None]).exp()).sum(-1)
        qj = Normal(loc[:, j, None], scale[:, j, None])
        dens = qj.log_prob(grid).exp()
        exact = torch.trapezoid(dens * (qj.log_prob(grid) - pj.log()), grid)
        torch.testing.assert_close(values[:, j], exact.detach(), atol=0.03, rtol=0)


def test_no_nan_is_printed_or_written_for_any_family(tmp_path):
    from vaekit.cli.evaluate import format_table

    x = (torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for kw in (dict(posterior="iaf"), dict(layers=2, top_dim=1), dict(posterior="full", prior="mog"), {}):
        model = build_model(ModelSpec(data_shape=(10,), latent_dim=3, hidden=(8,), likelihood="bernoulli", **kw))
        for rows in (x, x[:1]):  # one example: no variance over examples, no active units
            r = evaluate(
                model, rows, iw_samples=20, iwae_k=(), elbo_samples=1, gaps=GapConfig(steps=5, final_samples=4)
            )
            text = json.dumps(r.to_dict(per_example=True))
            _no_nan(text)
            table = format_table(r, "t")
            assert "nan" not in table.lower(), (kw, table)
            if kw.get("layers") == 2:
                assert r.kl_per_unit is None and "not defined for layers=2" in table
            if kw.get("prior") == "mog":
                assert r.kl_per_unit is not None and math.isfinite(float(r.kl_per_unit.sum()))


def test_kl_units_figure_is_not_drawn_where_the_kl_per_unit_is_not_defined(variant_runs, capsys):
    from vaekit import generate

    assert main(["plot", str(variant_runs["iaf"]), "kl_units"]) == 2
    err = capsys.readouterr().err
    assert "not defined for posterior=iaf" in err and "\n" not in err.strip()
    # a full-covariance run: the figure's numbers are the marginals' KLs, as evaluate reports them
    opened = runs.open_run(variant_runs["full"], device=torch.device("cpu"))
    x = torch.as_tensor(opened.data("test").x)
    assert generate.kl_per_unit_defined(opened.model, x) is None
    r = evaluate(opened.model, x, iw_samples=0, iwae_k=())
    np.testing.assert_allclose(generate.kl_per_unit(opened.model, x).numpy(), r.kl_per_unit.mean(0), rtol=1e-4)


def test_kl_anomaly_score_is_finite_for_every_family_and_a_monte_carlo_kl_where_needed(variant_runs):
    from vaekit import anomaly

    for name in ("iaf", "full", "mog"):
        opened = runs.open_run(variant_runs[name], device=torch.device("cpu"))
        x = torch.as_tensor(opened.data("test").x[:40])
        noise = anomaly.common_noise(2000, opened.model.latent_dim, seed=0)
        kl = anomaly.kl_to_prior(opened.model, x, noise=noise)
        assert bool(torch.isfinite(kl).all()), name
        r = evaluate(opened.model, x, iw_samples=0, iwae_k=(), elbo_samples=200)  # an independent MC KL
        assert abs(float(kl.mean()) - r.kl.mean) < 4 * r.kl.mean_mc_stderr + 0.01, name
        # common draws: each example's score is the same in any batch
        torch.testing.assert_close(anomaly.kl_to_prior(opened.model, x[:7], noise=noise), kl[:7])


def test_kl_units_title_says_whether_the_units_add_up_to_the_kl(variant_runs):
    """A full-covariance q or a mixture prior: the bars are KLs of one-dimensional marginals, and the
    title says their sum is not the KL; a diagonal q and prior (the conditional run): a total."""
    from vaekit import figures, generate

    titles = {}
    for name in ("full", "mog", "cond"):
        opened = runs.open_run(variant_runs[name], device=torch.device("cpu"))
        v = figures.view(opened)
        x = torch.as_tensor(v.held_out.x)
        adds_up = generate.kl_per_unit_adds_up(opened.model, x, c=figures._held_out_c(v, 1))
        assert adds_up is (name == "cond")
        titles[name] = figures.KINDS["kl_units"].make(v).axes[0].get_title()
    assert "sum" in titles["full"] and "(not the KL)" in titles["full"] and "(not the KL)" in titles["mog"]
    assert titles["cond"].startswith("KL per latent unit, total")


def test_an_iaf_runs_manifold_and_traversal_rank_units_by_activity(variant_runs):
    """Where the KL per unit is not defined (an IAF), the manifold's two units and the traversal's order
    come from Var_x E_q[z_j|x] over the held-out examples, and the manifold's title says so."""
    from vaekit import figures, generate

    v = figures.view(runs.open_run(variant_runs["iaf"], device=torch.device("cpu")))
    assert not np.isfinite(figures._kl(v)).all()
    scores, ranked_by = figures._unit_ranking(v)
    mean, _ = generate.encode(v.model, torch.as_tensor(v.held_out.x))
    np.testing.assert_allclose(scores, mean.double().var(0).numpy())
    assert np.isfinite(scores).all() and ranked_by == "the largest Var_x E_q[z_j|x]"
    title = figures.KINDS["manifold"].make(v).axes[0].get_title()
    top2 = sorted(figures.most_informative(scores, 2))
    assert f"$z_{{{top2[0] + 1}}}$ and $z_{{{top2[1] + 1}}}$" in title and "Var_x E_q[z_j|x]" in title
    full = figures.view(runs.open_run(variant_runs["full"], device=torch.device("cpu")))
    assert figures._unit_ranking(full)[1] == "the most KL"  # defined there: the KL per unit
