"""The self-contained report: its content, that it references nothing outside itself, and that
headless Chromium renders it (all images loaded, no errors, fits a phone) to a non-blank page."""

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trained_runs import trained_run

from vaekit import figures, report, runs
from vaekit.checkpoint import read_json
from vaekit.cli import main


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A copy of a trained run after 'vaekit evaluate' (with the gaps), its figures and report."""
    src = trained_run("pinwheel", tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(src, path)
    assert (
        main(
            [
                "evaluate",
                str(path),
                "--iw-samples",
                "50",
                "--iwae",
                "5",
                "--elbo-samples",
                "4",
                "--gaps",
                "--gap-steps",
                "10",
            ]
        )
        == 0
    )
    metrics = read_json(path / "metrics.json")
    run = runs.open_run(path)
    pngs = figures.render(run)
    out = report.write(run, pngs)
    return run, pngs, out, out.read_text(), metrics


def cards_of(text):
    """(name, value, note) of each headline card, as the reader sees them."""
    found = re.findall(
        r'<div class="card"><div class="k">(.*?)</div><div class="v[^"]*">(.*?)</div>'
        r'(?:<div class="k">(.*?)</div>)?</div>',
        text,
    )
    return [tuple(html.unescape(part) for part in card) for card in found]


def external_references(text):
    refs = re.findall(r"""\b(?:src|href|action|poster|srcset)\s*=\s*["']([^"']*)["']""", text, flags=re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]*)""", text, flags=re.I)
    bad = [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]
    bad += re.findall(r"(?:https?|ftp|wss?):", text, flags=re.I) + re.findall(r"@import", text)
    return bad


def test_report_holds_config_history_metrics_and_figures(written):
    run, pngs, out, text, metrics = written
    assert out == run.path / "report.html"
    assert external_references(text) == []
    assert "<script" not in text.lower()
    # every figure embedded, as the very PNG that was rendered
    imgs = re.findall(r"<img\b[^>]*>", text)
    assert len(imgs) == len(pngs) == 6
    for tag in imgs:
        src = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
        png = base64.b64decode(src, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in pngs.values()
        Image.open(io.BytesIO(png)).verify()
    # the numbers: final metrics, evaluate's block, configuration, history
    for value in (metrics["train"]["elbo"], metrics["val"]["elbo"], metrics["train"]["kl"]):
        assert f"{value:.4f}" in text
    ev = metrics["evaluate"]
    for value in (
        ev["log_px"]["mean"],
        ev["log_px"]["mc_stderr"],
        ev["iwae"]["5"]["mean"],
        ev["elbo"]["mean"],
        ev["gaps"]["amortisation"]["mean"],
        ev["kl_per_unit"]["mean"][1],
    ):
        assert report.fmt(value) in text
    assert "importance sampling with q(z|x) as proposal, k=50" in text
    for heading in (
        "Log-likelihood and bounds",
        "Latent units",
        "Inference gaps (Cremer et al. 2018)",
        "At the end of training",
    ):
        assert f"<h3>{heading}</h3>" in text
    assert "test.log_px" not in text and "log_px.mean" not in text  # no flattened dotted keys
    assert ">latent_dim<" in text and ">beta<" in text and ">0.2500<" in text
    assert "pinwheel" in text and "classes (train)" in text
    rows = re.search(r"<details><summary>all (\d+) epochs</summary>", text)
    assert rows is None and text.count("<tr>") > len(run.history)  # 25 epochs: one full table


def test_headline_cards_hold_log_px_and_elbo(written):
    run, _, _, text, metrics = written
    ev = metrics["evaluate"]
    (name, value, note), (name2, value2, note2) = cards_of(text)[:2]
    assert name == "log p(x) (nats)" and value == report.fmt(ev["log_px"]["mean"])
    assert (
        "importance sampling" in note and "k=50" in note and f"MC s.e. {report.fmt(ev['log_px']['mc_stderr'])}" in note
    )
    assert name2 == "ELBO (nats)" and value2 == report.fmt(ev["elbo"]["mean"]) and "4-sample Monte Carlo" in note2
    assert ("active units", f"{ev['active_units']['count']} of 2", "Var_x E_q[z_j|x] > 0.01") in cards_of(text)
    # one row per latent unit, numbered from 1 as everywhere
    units = re.search(r"<h3>Latent units</h3>.*?<tbody>(.*?)</tbody>", text, flags=re.S).group(1)
    assert re.findall(r'<tr><td class="num">(\d+)</td>', units) == ["1", "2"]
    # before 'vaekit evaluate' the cards show the ELBO at the end of training
    before = {k: v for k, v in metrics.items() if k != "evaluate"}
    plain = report.build(run, {}, metrics=before, summary={})
    assert [c[:2] for c in cards_of(plain)[:2]] == [
        ("val ELBO (nats)", report.fmt(before["val"]["elbo"])),
        ("train ELBO (nats)", report.fmt(before["train"]["elbo"])),
    ]


def test_an_evaluate_block_of_another_shape_is_shown_not_lost(written):
    run, _, _, _, metrics = written
    odd = {**metrics, "evaluate": {"test": {"log_px": -2.345678, "k": 1000}, "note": "made by hand"}}
    text = report.build(run, {}, metrics=odd, summary={})
    assert "<h3>Other numbers</h3>" in text and "-2.3457" in text and "made by hand" in text
    assert cards_of(text)[0][0] == "val ELBO (nats)"  # no log p(x) card from numbers it cannot name


def test_report_without_figures_or_metrics(tmp_path_factory):
    src = trained_run("sine", tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("bare") / "run"
    shutil.copytree(src, path)
    (path / "metrics.json").unlink()
    text = report.build(runs.open_run(path), {})
    assert "No metrics.json in this run." in text and "<img" not in text and external_references(text) == []


def test_long_histories_are_folded(written):
    run, _, _, _, _ = written
    run.history = run.history * 8  # 200 rows
    text = report.build(run, {})
    assert "<details><summary>all 200 epochs</summary>" in text
    assert "25 of 200 epochs" in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || (e.target && e.target.tagName) || e.type)); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  function all(selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); }
  function overflows(e) { return e.scrollWidth > e.clientWidth + 1; }
  var text = function (e) { return e.textContent.trim().slice(0, 80); };
  var metrics = document.getElementById('metrics');
  var result = {images: imgs.length, broken: broken, errors: window.__errors, width: window.innerWidth,
                scrollWidth: document.documentElement.scrollWidth,
                widest: Math.max.apply(null, imgs.map(function (i) { return i.getBoundingClientRect().right; })),
                // a value is clipped when its cell or card is narrower than its text, or when a metrics
                // table is wider than its column (only a sideways scroll would show the rest)
                clipped: all('td, th, .card .k, .card .v').filter(overflows).map(text),
                hidden: all('#metrics .scroll').filter(overflows).map(text),
                cards: all('.card').slice(0, 2).map(function (c) { return [text(c.querySelector('.k')), text(c.querySelector('.v'))]; }),
                metricsHeight: metrics.getBoundingClientRect().height};
  parent.postMessage(JSON.stringify(result), '*');
});
</script>"""

# headless Chromium will not open a window narrower than 500 px, so the page is shown in an
# iframe of the wanted width (its own viewport: media queries and layout follow the iframe)
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{{margin:0}} iframe{{border:0;display:block}}</style>
<script>window.addEventListener('message', function (e) {{ document.body.setAttribute('data-check', e.data); }});</script>
</head><body><iframe src="{src}" style="width:{width}px;height:{height}px"></iframe></body></html>"""


def _browser(binary, tmp_path, *args, timeout=180):
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium binary on PATH (chromium, chromium-browser or google-chrome); "
    "install Debian's 'chromium' package to run this test (.ci/run does)",
)
@pytest.mark.parametrize("width", [390, 1280])  # a phone, a wide screen
def test_chromium_renders_the_report(written, tmp_path, width):
    binary = _chromium()
    _, pngs, out, text, _ = written
    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECK, 1))
    frame = tmp_path / "frame.html"
    frame.write_text(FRAME.format(src=checked.as_uri(), width=width, height=900))
    r = _browser(
        binary,
        tmp_path,
        "--dump-dom",
        "--virtual-time-budget=10000",
        f"--window-size={max(width, 800)},900",
        frame.as_uri(),
    )
    match = re.search(r'data-check="([^"]*)"', r.stdout)
    assert match, f"the page did not finish loading: {r.stderr[-2000:]}"
    result = json.loads(html.unescape(match.group(1)))
    assert result["images"] == len(pngs) and result["broken"] == 0 and result["errors"] == []
    assert result["width"] == width
    assert result["scrollWidth"] <= width and result["widest"] <= width + 1  # nothing wider than the screen
    assert result["clipped"] == [] and result["hidden"] == []
    ev = written[4]["evaluate"]
    assert result["cards"] == [
        ["log p(x) (nats)", report.fmt(ev["log_px"]["mean"])],
        ["ELBO (nats)", report.fmt(ev["elbo"]["mean"])],
    ]
    assert result["metricsHeight"] < (3600 if width < 600 else 2000), result[
        "metricsHeight"
    ]  # grouped, not one long list

    # the report itself (no test script), at the same width, as a picture
    frame.write_text(FRAME.format(src=out.as_uri(), width=width, height=2400))
    shot = tmp_path / "shot.png"
    r = _browser(binary, tmp_path, f"--screenshot={shot}", f"--window-size={max(width, 800)},2400", frame.as_uri())
    assert shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[0] == 2400 and img.shape[1] >= width
    img = img[:, :width]
    assert img.std() > 20
    ink = (np.abs(img - 255).sum(-1) > 60).mean()
    assert ink > 0.03, ink  # text and figures (the metrics tables come first), not an empty or error page
    shutil.copy(shot, out.parent / f"screenshot-{width}.png")  # to look at after a run


def _train_sine(*extra):
    return main(
        [
            "train",
            "--data",
            "sine",
            "--epochs",
            "2",
            "--latent-dim",
            "1",
            "--hidden",
            "8",
            "--out",
            "r",
            "--no-progress",
        ]
        + list(extra)
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_train_says_where_the_time_went(tmp_path, monkeypatch, capsys, processes):
    monkeypatch.setattr(figures, "processes_free", lambda: processes)
    monkeypatch.chdir(tmp_path)
    assert _train_sine() == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    number = r"([\d.]+)"
    shared = " in 2 processes" if processes == 2 else ""
    match = re.fullmatch(
        rf"time: {number} s wall = data and setup {number} s \+ train {number} s \+ checkpoints {number} s \+ "
        rf"final metrics {number} s \+ figures {number} s{shared} \((.*)\) \+ report {number} s; wall / train {number}",
        last,
    )
    assert match, last  # called from Python, not as the command: no start-up part
    wall, setup, train, ckpt, metrics, figs, detail, rep, ratio = match.groups()
    parts = [float(v) for v in (setup, train, ckpt, metrics, figs, rep)]
    assert sum(parts) == pytest.approx(float(wall), abs=0.35)  # the parts add up (each rounded to 0.1 s)
    per_figure = dict(part.split(" ") for part in detail.split(", "))
    assert set(per_figure) <= set(figures.KINDS) and len(per_figure) == 4  # the four slowest of the figures drawn
    # each figure's own time; two processes draw at once, so theirs may add up to twice the wall time
    assert sum(map(float, per_figure.values())) <= processes * float(figs) + 0.1 * processes
    history = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    epochs = sum(r["seconds"] for r in history)
    assert float(train) == pytest.approx(epochs, abs=0.06)
    assert float(ratio) == pytest.approx(float(wall) / epochs, rel=0.1)  # wall / the epochs' own seconds
    assert (tmp_path / "r" / "report.html").is_file()


def test_train_draws_in_two_processes_from_the_saved_model_on(tmp_path, monkeypatch, capsys):
    """Where two cores are free, a forked copy starts drawing as soon as the final weights are saved,
    before the final metrics, which then take 1 thread; this process draws the rest after them. The
    figures written are byte for byte those that one process draws from the finished run."""
    import torch

    from vaekit.runs import pipeline

    calls = []
    real_init, real_finish = figures.SharedDrawing.__init__, figures.SharedDrawing.finish
    real_metrics = pipeline.final_metrics

    def init(self, run, *args, **kwargs):
        calls.append(("copy starts", (Path(run) / "model.safetensors").is_file()))
        real_init(self, run, *args, **kwargs)

    def finish(self, *args, **kwargs):
        calls.append(("finish", torch.get_num_threads()))
        return real_finish(self, *args, **kwargs)

    def metrics(*args, **kwargs):
        calls.append(("final metrics", torch.get_num_threads()))
        return real_metrics(*args, **kwargs)

    monkeypatch.setattr(figures, "processes_free", lambda: 2)
    monkeypatch.setattr(figures.SharedDrawing, "__init__", init)
    monkeypatch.setattr(figures.SharedDrawing, "finish", finish)
    monkeypatch.setattr(pipeline, "final_metrics", metrics)
    monkeypatch.chdir(tmp_path)
    assert _train_sine("--threads", "2") == 0
    assert [c[0] for c in calls] == ["copy starts", "final metrics", "finish"]
    assert calls[0][1] is True and calls[1][1] == 1 and calls[2][1] == 2  # drawing itself goes back to 1 inside
    out = capsys.readouterr().out
    assert "in 2 processes" in out.strip().splitlines()[-1]
    written = {p.stem: p.read_bytes() for p in (tmp_path / "r" / "figures").glob("*.png")}
    alone = figures.render(runs.open_run(tmp_path / "r"))
    assert written == alone and len(alone) >= 3


@pytest.mark.parametrize("processes", [1, 2])
def test_a_drawing_failure_leaves_the_trained_run_whole(tmp_path, monkeypatch, capsys, processes):
    """Figures that cannot be drawn (here: the view of the run fails) do not stop the run before its
    final metrics, also where the copy would start drawing before them: the run is complete, the
    command says so in one line and exits 1."""

    def broken(run):
        raise RuntimeError("no view of this run")

    monkeypatch.setattr(figures, "processes_free", lambda: processes)
    monkeypatch.setattr(figures, "view", broken)
    monkeypatch.chdir(tmp_path)
    assert _train_sine() == 1
    err = capsys.readouterr().err.strip()
    assert "is complete, but drawing its figures failed (RuntimeError: no view of this run)" in err
    assert "\n" not in err
    assert (tmp_path / "r" / "metrics.json").is_file() and (tmp_path / "r" / "model.safetensors").is_file()
    assert not (tmp_path / "r" / "report.html").exists()


def test_train_draws_nothing_and_imports_no_drawing_library_beside_training(tmp_path):
    """Training runs alone in its process: when fit returns, matplotlib has not been imported and no
    thread but the main one (and tqdm's monitor) is running; the figures are drawn after it. A thread
    that imported matplotlib beside training made the default run's epochs 0.2-0.5 s longer (it
    holds the interpreter lock) for 0.3 s less drawing."""
    import sys

    code = (
        "import sys, threading, json\n"
        "import vaekit.runs.pipeline as p\n"
        "from vaekit.cli import main\n"
        "real = p.fit\n"
        "seen = {}\n"
        "def fit(*a, **k):\n"
        "    r = real(*a, **k)\n"
        "    seen['matplotlib'] = 'matplotlib' in sys.modules\n"
        "    seen['threads'] = sorted(t.name for t in threading.enumerate())\n"
        "    return r\n"
        "p.fit = fit\n"
        "code = main(['train', '--data', 'sine', '--epochs', '3', '--latent-dim', '1', '--hidden', '8',"
        " '--out', sys.argv[1]])\n"
        "seen['after'] = 'matplotlib' in sys.modules\n"
        "print(json.dumps(seen)); sys.exit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["matplotlib"] is False and seen["after"] is True
    assert set(seen["threads"]) <= {"MainThread", "tqdm_monitor"}  # tqdm's progress bar wakes every 10 s
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "figures" / "curves.png").is_file()


def test_the_time_line_of_the_command_counts_its_start_up():
    import subprocess
    import sys

    from vaekit.cli.train import describe_time

    code = "import time; time.sleep(0.3); from vaekit.cli.train import _since_process_start as s; print(s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    age = float(out.stdout)
    assert 0.3 <= age < 30  # this process's own age, from /proc: the sleep and the imports, not the machine's uptime
    spent = {"startup": 1.0, "train": 4.0, "checkpoints": 0.5, "final_metrics": 0.2, "run": 5.0}
    line = describe_time(spent, {"figures": 1.0, "latent": 0.6, "report": 0.1}, since_start=6.5)
    assert line == (
        "time: 7.5 s wall = start-up 1.0 s + data and setup 0.3 s + train 4.0 s + checkpoints 0.5 s + "
        "final metrics 0.2 s + figures 1.0 s (latent 0.6) + report 0.1 s; wall / train 1.88"
    )


def test_final_metrics_and_figures_run_with_the_training_thread_count(tmp_path, monkeypatch, capsys):
    """After the epochs, the small batches of the final metrics and figures keep the thread count
    training used (here --threads 1 under a default of 2), and torch's setting is restored after."""
    import torch

    from vaekit.runs import pipeline

    seen = {}
    real_metrics, real_render = pipeline.final_metrics, figures.render

    def metrics(*args, **kwargs):
        seen["final_metrics"] = torch.get_num_threads()
        return real_metrics(*args, **kwargs)

    def render(*args, **kwargs):
        seen["figures"] = torch.get_num_threads()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(pipeline, "final_metrics", metrics)
    monkeypatch.setattr(figures, "render", render)
    monkeypatch.setattr(figures, "processes_free", lambda: 1)  # one process draws (two: the test above)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _train_sine("--threads", "1") == 0
        assert seen == {"final_metrics": 1, "figures": 1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
