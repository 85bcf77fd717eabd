"""The README and the docs cannot rot: every shell, Python and console block in them is run here,
the site builds with warnings as errors, and the configuration reference matches the schema.

Shell blocks run command by command, in order, in a scratch folder per page (so `runs/cs` written
by one command is there for the next), shortened where they train:

- `python train.py ...` (and `torchrun ... train.py`) gets SHORT appended (one epoch on a few
  signals); a `--resume` keeps the run's own settings;
- `python benchmarks/reproduce.py ...` and `benchmarks/robustness.py` run `--tables-only` into a copy of
  docs/results, and the tables they redraw from the committed run cache must equal the committed ones;
- `bash scripts/setup.sh` is what `.ci/run` does before this suite and `bash .ci/run` is this suite:
  both are left out, the rest of their line runs.

Console blocks (`$ command` then its output, `...` for any text) run each command and compare.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jacinv.schema import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHORT = ["train.epochs=1", "data.n_train=16", "data.n_test=8", "train.batch_size=8", "train.probe_size=2",
         "train.probe_iters=2"]
LANGUAGES = ("bash", "python", "console")


def blocks(page: Path, language: str) -> list[str]:
    return [text for lang, text in FENCE.findall(page.read_text()) if lang == language]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_says_its_language(page):
    unknown = [lang or "(none)" for lang, _ in FENCE.findall(page.read_text()) if lang not in LANGUAGES]
    assert not unknown, f"{page_id(page)}: blocks must be one of {LANGUAGES} (they are run), got {unknown}"


@pytest.fixture
def workspace(tmp_path) -> Path:
    for name in ("configs", "examples", "benchmarks", "train.py", "evaluate.py"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "results")
    return tmp_path


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a shell block as argv: continuation lines joined, '&&' split, comments dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv:
                out.append(argv)
    return out


def runnable(argv: list[str], workspace: Path) -> list[str] | None:
    """The command as this test runs it (module doc), or None for the two set-up commands."""
    if argv[0] == "bash":
        assert argv[1:] in (["scripts/setup.sh"], [".ci/run"]), f"unexpected shell command {argv}"
        return None
    if argv[0] in ("python", ".venv/bin/python"):
        argv = [sys.executable, *argv[1:]]
    elif argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    else:
        raise AssertionError(f"a shell block runs a command this test does not know: {argv}")
    if "train.py" in argv and "--resume" not in argv:
        argv += SHORT
    if "benchmarks/reproduce.py" in argv or "benchmarks/robustness.py" in argv:
        argv = [a for i, a in enumerate(argv) if a != "--jobs" and argv[i - 1] != "--jobs"]
        argv += [*(["--tables-only"] if "--tables-only" not in argv else []),
                 "--out", str(workspace / "results"), "--workdir", str(workspace / "reproduce")]
    return argv


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


SHELL_PAGES = [p for p in PAGES if blocks(p, "bash")]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=page_id)
def test_every_shell_block_runs(page, workspace):
    ran = 0
    for block in blocks(page, "bash"):
        for argv in shell_commands(block):
            command = runnable(argv, workspace)
            if command is None:
                continue
            result = run(command, workspace)
            assert result.returncode == 0, f"{page_id(page)}: {' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            ran += 1
    assert ran
    redrawn = sorted((workspace / "results").glob("*.md"))
    for table in redrawn:  # tables the reproduce commands redrew from the committed cache
        assert table.read_text() == (ROOT / "docs" / "results" / table.name).read_text(), \
            f"docs/results/{table.name} differs from what the committed run cache gives"


PYTHON_BLOCKS = [(p, k) for p in PAGES for k, _ in enumerate(blocks(p, "python"))]


@pytest.mark.parametrize("page, k", PYTHON_BLOCKS, ids=[f"{page_id(p)}[{k}]" for p, k in PYTHON_BLOCKS])
def test_every_python_block_runs(page, k, workspace):
    result = run([sys.executable, "-c", blocks(page, "python")[k]], workspace)
    assert result.returncode == 0, f"{page_id(page)} block {k}:\n{result.stderr[-3000:]}"


def console_steps(block: str) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] of a console transcript."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line)
    return steps


CONSOLE_PAGES = [p for p in PAGES if blocks(p, "console")]


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=page_id)
def test_every_console_transcript_shows_what_the_command_prints(page, workspace):
    for block in blocks(page, "console"):
        for command, expected in console_steps(block):
            argv = runnable(shlex.split(command, comments=True), workspace)
            if "train.py" in argv:
                argv = argv[: len(argv) - len(SHORT)]  # a transcript shows the command as it is
            result = run(argv, workspace)
            printed = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
            pattern = "\n".join(".*".join(map(re.escape, line.split("..."))) for line in expected)
            assert re.fullmatch(pattern, "\n".join(printed)), f"$ {command}\nexpected:\n{chr(10).join(expected)}\n" \
                                                                  f"printed:\n{chr(10).join(printed)}"


def test_the_configuration_reference_matches_the_schema():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page.strip() == reference_markdown().strip(), \
        "docs/configuration.md is stale: regenerate it with the command at its top"


def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs extra (pip install -e '.[docs]'); scripts/setup.sh installs it")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
