"""Figures drawn in a process of their own (vaekit.drawing): a recorded figure (plots.Drawing) is the
figure drawn at once, byte for byte, and needs no torch to unpickle and draw; the drawing process
started before torch delivers the same PNGs as this process, and whatever it fails at, dies at or
hangs at is drawn here; ``vaekit train`` as a command never imports matplotlib in its own process."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trained_runs import trained_run

from vaekit import drawing, figures, plots, runs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def digits4(root):
    return runs.open_run(trained_run("digits4", root))


@pytest.fixture(scope="module")
def conditional_digits(tmp_path_factory):
    """A conditional image run: its manifold and traversal are panels per class (nested drawings)."""
    out = tmp_path_factory.mktemp("cdig") / "run"
    settings = dict(data="digits", binarize=True, condition="label", latent_dim=2, hidden=(32,), epochs=2)
    runs.train({**settings, "out": str(out), "progress": False, "seed": 0}, log=lambda _: None)
    return runs.open_run(out)


def _every_figure(run):
    v = figures.view(run)
    run.model.eval()
    return v, [name for name, kind in figures.KINDS.items() if kind.needs(v) is None]


def _recorded(v, name):
    with plots.recording():
        return figures.KINDS[name].make(v)


@pytest.mark.parametrize("kind", ["sine", "pinwheel", "digits2", "digits4", "conditional"])
def test_a_recorded_figure_is_the_figure_drawn_at_once(kind, root, conditional_digits):
    """Every figure that applies to the run, the defaults and those drawn on request: recorded, sent
    through pickle and drawn, it is byte for byte the PNG of the figure drawn at once."""
    run = conditional_digits if kind == "conditional" else runs.open_run(trained_run(kind, root))
    v, names = _every_figure(run)
    assert len(names) >= 4
    for name in names:
        recorded = _recorded(v, name)
        assert isinstance(recorded, plots.Drawing), name
        assert plots.to_png(pickle.loads(pickle.dumps(recorded))) == plots.to_png(figures.KINDS[name].make(v)), name


def test_a_drawing_needs_no_torch(digits4, conditional_digits, tmp_path):
    """What a recorded figure holds is builtins and numpy arrays (the history a plain list of dicts,
    the t-SNE map's points computed when it was recorded): a fresh interpreter unpickles and draws
    every one without importing torch, into the same PNGs."""
    recorded, expected = {}, {}
    for tag, run in (("d4", digits4), ("cond", conditional_digits)):
        v, names = _every_figure(run)
        for name in names:
            recorded[f"{tag}-{name}"] = _recorded(v, name)
            expected[f"{tag}-{name}"] = plots.to_png(recorded[f"{tag}-{name}"])
    (tmp_path / "drawings.pkl").write_bytes(pickle.dumps(recorded))
    code = (
        "import pickle, sys\n"
        "drawings = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "from vaekit import plots\n"
        "pngs = {name: plots.to_png(d) for name, d in drawings.items()}\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "open(sys.argv[2], 'wb').write(pickle.dumps(pngs))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "drawings.pkl"), str(tmp_path / "pngs.pkl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert pickle.loads((tmp_path / "pngs.pkl").read_bytes()) == expected


def test_recording_computes_the_maps_embedding_where_it_is_recorded(digits4):
    """A latent map above two dimensions carries its t-SNE points: drawing it computes nothing."""
    v, _ = _every_figure(digits4)
    recorded = _recorded(v, "latent")
    points, index, how = recorded.kwargs["embedding"]
    assert points.shape == (len(index), 2) and how.startswith("t-SNE")
    assert not plots._RECORDING.get()  # recording ends with its block


def test_the_server_draws_the_pngs_this_process_would(digits4):
    """Every default figure of a run with a t-SNE map, recorded here and drawn by the server, is byte
    for byte the PNG drawn here; the server is another process, and it and its folder are gone after."""
    alone = figures.render(digits4)
    server = drawing.DrawingServer.start()
    assert server is not None and server.process.pid != os.getpid()
    seconds = {}
    served = figures.ServedDrawing(digits4, server)
    assert served.sent == [n for n in alone if n != "latent"] + ["latent"]  # the t-SNE map recorded last
    pngs = served.finish(seconds)
    assert list(pngs) == list(alone) and pngs == alone
    assert set(seconds) == set(alone) and all(s > 0 for s in seconds.values())
    assert not server.process.is_alive() and not Path(server.folder).exists()


def _misbehaving(how):
    """A drawing function that fails (``how``) in the server, which is forked with it registered."""

    def draw():
        if how == "raises":
            raise RuntimeError("only in the server")
        if how == "dies":
            os._exit(3)
        time.sleep(600)

    return draw


@pytest.mark.parametrize("how", ["raises", "dies", "hangs"])
def test_a_figure_the_server_does_not_deliver_is_drawn_here(digits4, monkeypatch, how):
    """The server failing at a figure, dying, or hanging past CHILD_WAIT_S: that figure, and any it
    had not reached, is drawn by this process, and the PNGs are still those drawn alone."""
    alone = figures.render(digits4)
    monkeypatch.setitem(plots._DRAWERS, "misbehave", _misbehaving(how))
    kind = figures.KINDS["curves"]

    def make(v):  # the curves figure: a drawing that misbehaves where it is recorded, the figure elsewhere
        return plots.Drawing("misbehave", (), {}) if plots._RECORDING.get() else kind.make(v)

    monkeypatch.setitem(figures.KINDS, "curves", figures.Kind(kind.description, make, kind.needs, kind.default))
    monkeypatch.setattr(figures, "CHILD_WAIT_S", 3.0)
    server = drawing.DrawingServer.start()
    started = time.perf_counter()
    assert figures.ServedDrawing(digits4, server).finish() == alone
    assert time.perf_counter() - started < 60  # a hung server is given up, not waited for
    assert not server.process.is_alive()


def _meeting(folder, size: int = 2):
    """A drawing function that returns only once ``size`` drawings of it have started: each one marks
    its start, waits up to 30 s for the others' marks, writes how many were drawing at that moment,
    holds on for a second and marks its end. Drawn fewer than ``size`` at a time, the first would raise."""
    import numpy as np

    def draw(tag):
        (folder / f"start-{tag}").touch()
        deadline = time.perf_counter() + 30
        while len(list(folder.glob("start-*"))) < size:
            if time.perf_counter() > deadline:
                raise RuntimeError("drawn alone")
            time.sleep(0.01)
        drawing_now = len(list(folder.glob("start-*"))) - len(list(folder.glob("end-*")))
        (folder / f"seen-{tag}").write_text(str(drawing_now))
        time.sleep(1.0)
        (folder / f"end-{tag}").touch()
        return plots.kl_units(np.array([1.0, 0.5]))

    return draw


def test_the_server_draws_two_figures_at_once_and_no_more(monkeypatch, tmp_path):
    """With two drawers, two figures are drawn at the same time (each waits for the other to start),
    and a third waits for one of them to end."""
    monkeypatch.setitem(plots._DRAWERS, "meet", _meeting(tmp_path))
    monkeypatch.setattr(drawing.cores, "free_cores", lambda **kw: 64)  # whatever else runs on this machine
    server = drawing.DrawingServer.start(drawers=2)
    try:
        names = ["a", "b", "c"]
        for name in names:
            assert server.submit(name, plots.Drawing("meet", (name,), {}), 40)
        delivered = server.collect(names, timeout=120)
    finally:
        server.close()
    assert sorted(delivered) == names
    assert all(png.startswith(b"\x89PNG") and seconds > 0 for png, seconds in delivered.values())
    seen = sorted(int((tmp_path / f"seen-{n}").read_text()) for n in names)
    assert seen[1:] == [2, 2] and seen[0] in (1, 2)  # "c" started once "a" or "b" had ended
    with pytest.raises(ValueError, match="at least 1"):
        drawing.DrawingServer.start(drawers=0)


def test_the_drawers_grow_with_the_cores_one_fewer_while_the_command_computes(monkeypatch, tmp_path):
    """On 4 free cores the server runs 4 drawers at most: 3 while the command still computes the next
    figures' arrays (before ``collect``), so that three figures meet and a fourth waits, until the
    command waits too."""
    monkeypatch.setitem(plots._DRAWERS, "meet", _meeting(tmp_path, size=3))
    monkeypatch.setattr(drawing.cores, "usable", lambda: 4)
    monkeypatch.setattr(drawing.cores, "free_cores", lambda **kw: 64)
    server = drawing.DrawingServer.start()
    names = ["a", "b", "c", "d"]
    try:
        for name in names:
            assert server.submit(name, plots.Drawing("meet", (name,), {}), 40)
        deadline = time.perf_counter() + 60
        while len(list(tmp_path.glob("seen-*"))) < 3 and time.perf_counter() < deadline:
            time.sleep(0.01)
        started_while_computing = len(list(tmp_path.glob("start-*")))  # the three hold on for a second
        delivered = server.collect(names, timeout=120)
    finally:
        server.close()
    assert started_while_computing == 3
    assert sorted(delivered) == names
    seen = sorted(int((tmp_path / f"seen-{n}").read_text()) for n in names)
    assert seen[:3] == [3, 3, 3] and seen[3] <= 4  # the fourth started once the command waited: 4 drawers


def _one_at_a_time(folder):
    """A drawing function that writes how many drawings of it are running while it holds on."""
    import numpy as np

    def draw(tag):
        (folder / f"start-{tag}").touch()
        time.sleep(0.3)
        (folder / f"seen-{tag}").write_text(str(len(list(folder.glob("start-*"))) - len(list(folder.glob("end-*")))))
        (folder / f"end-{tag}").touch()
        return plots.kl_units(np.array([1.0, 0.5]))

    return draw


def test_no_second_drawer_while_other_work_takes_every_core(monkeypatch, tmp_path):
    """With other work on every core (the reading: none free beside the drawer that runs), a server of
    4 drawers draws one figure at a time, even once the command waits: more would only share the
    busy cores."""
    monkeypatch.setitem(plots._DRAWERS, "hold", _one_at_a_time(tmp_path))
    monkeypatch.setattr(drawing.cores, "free_cores", lambda **kw: 0)
    server = drawing.DrawingServer.start(drawers=4)
    names = [f"f{i}" for i in range(4)]
    try:
        for name in names:
            assert server.submit(name, plots.Drawing("hold", (name,), {}), 40)
        delivered = server.collect(names, timeout=120)
    finally:
        server.close()
    assert sorted(delivered) == names
    assert max(int((tmp_path / f"seen-{n}").read_text()) for n in names) == 1


def test_each_further_drawer_needs_a_core_the_reading_sees_free(monkeypatch):
    """``_at_once(most, drawing)``: the first drawer always starts; a further one only onto a core that
    the reading (in which the running drawers count as busy) sees free; never more than ``most``,
    and no reading where none could be added."""
    reads = []

    def reading(free):
        return lambda **kw: reads.append(1) or free

    monkeypatch.setattr(drawing.cores, "free_cores", reading(0))
    assert drawing._at_once(4, 0) == 1 and not reads
    assert drawing._at_once(4, 1) == 1 and drawing._at_once(4, 3) == 3 and len(reads) == 2
    monkeypatch.setattr(drawing.cores, "free_cores", reading(1))
    assert drawing._at_once(4, 1) == 2 and drawing._at_once(4, 3) == 4
    monkeypatch.setattr(drawing.cores, "free_cores", reading(64))
    assert drawing._at_once(4, 2) == 4
    reads.clear()
    assert drawing._at_once(1, 1) == 1 and drawing._at_once(3, 3) == 3 and not reads


def _gone(pid):
    """The process has ended (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_drawer_that_dies_is_reported_at_once_and_a_hung_one_is_killed_on_close(monkeypatch, tmp_path):
    """A drawer that dies is reported undelivered by the server, without waiting for the timeout,
    while the other figures are delivered; closing the server kills a drawer that hangs."""

    def dies():
        os._exit(3)

    def hangs():
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(600)

    monkeypatch.setitem(plots._DRAWERS, "dies", dies)
    monkeypatch.setitem(plots._DRAWERS, "hangs", hangs)
    server = drawing.DrawingServer.start(drawers=2)
    try:
        server.submit("dead", plots.Drawing("dies", (), {}), 40)
        server.submit("fine", plots.Drawing("kl_units", ([1.0, 0.2],), {}), 40)
        started = time.perf_counter()
        delivered = server.collect(["dead", "fine"], timeout=600)
        assert time.perf_counter() - started < 60 and list(delivered) == ["fine"]
        server.submit("hung", plots.Drawing("hangs", (), {}), 40)
        assert server.collect(["hung"], timeout=1.0) == {}
        deadline = time.perf_counter() + 30
        while not (tmp_path / "pid").exists() and time.perf_counter() < deadline:
            time.sleep(0.01)
        pid = int((tmp_path / "pid").read_text())
        assert not _gone(pid)
    finally:
        server.close()
    deadline = time.perf_counter() + 30
    while not _gone(pid) and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert _gone(pid) and not Path(server.folder).exists()


def test_a_dead_server_takes_nothing_and_this_process_draws_it_all(digits4):
    alone = figures.render(digits4)
    server = drawing.DrawingServer.start()
    server.process.kill()
    server.process.join()
    served = figures.ServedDrawing(digits4, server)
    assert served.sent == [] and served.child is None
    assert served.finish() == alone


def test_without_fork_there_is_no_server(monkeypatch, tmp_path):
    """Where the process cannot be started the figures are drawn as before, and no folder is left."""
    import multiprocessing.context

    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", refuse)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert drawing.DrawingServer.start() is None
    assert list(tmp_path.iterdir()) == []


def _command(tmp_path, *argv, code_after=""):
    """Run ``vaekit ARGV`` as the command (main() reads sys.argv), TMPDIR in ``tmp_path``; at exit
    it prints which drawing and model libraries its own process imported."""
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    code = (
        "import atexit, json, sys\n"
        "def seen():\n"
        "    print('SEEN ' + json.dumps({m: m in sys.modules for m in ('matplotlib', 'torch')}), flush=True)\n"
        "atexit.register(seen)\n"
        "from vaekit.cli import main\n"
        f"sys.argv = ['vaekit', *{list(argv)!r}]\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    seen = [json.loads(line[5:]) for line in out.stdout.splitlines() if line.startswith("SEEN ")]
    return out, (seen[0] if seen else None), temp


def test_the_command_draws_in_the_server_and_never_imports_matplotlib(tmp_path):
    """``vaekit train`` as a command: the process forked before torch draws every figure; the
    command's own process never imports matplotlib, its PNGs are those drawn in one process from the
    finished run, the time line counts two processes, and no folder of the server is left."""
    out, seen, temp = _command(
        tmp_path, "train", "--data", "digits", "--epochs", "2", "--latent-dim", "4", "--hidden", "16", "--out", "r"
    )
    assert out.returncode == 0, out.stderr
    assert seen == {"matplotlib": False, "torch": True}
    assert " in 2 processes " in out.stdout.strip().splitlines()[-2]  # the time line, then SEEN
    run_dir = tmp_path / "r"
    written = {p.stem: p.read_bytes() for p in (run_dir / "figures").iterdir()}
    assert written == figures.render(runs.open_run(run_dir)) and "latent" in written
    assert list(temp.iterdir()) == []


def test_a_command_that_fails_leaves_no_server_folder(tmp_path):
    """A run refused after the server has started (a data file with no rows) ends with its one-line error
    and exit code 2; the server and its folder are gone."""
    (tmp_path / "empty.csv").write_text("a,b\n")
    out, seen, temp = _command(tmp_path, "train", "--data", "empty.csv", "--out", "r")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "empty.csv" in out.stderr, out.stderr
    assert seen is not None and seen["matplotlib"] is False
    assert list(temp.iterdir()) == [] and not (tmp_path / "r").exists()


def test_no_server_without_figures_or_under_torchrun(monkeypatch):
    import argparse

    from vaekit.cli import train as cli_train

    started = []
    monkeypatch.setattr(drawing.DrawingServer, "start", classmethod(lambda cls: started.append(1) or None))
    cli_train.prepare(argparse.Namespace(figures=False))
    monkeypatch.setenv("WORLD_SIZE", "2")
    cli_train.prepare(argparse.Namespace())
    assert started == []
    monkeypatch.setenv("WORLD_SIZE", "1")
    args = argparse.Namespace()
    cli_train.prepare(args)
    assert started == [1] and args._drawing_server is None


def test_the_report_command_draws_in_the_server(tmp_path, digits4):
    """``vaekit report RUN`` as a command: the same PNGs as one process draws, and its own process never
    imports matplotlib."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(digits4.path, run_dir)
    out, seen, temp = _command(tmp_path, "report", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert seen == {"matplotlib": False, "torch": True}
    written = {p.stem: p.read_bytes() for p in (run_dir / "figures").iterdir()}
    assert written == figures.render(digits4) and (run_dir / "report.html").is_file()
    assert list(temp.iterdir()) == []
