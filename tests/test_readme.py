"""The README's examples run as written.

Every ```bash and ```python block of README.md runs, in order, in one fresh folder: bash blocks
line by line through bash (a non-zero exit fails the test), python blocks executed in one Python
namespace (so later blocks see the names earlier ones defined). A block is skipped only when the line
before it says ``<!-- readme: skip (reason) -->``; the reason must be there. The two set-up
commands under "Start here" are what .ci/run itself does, so they are skipped that way too.
Blocks of other languages (```text, ```toml, plain ```) are shown output or file contents and are
not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*readme:\s*skip\s*\((.+)\)\s*-->")
# what a reader would have to invent: a runnable example names real files made by an earlier block
PLACEHOLDERS = re.compile(r"runs/NAME|\bRUN\b|runs/[\w-]*-\.\.\.|-2026\d{4}-\d{6}|\bHOST\b")


class Block:
    def __init__(self, lang: str, code: str, line: int, skip: str | None) -> None:
        self.lang, self.code, self.line, self.skip = lang, code, line, skip

    def runs(self) -> bool:
        return self.skip is None and self.lang in ("bash", "python")

    def __repr__(self) -> str:
        return f"README.md:{self.line} ```{self.lang}"


def blocks(text: str) -> list[Block]:
    """Every fenced block, with its language, code, first line number and skip reason (or None)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i + 1
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(prev)
        i = start
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        out.append(Block(lang, "\n".join(lines[start:i]), start + 1, skip.group(1) if skip else None))
        i += 1
    return out


def test_blocks_parse_with_line_numbers_and_skip_reasons():
    text = "intro\n```bash\necho 1\n```\n<!-- readme: skip (needs four GPUs on two nodes) -->\n\n```python\nx = 1\n```\n```\nout\n```\n"
    found = blocks(text)
    assert [(b.lang, b.code, b.line, b.skip) for b in found] == [
        ("bash", "echo 1", 3, None),
        ("python", "x = 1", 8, "needs four GPUs on two nodes"),
        ("", "out", 11, None),
    ]
    assert [b.runs() for b in found] == [True, False, False]


def test_every_block_is_runnable_or_skipped_with_a_reason():
    found = blocks(README.read_text())
    assert found, "README.md has no code blocks"
    runnable = [b for b in found if b.lang in ("bash", "python")]
    assert len([b for b in runnable if b.skip is None]) >= 3 * len(runnable) // 4, "most examples must run"
    for b in found:
        assert b.lang in ("bash", "python", "text", "toml", ""), f"{b}: unknown block language {b.lang!r}"
        if b.skip is not None:
            assert len(b.skip.strip()) > 10, f"{b}: a skipped block needs a real reason"
        if b.runs():
            assert not PLACEHOLDERS.search(b.code), (
                f"{b}: placeholder {PLACEHOLDERS.search(b.code).group()!r}; "
                "name a file or run folder an earlier block makes"
            )


def test_commands_split_on_continuation_lines_and_skip_comments():
    code = "# a comment\nvaekit train \\\n  --epochs 2   # short\n\necho done"
    assert _commands(code) == ["vaekit train  --epochs 2   # short", "echo done"]


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    env = {**os.environ}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # `vaekit` of this environment
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    namespace: dict = {"__name__": "__readme__"}
    ran, took = 0, []
    for block in blocks(README.read_text()):
        if not block.runs():
            continue
        t0 = time.perf_counter()
        if block.lang == "python":  # one session: later blocks see what earlier ones defined
            code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")  # tracebacks name README lines
            exec(code, namespace)  # noqa: S102 - the README's own code
        else:
            for line in _commands(block.code):
                proc = subprocess.run(
                    ["bash", "-c", "set -o pipefail; " + line],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1200,
                )
                assert proc.returncode == 0, (
                    f"{block}: command failed (exit {proc.returncode}): {line}\n--- stderr ---\n{proc.stderr[-3000:]}"
                )
        took.append(f"{block}: {time.perf_counter() - t0:.1f} s")
        ran += 1
    print("\n".join(took))
    assert ran >= 10


def _commands(code: str) -> list[str]:
    """One command per line; a trailing backslash continues it; comments after the command stay (bash ignores them)."""
    out, current = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line.strip() if current else line)
        current = ""
    return out
