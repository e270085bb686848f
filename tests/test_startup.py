"""Start-up: ``vaekit --help``, ``vaekit COMMAND --help`` and argument errors import none of the
heavy libraries (checked through sys.modules, not timings), and ``import vaekit`` stays light."""

import json
import os
import subprocess
import sys

import pytest

from vaekit.cli import COMMANDS

HEAVY = ("torch", "sklearn", "matplotlib", "pandas")

PROBE = """
import json, sys
from vaekit.cli import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}), file=sys.stderr)
"""


def _probe(argv):
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
    )
    return json.loads(r.stderr.strip().splitlines()[-1]), r


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["train", "--epochs", "many"],
        ["train", "--lr", "nan"],
        ["demo", "--help"],
        ["nosuchcommand"],
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(argv):
    result, r = _probe(argv)
    assert result["heavy"] == [], (argv, result)
    assert result["code"] == (0 if "--help" in argv else 2), r.stderr
    if result["code"] == 2:  # one line, not a usage dump
        assert r.stderr.strip().count("\n") == 1 and "usage:" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_is_light(command):
    result, r = _probe([command, "--help"])
    assert result["code"] == 0, r.stderr
    assert result["heavy"] == [], result


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "runs/x", "--iw-samples", "-1"],
        ["score", "runs/x", "--score", "nope"],
        ["sample", "runs/x", "-n", "0"],
        ["plot"],
        ["impute", "runs/x"],
    ],
)
def test_command_argument_errors_are_light_and_one_line(argv):
    result, r = _probe(argv)
    assert result == {"code": 2, "heavy": []}, (argv, result, r.stderr)
    assert r.stderr.strip().count("\n") == 1 and "usage:" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_an_unknown_flag_lightly(command):
    result, r = _probe([command, "--no-such-flag"])
    assert result == {"code": 2, "heavy": []}, (command, result, r.stderr)
    assert "--no-such-flag" in r.stderr.splitlines()[0] or "required" in r.stderr.splitlines()[0], r.stderr
    assert r.stderr.strip().count("\n") == 1 and "usage:" not in r.stderr, r.stderr


def test_parser_copies_match_their_sources():
    """cli/names.py copies what the parsers show from heavy modules; each copy equals its source."""
    from vaekit import anomaly, figures, imputation
    from vaekit.cli import names
    from vaekit.evaluation import GapConfig

    assert names.ANOMALY_SCORES == tuple(anomaly.SCORES)
    assert (names.GAP_STEPS, names.GAP_LR) == (GapConfig().steps, GapConfig().lr)
    assert names.IMPUTE_K == imputation.DEFAULT_K
    assert names.FIGURES == {name: kind.description for name, kind in figures.KINDS.items()}


def test_import_vaekit_is_light_and_names_load_on_use():
    code = (
        "import sys, vaekit; light = 'torch' not in sys.modules; spec = vaekit.ModelSpec(data_shape=(3,)); "
        "still = 'torch' not in sys.modules; vaekit.VAE; print(light, still, 'torch' in sys.modules, "
        "vaekit.__version__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import vaekit

    assert r.stdout.split() == ["True", "True", "True", vaekit.__version__]


def _import_graph():
    """vaekit module -> the vaekit modules it imports (module level and inside functions)."""
    import ast
    from pathlib import Path

    import vaekit

    root = Path(vaekit.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[m].add(full if full in mods else target)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names)
        graph[m] &= set(mods)
        graph[m].discard(m)
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    assert "vaekit.data.sources" in graph["vaekit.data"]  # the graph sees relative imports
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt) :] + [nxt])
                return True
            if nxt not in state and visit(nxt, path + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if start not in state and visit(start, [start]):
            break
    assert cycle == [], " -> ".join(cycle)


def test_the_command_freezes_the_garbage_collector_before_it_exits():
    """The ``vaekit`` process spares the interpreter's final collections (most of a second with torch
    loaded); a call of ``main`` from Python leaves the collector alone."""
    code = (
        "import atexit, gc, sys; from vaekit.cli import main; "
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
        "main([]); print('after a call', gc.get_freeze_count() > 0); main()"
    )
    r = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "after a call False" in r.stdout and r.stdout.rstrip().endswith("frozen True")


def test_a_command_runs_with_torch_imported_under_a_paused_collector_and_frozen():
    """The ``vaekit`` process imports torch and the run layer with the garbage collector paused, then
    freezes them (their objects are never garbage; every full collection would walk them): the
    command's own code starts with the collector on and those objects out of it. From Python,
    ``main`` leaves the collector alone."""
    code = (
        "import gc, sys; import vaekit.cli.sample as s; "
        "s.run = lambda args: print('run', gc.isenabled(), gc.get_freeze_count(), 'torch' in sys.modules) or 0; "
        "from vaekit.cli import main; main(['sample', 'x']); sys.argv = ['vaekit', 'sample', 'x']; main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    called, command = [line.split() for line in r.stdout.splitlines() if line.startswith("run ")]
    assert called[1:] == ["True", "0", "False"]  # a call from Python: nothing imported early, nothing frozen
    assert command[1] == "True" and int(command[2]) > 100_000 and command[3] == "True"


def test_the_command_ends_its_process_after_the_atexit_handlers():
    """The ``vaekit`` process leaves with ``os._exit`` once its command has returned (no teardown of
    every module): the atexit handlers have run, stdout is flushed, the exit code is the command's.
    From Python ``main`` returns; with a non-daemon thread alive the usual shutdown runs, which
    waits for it."""
    code = """
import atexit, sys, threading, time
import vaekit.cli.sample as s
from vaekit.cli import main
ran = threading.Event()
s.run = lambda args: ran.set() or print("ran", end="") or 3
atexit.register(lambda: print(" atexit", end=""))
print("call", main(["sample", "x"]), end=" ")
ran.clear()
if sys.argv[1] == "thread":  # a library's worker, still running after the command
    threading.Thread(target=lambda: (ran.wait(), time.sleep(0.3), print(" thread", end=""))).start()
sys.argv = ["vaekit", "sample", "x"]
print(" returned", main(), end="")
"""
    r = subprocess.run([sys.executable, "-c", code, "alone"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "rancall 3 ran atexit"  # the command's process ended inside main()
    r = subprocess.run([sys.executable, "-c", code, "thread"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "rancall 3 ran returned 3 thread atexit"
