"""The self-contained report: its content, that it references nothing outside itself, and that
headless Chromium renders it (all images loaded, no errors, fits a phone) to a non-blank page."""
import base64
import html
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vaekit import figures, report, runs
from vaekit.checkpoint import read_json, write_json
from trained_runs import trained_run


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A copy of a trained run with an 'evaluate' block in metrics.json, its figures and report."""
    src = trained_run("pinwheel", tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(src, path)
    metrics = read_json(path / "metrics.json")
    metrics["evaluate"] = {"test": {"log_px": -2.345678, "stderr": 0.0123, "k": 1000},
                           "estimator": "importance sampling, k=1000", "active_units": 2}
    write_json(path / "metrics.json", metrics)
    run = runs.open_run(path)
    pngs = figures.render(run)
    out = report.write(run, pngs)
    return run, pngs, out, out.read_text(), metrics


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
    assert "evaluate (vaekit evaluate)" in text and "test.log_px" in text and "-2.3457" in text
    assert "importance sampling, k=1000" in text and "active_units" in text
    assert ">latent_dim<" in text and ">beta<" in text and ">0.2500<" in text
    assert "pinwheel" in text and "classes (train)" in text
    rows = re.search(r"<details><summary>all (\d+) epochs</summary>", text)
    assert rows is None and text.count("<tr>") > len(run.history)  # 25 epochs: one full table


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
  var result = {images: imgs.length, broken: broken, errors: window.__errors, width: window.innerWidth,
                scrollWidth: document.documentElement.scrollWidth,
                widest: Math.max.apply(null, imgs.map(function (i) { return i.getBoundingClientRect().right; }))};
  parent.postMessage(JSON.stringify(result), '*');
});
</script>"""

# headless Chromium will not open a window narrower than 500 px, so the page is shown in an
# iframe of the wanted width (its own viewport: media queries and layout follow the iframe)
FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{{margin:0}} iframe{{border:0;display:block}}</style>
<script>window.addEventListener('message', function (e) {{ document.body.setAttribute('data-check', e.data); }});</script>
</head><body><iframe src="{src}" style="width:{width}px;height:{height}px"></iframe></body></html>"""


def _browser(binary, tmp_path, *args, timeout=180):
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium binary on PATH (chromium, chromium-browser or google-chrome); "
                    "install Debian's 'chromium' package to run this test (.ci/run does)")
@pytest.mark.parametrize("width", [390, 1280])  # a phone, a wide screen
def test_chromium_renders_the_report(written, tmp_path, width):
    binary = _chromium()
    _, pngs, out, text, _ = written
    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECK, 1))
    frame = tmp_path / "frame.html"
    frame.write_text(FRAME.format(src=checked.as_uri(), width=width, height=900))
    r = _browser(binary, tmp_path, "--dump-dom", "--virtual-time-budget=10000", f"--window-size={max(width, 800)},900",
                 frame.as_uri())
    match = re.search(r'data-check="([^"]*)"', r.stdout)
    assert match, f"the page did not finish loading: {r.stderr[-2000:]}"
    result = json.loads(html.unescape(match.group(1)))
    assert result["images"] == len(pngs) and result["broken"] == 0 and result["errors"] == []
    assert result["width"] == width
    assert result["scrollWidth"] <= width and result["widest"] <= width + 1  # nothing wider than the screen

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
    assert ink > 0.05, ink  # text and figures, not an empty or error page
    shutil.copy(shot, out.parent / f"screenshot-{width}.png")  # to look at after a run
