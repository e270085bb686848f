"""One self-contained ``report.html`` per run: configuration, data, history, metrics, figures.

Everything is inside the file: figures as base64 PNG ``data:`` URIs, the style sheet inline,
no scripts, no fonts or links to fetch. The layout is a single column that widens into a grid
of figures on wide screens, and tables scroll sideways instead of overflowing on a phone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import figures, runs
from ._version import __version__

HISTORY_ROWS = 25  # rows of the short history table; the full one is folded below it

CSS = """
:root { --fg: #1d232b; --muted: #5b6572; --bg: #ffffff; --card: #f4f6f9; --line: #dde2e8; --accent: #3b6ea5; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ee; --muted: #a3acb8; --bg: #14181d; --card: #1e242b; --line: #2e3640; --accent: #7fb0e6; }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 1rem 1rem 3rem; }
h1 { font-size: 1.5rem; margin: 0.5rem 0 0.2rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; padding-bottom: 0.25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; color: var(--muted); }
p.sub { margin: 0; color: var(--muted); overflow-wrap: anywhere; }
nav { margin: 0.8rem 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1rem; font-size: 0.9rem; }
nav a { color: var(--accent); text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 9.5rem), 1fr)); gap: 0.6rem; margin: 1rem 0; }
.card { background: var(--card); border-radius: 8px; padding: 0.6rem 0.8rem; }
.card .k { font-size: 0.78rem; color: var(--muted); }
.card .v { font-size: 1.15rem; font-weight: 600; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.card .v.text { font-size: 0.92rem; }
.tables { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); gap: 0 1.5rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.88rem; font-variant-numeric: tabular-nums; margin: 0.2rem 0 0.8rem; }
th, td { text-align: left; padding: 0.22rem 0.7rem 0.22rem 0; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
td { overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 600; }
details { margin: 0.3rem 0 1rem; }
summary { cursor: pointer; color: var(--accent); }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr)); grid-auto-flow: row dense; gap: 1.2rem; }
figure { margin: 0; background: #ffffff; border: 1px solid var(--line); border-radius: 8px; padding: 0.5rem; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }  /* never wider than drawn */
figcaption { color: #5b6572; font-size: 0.85rem; margin-top: 0.35rem; }
.note { color: var(--muted); font-size: 0.88rem; }
.group { margin: 0.2rem 0 1.4rem; }
table.metrics { width: 100%; max-width: 54rem; }
table.metrics td.q { min-width: 7rem; }
.est { display: block; color: var(--muted); font-size: 0.78rem; line-height: 1.35; }
.warn { color: #a4551c; font-size: 0.88rem; overflow-wrap: anywhere; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.8rem; }
"""

WIDE_PX = 700  # figures drawn wider than this span the whole row of the figure grid


# -- small HTML helpers ---------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number or value as text: integers whole, reals to 4 decimals (or 4 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) >= 1e3 else f"{v:.4f}"
        return f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "-"
    return str(value)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def kv_table(d: dict[str, Any], caption: str | None = None) -> str:
    """A two-column key/value table; nested dicts become dotted keys."""
    rows = "".join(
        f'<tr><th scope="row">{_e(k)}</th><td class="{"num" if _is_num(v) else ""}">{_e(fmt(v))}</td></tr>'
        for k, v in _flatten(d)
    )
    head = f"<h3>{_e(caption)}</h3>" if caption else ""
    return f'<div>{head}<div class="scroll"><table>{rows}</table></div></div>'


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def grid_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f'<th class="num">{_e(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(fmt(r.get(c)))}</td>' for c in columns) + "</tr>" for r in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- sections ---------------------------------------------------------------------------------------
HISTORY_COLUMNS = [
    "epoch",
    "train_elbo",
    "train_log_px_z",
    "train_kl",
    "val_elbo",
    "val_log_px_z",
    "val_kl",
    "beta",
    "seconds",
]


def _history_section(history: list[dict[str, Any]], curves_png: bytes | None) -> str:
    if not history:
        return '<p class="note">No epochs recorded yet.</p>'
    columns = [c for c in HISTORY_COLUMNS if any(c in row for row in history)]
    columns += sorted({k for row in history for k in row} - set(columns))
    parts = []
    if curves_png is not None:
        parts.append(_figure_html("curves", curves_png, figures.KINDS["curves"].description))
    n = len(history)
    if n > HISTORY_ROWS:
        picks = sorted(set(np.linspace(0, n - 1, HISTORY_ROWS).round().astype(int).tolist()))
        parts.append(f'<p class="note">{len(picks)} of {n} epochs, evenly spaced (nats per example):</p>')
        parts.append(grid_table([history[i] for i in picks], columns))
        parts.append(f"<details><summary>all {n} epochs</summary>{grid_table(list(history), columns)}</details>")
    else:
        parts.append('<p class="note">Nats per example.</p>')
        parts.append(grid_table(list(history), columns))
    return "\n".join(parts)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure_html(name: str, png: bytes, caption: str) -> str:
    width, height = png_size(png)
    cls = ' class="wide"' if width > WIDE_PX else ""
    return (
        f'<figure{cls} id="fig-{_e(name)}"><img src="{png_data_uri(png)}" width="{width}" height="{height}" '
        f'alt="{_e(name)}: {_e(caption)}"><figcaption><b>{_e(name)}</b>: {_e(caption)}</figcaption></figure>'
    )


def _is_metric(value: Any) -> bool:
    """One quantity as ``vaekit evaluate`` writes it: a mean, its estimator, and more."""
    return isinstance(value, dict) and _is_num(value.get("mean")) and isinstance(value.get("estimator"), str)


def _how(metric: dict[str, Any]) -> str:
    """The estimator without its leading quantity name ('ELBO: 10-sample ...' -> '10-sample ...')."""
    return metric["estimator"].split(": ", 1)[-1]


def metric_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Quantities as rows: the name with its estimator beneath, the mean over the examples, its Monte
    Carlo standard error and the spread over the examples (standard deviation, not an error bar)."""
    head = (
        '<thead><tr><th>quantity (estimator)</th><th class="num">mean</th><th class="num">MC s.e.</th>'
        '<th class="num">std over x</th></tr></thead>'
    )
    body = "".join(
        f'<tr><td class="q">{_e(name)}<span class="est">{_e(_how(m))}</span></td>'
        f'<td class="num">{_e(fmt(m["mean"]))}</td><td class="num">{_e(fmt(m.get("mc_stderr")))}</td>'
        f'<td class="num">{_e(fmt(m.get("std")))}</td></tr>'
        for name, m in rows
    )
    return f'<div class="scroll"><table class="metrics">{head}<tbody>{body}</tbody></table></div>'


def _group(title: str, content: str) -> str:
    return f'<div class="group"><h3>{_e(title)}</h3>{content}</div>'


def _units_group(ev: dict[str, Any], used: set[str]) -> str | None:
    """KL per latent unit, Var_x E_q[z_j|x] and activity, one row per unit (numbered from 1)."""
    kl = (ev.get("kl_per_unit") or {}).get("mean") if isinstance(ev.get("kl_per_unit"), dict) else None
    act = ev.get("active_units") if isinstance(ev.get("active_units"), dict) else {}
    var, active = act.get("posterior_mean_variance"), act.get("active")
    columns = [c for c in (kl, var, active) if isinstance(c, list)]
    if not columns:
        return None
    used |= {"kl_per_unit", "active_units", "posterior_collapse"}
    n = max(len(c) for c in columns)
    cell = lambda c, j: _e(fmt(c[j])) if isinstance(c, list) and j < len(c) else "-"  # noqa: E731
    rows = "".join(
        f'<tr><td class="num">{j + 1}</td><td class="num">{cell(kl, j)}</td>'
        f'<td class="num">{cell(var, j)}</td><td class="num">{cell(active, j)}</td></tr>'
        for j in range(n)
    )
    table = (
        '<div class="scroll"><table><thead><tr><th class="num">unit</th><th class="num">KL (nats)</th>'
        '<th class="num">Var<sub>x</sub> E<sub>q</sub>[z<sub>j</sub>|x]</th><th class="num">active</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )
    notes = []
    if "count" in act:
        notes.append(
            f"{fmt(act['count'])} of {fmt(act.get('of', n))} units active"
            + (f": {act['criterion']}" if act.get("criterion") else "")
        )
    collapse = ev.get("posterior_collapse")
    if isinstance(collapse, dict) and "kind" in collapse:
        notes.append(
            f"posterior collapse: {collapse['kind']}"
            + (f" ({collapse['criterion']})" if collapse.get("criterion") else "")
        )
    if isinstance(ev.get("kl_per_unit"), dict) and ev["kl_per_unit"].get("estimator"):
        notes.append(f"KL per unit: {ev['kl_per_unit']['estimator']}")
    text = "".join(f'<p class="note">{_e(t)}.</p>' for t in notes)
    return _group("Latent units", text + table)


def _gaps_group(ev: dict[str, Any], used: set[str]) -> str | None:
    gaps = ev.get("gaps")
    if not isinstance(gaps, dict):
        return None
    used.add("gaps")
    names = [
        ("log_px", "log p(x), mixture proposal"),
        ("elbo_refined", "L[q*], refined q"),
        ("elbo_encoder", "L[q_enc], the encoder's q"),
        ("approximation", "approximation gap"),
        ("amortisation", "amortisation gap"),
    ]
    rows = [(label, gaps[key]) for key, label in names if _is_metric(gaps.get(key))]
    ref = gaps.get("refinement") if isinstance(gaps.get("refinement"), dict) else {}
    note = (
        '<p class="note">log p(x) - L[q_enc] = approximation gap + amortisation gap. q* is refined per example '
        "from the encoder's output"
        + (
            f" by Adam (step size {ref.get('lr'):g}), at most {ref.get('steps')} steps, "
            f"{ref.get('mean_steps'):.0f} on average; {100 * ref['converged_fraction']:.0f}% of the examples converged"
            if all(_is_num(ref.get(k)) for k in ("lr", "steps", "mean_steps", "converged_fraction"))
            else ""
        )
        + ".</p>"
    )
    return _group("Inference gaps (Cremer et al. 2018)", note + metric_table(rows)) if rows else None


def _evaluate_section(ev: dict[str, Any]) -> str:
    """``vaekit evaluate``'s numbers, grouped: bounds and log p(x), latent units, inference gaps, the rest."""
    used = {"units", "data", "device", "seed", "n_examples", "data_dims", "latent_dim", "warnings"}
    parts = []
    data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
    where = ", ".join(
        x
        for x in (
            str(data["source"]) if data.get("source") else "",
            f"{fmt(data.get('n', ev.get('n_examples')))} examples"
            if data.get("n", ev.get("n_examples")) is not None
            else "",
            f"seed {fmt(ev['seed'])}" if "seed" in ev else "",
            f"on {ev['device']}" if ev.get("device") else "",
        )
        if x
    )
    if where:
        parts.append(f'<p class="note">{_e(where)}; nats per example.</p>')
    bounds: list[tuple[str, dict[str, Any]]] = []
    if _is_metric(ev.get("log_px")):
        bounds.append(("log p(x)", ev["log_px"]))
    iwae = ev.get("iwae") if isinstance(ev.get("iwae"), dict) else {}
    for k in sorted(iwae, key=lambda k: -int(k) if str(k).isdigit() else 0):
        if _is_metric(iwae[k]):
            bounds.append((f"IWAE_{k} bound", iwae[k]))
    for key, label in (
        ("elbo", "ELBO"),
        ("log_px_z", "E_q[log p(x|z)]"),
        ("kl", "KL(q(z|x) || p(z))"),
        ("bits_per_dim", "bits per dimension (bits)"),
    ):
        if _is_metric(ev.get(key)):
            bounds.append((label, ev[key]))
    used |= {"log_px", "iwae", "elbo", "log_px_z", "kl", "bits_per_dim"}
    if bounds:
        parts.append(_group("Log-likelihood and bounds", metric_table(bounds)))
    for group in (_units_group(ev, used), _gaps_group(ev, used)):
        if group:
            parts.append(group)
    for warning in ev.get("warnings") or []:
        parts.append(f'<p class="warn">warning: {_e(warning)}</p>')
    rest = {k: v for k, v in ev.items() if k not in used}
    if rest:
        parts.append(_group("Other numbers", kv_table(rest)))
    return "\n".join(parts)


def _metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return '<p class="note">No metrics.json in this run.</p>'
    parts = []
    if isinstance(metrics.get("evaluate"), dict):
        parts.append(f"<h3>vaekit evaluate</h3>{_evaluate_section(metrics['evaluate'])}")
        parts.append("<h3>At the end of training</h3>")
    notes = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if notes:
        parts.append(kv_table(notes))
    tables = []
    names = {"train": "training split", "val": "validation split", "test": "test split"}
    for key, value in metrics.items():
        if isinstance(value, dict) and key != "evaluate":
            tables.append(kv_table(value, f"{key} ({names[key]})" if key in names else key))
    parts.append(f'<div class="tables">{"".join(tables)}</div>')
    return "\n".join(parts)


def data_summary(run: runs.Run) -> dict[str, Any]:
    """Sizes, shape and value range of the run's data (its training split as the model sees it)."""
    cfg = run.config.get("data", {})
    out: dict[str, Any] = {"name": cfg.get("name"), "source": cfg.get("source")}
    for k, v in (cfg.get("options") or {}).items():
        out[f"option {k}"] = v
    for k, v in (cfg.get("sizes") or {}).items():
        out[f"{k} examples"] = v
    out["shape per example"] = "x".join(str(s) for s in (run.model.data_shape or ()))
    if cfg.get("image_shape"):
        out["image shape"] = "x".join(str(s) for s in cfg["image_shape"])
    if run.condition_kind == "columns":  # a conditional VAE: what c is
        out["condition"] = f"the table columns {', '.join(run.covariates.names)}; {run.covariates.describe()}"
    elif run.condition_kind == "label":
        out["condition"] = f"the class label, one-hot of {run.model.condition_dim} classes"
    split = cfg.get("split") or {}
    if split:
        out["split fractions"] = split.get("fractions")
        out["split seed"] = split.get("seed")
    try:
        train = runs.read_input(run, None, which="train")
    except (ValueError, OSError) as err:
        out["note"] = f"the data could not be read again: {err}"
        return out
    x = train.x
    if not isinstance(x, np.ndarray):  # streamed from disk: summarise a bounded prefix, and say so
        limit = 100_000
        x = np.asarray(x[:limit])
        if len(train) > limit:
            out["summary rows"] = f"the first {limit} of {len(train)} (the data are streamed from disk)"
    out["value range (train)"] = f"{fmt(float(x.min()))} to {fmt(float(x.max()))}"
    out["mean / std (train)"] = f"{fmt(float(x.mean()))} / {fmt(float(x.std()))}"
    out["distinct values (train)"] = int(len(np.unique(x))) if x.size <= 5_000_000 else "-"
    if train.labels is not None:
        classes, counts = np.unique(train.labels, return_counts=True)
        out["classes (train)"] = f"{len(classes)}: " + ", ".join(f"{c} ({n})" for c, n in zip(classes, counts))
    if train.extra:
        out["also known per example"] = ", ".join(train.extra)
    return out


def headline(run: runs.Run, metrics: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The report's cards, (name, value, note): after ``vaekit evaluate`` its log p(x) (estimator,
    k and standard error) and ELBO first, else the ELBO at the end of training."""
    cards: list[tuple[str, Any, str]] = []
    ev = metrics.get("evaluate") if isinstance(metrics.get("evaluate"), dict) else {}
    data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
    on = f"; {data['source']}, {fmt(data.get('n'))} examples" if data.get("source") else ""
    if _is_metric(ev.get("log_px")):
        m = ev["log_px"]
        how = _how(m).split(" (")[0]  # 'importance sampling with q(z|x) as proposal, k=1000'
        k = f", k={fmt(m['samples'])}" if m.get("samples") and f"k={m['samples']}" not in how else ""
        se = f"; MC s.e. {fmt(m['mc_stderr'])}" if _is_num(m.get("mc_stderr")) else ""
        cards.append(("log p(x) (nats)", m["mean"], f"{how}{k}{se}{on}"))
    if _is_metric(ev.get("elbo")):
        m = ev["elbo"]
        se = f"; MC s.e. {fmt(m['mc_stderr'])}" if _is_num(m.get("mc_stderr")) else ""
        cards.append(("ELBO (nats)", m["mean"], f"{_how(m)}{se}{on}"))
    if not cards:
        for split in ("val", "train"):
            if isinstance(metrics.get(split), dict) and "elbo" in metrics[split]:
                cards.append((f"{split} ELBO (nats)", metrics[split]["elbo"], "at the end of training"))
    act = ev.get("active_units")
    if isinstance(act, dict) and "count" in act:
        rule = f"Var_x E_q[z_j|x] > {act['threshold']:g}" if _is_num(act.get("threshold")) else ""
        cards.append(("active units", f"{fmt(act['count'])} of {fmt(act.get('of'))}", rule))
    cards.append(("epochs", len(run.history), ""))
    model = run.config.get("model", {})
    cards.append(("latent dim", model.get("latent_dim", run.model.latent_dim), ""))
    lik = model.get("likelihood") or {}
    if lik:
        cards.append(("likelihood", lik.get("name"), ", ".join(f"{k} {fmt(v)}" for k, v in lik.items() if k != "name")))
    return cards


def _cards(run: runs.Run, metrics: dict[str, Any]) -> str:
    html_cards = []
    for key, value, note in headline(run, metrics):
        cls = "v" if _is_num(value) else "v text"
        note_html = f'<div class="k">{_e(note)}</div>' if note else ""
        html_cards.append(
            f'<div class="card"><div class="k">{_e(key)}</div><div class="{cls}">{_e(fmt(value))}</div>{note_html}</div>'
        )
    return '<div class="cards">' + "".join(html_cards) + "</div>"


def build(
    run: runs.Run,
    pngs: dict[str, bytes],
    *,
    summary: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> str:
    """The report's HTML text for an opened run and its rendered figures (name -> PNG bytes)."""
    if metrics is None:
        metrics = run.folder.read_metrics()
    summary = data_summary(run) if summary is None else summary
    cfg = run.config
    title = f"vaekit run: {run.path.resolve().name}"
    sections: list[tuple[str, str, str]] = []
    sections.append(("metrics", "Final metrics", _metrics_section(metrics)))
    sections.append(("history", "Training history", _history_section(list(run.history), pngs.get("curves"))))
    others = [(n, p) for n, p in pngs.items() if n != "curves"]
    if others:
        figs = "".join(_figure_html(n, p, figures.KINDS[n].description if n in figures.KINDS else n) for n, p in others)
        sections.append(("figures", "Figures", f'<div class="figs">{figs}</div>'))
    config_tables = [kv_table(summary, "data")]
    if isinstance(cfg.get("model"), dict):
        config_tables.append(kv_table(cfg["model"], "model"))
    if isinstance(cfg.get("train"), dict):
        config_tables.append(kv_table(cfg["train"], "training"))
    rest = {k: v for k, v in cfg.items() if k not in ("model", "train", "data")}
    if rest:
        config_tables.append(kv_table(rest, "run"))
    sections.append(("config", "Configuration and data", f'<div class="tables">{"".join(config_tables)}</div>'))

    nav = "".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(name)}</h2>\n{content}\n</section>' for sid, name, content in sections
    )
    subtitle = (
        f"{_e(summary.get('name') or cfg.get('data', {}).get('name', ''))} &middot; created {_e(cfg.get('created', '?'))}"
        f" &middot; vaekit {_e(cfg.get('vaekit_version', __version__))}"
    )
    estimator = metrics.get("estimator")
    lead = (
        '<p class="note">All numbers are in nats per example, higher is better for ELBO and log-likelihoods'
        + (f"; final metrics: {_e(estimator)}" if estimator else "")
        + ".</p>"
    )
    made = _dt.datetime.now().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="sub">{subtitle}</p>
<nav>{nav}</nav>
{_cards(run, metrics)}
{lead}
{body}
<footer>Written by vaekit {_e(__version__)} on {_e(made)} from {_e(str(run.path))}. Self-contained: the figures are embedded; nothing is fetched.</footer>
</main>
</body>
</html>
"""


def write(run: runs.Run | str | Path, pngs: dict[str, bytes] | None = None, out: str | Path | None = None) -> Path:
    """Write the run's report (default ``RUN/report.html``), drawing the figures unless given."""
    if not isinstance(run, runs.Run):
        run = runs.open_run(run)
    if pngs is None:
        pngs = figures.render(run)
    text = build(run, pngs)
    return run.folder.write_report(text, out)


def write_all(
    run: runs.Run | str | Path,
    *,
    dpi: int = 100,
    out: str | Path | None = None,
    processes: int = 1,
    drawing: figures.SharedDrawing | figures.ServedDrawing | None = None,
) -> tuple[Path, dict[str, float]]:
    """Draw the run's figures, write ``figures/*.png`` and the report: (the report's path, wall seconds
    per step: ``figures`` in all, one entry per figure name, and ``report``; and ``processes``, how
    many drew). ``processes`` as in ``figures.render``; ``drawing``, a ``figures.SharedDrawing`` or
    ``figures.ServedDrawing`` of this run already started, is finished instead of drawing anew (its
    figures and dpi)."""
    start = time.perf_counter()
    if not isinstance(run, runs.Run):
        run = runs.open_run(run)
    per_figure: dict[str, float] = {}
    if drawing is None and processes > 1 and figures.can_fork():
        drawing = figures.SharedDrawing(run, dpi=dpi)
    pngs = drawing.finish(per_figure) if drawing is not None else figures.render(run, dpi=dpi, seconds=per_figure)
    figures.write(run.path, pngs)
    drawn = time.perf_counter()
    path = write(run, pngs, out=out)
    seconds = {"figures": drawn - start, **per_figure, "report": time.perf_counter() - drawn}
    return path, {**seconds, "processes": 2 if drawing is not None and drawing.child is not None else 1}


def describe_seconds(seconds: dict[str, float]) -> str:
    """'figures 3.1 s (latent 2.0, curves 0.4, ...), report 0.1 s': the slowest figures first; 'figures
    1.6 s in 2 processes (...)' where two drew at once (the figures' own times then add up to more)."""
    parts = sorted(
        ((k, v) for k, v in seconds.items() if k not in ("figures", "report", "processes")), key=lambda kv: -kv[1]
    )
    detail = ", ".join(f"{k} {v:.1f}" for k, v in parts[:4])
    processes = int(seconds.get("processes", 1))
    return (
        f"figures {seconds.get('figures', 0.0):.1f} s"
        + (f" in {processes} processes" if processes > 1 else "")
        + (f" ({detail})" if detail else "")
        + f", report {seconds.get('report', 0.0):.1f} s"
    )
