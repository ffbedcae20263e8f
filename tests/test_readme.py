"""The README's commands stay true: every `backout` line parses, the scripts and benchmarks it
names exist, the Python calls it shows bind, and the sandbox commands it shows really start."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import backout
from backout.cli import build_parser
from backout.package_rollback import enqueue_package_rollback

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    """Command lines in the README's code blocks, comments and continuations folded."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        pending = ""
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).strip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


# The synopsis block puts a description after two or more spaces.
BACKOUT_LINES = [re.split(r"\s{2,}", line)[0] for line in code_lines() if line.startswith("backout ")]


def test_the_readme_shows_the_two_setup_commands():
    assert "scripts/demo" in README and "scripts/test" in README
    for script in ("scripts/demo", "scripts/test", "scripts/setup"):
        assert os.access(ROOT / script, os.X_OK), script
    ci = (ROOT / ".ci/run").read_text()
    assert "scripts/test" in ci


def test_the_readme_has_backout_commands_for_every_subcommand():
    shown = {shlex.split(line)[1] for line in BACKOUT_LINES}
    from backout.cli import COMMANDS

    assert {name for name, _, _ in COMMANDS} <= shown


@pytest.mark.parametrize("line", BACKOUT_LINES)
def test_every_backout_line_parses(line):
    argv = shlex.split(line.replace("…", "x"))[1:]
    # The synopsis lines use [optional] and A|B notation; take the first alternative of each.
    argv = [re.sub(r"\|.*", "", a).strip("[]") for a in argv]
    argv = [a for a in argv if a and a not in ("...", "CMD", "--", "&")]  # `&`: run in the background
    argv = ["5010" if a == "P" else a for a in argv]  # the synopsis's port placeholder
    build_parser().parse_args(argv)


def test_the_benchmarks_it_names_exist():
    for path in re.findall(r"\.venv/bin/python (bench/\S+\.py)", README):
        assert (ROOT / path).is_file(), path


def test_the_python_calls_it_shows_bind():
    inspect.signature(backout.enqueue_rollback).bind(app="myapp", to="v41", db="down", confirm="myapp")
    inspect.signature(enqueue_package_rollback).bind("acme/widgets", "1.2.3", confirm="acme/widgets")
    assert 'backout.enqueue_rollback(app="myapp", to="v41", db="down", confirm="myapp")' in README


def _started(argv: list[str], cwd: Path, expect: str) -> str:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in os.environ.items() if k != "HEROKU_API_KEY"})
    seen = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line
            if expect in line:
                return seen
        raise AssertionError(f"{argv} ended without printing {expect!r}:\n{seen}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.integration
def test_the_sandbox_command_starts_and_prints_its_exports(tmp_path):
    line = next(line for line in BACKOUT_LINES if line.startswith("backout sandbox --port"))
    argv = [sys.executable, "-m", "backout", *shlex.split(line)[1:]]
    out = _started(argv, tmp_path, "export HEROKU_API_KEY=")
    port = shlex.split(line)[-1]
    assert f"export BACKOUT_HEROKU_API_URL=http://127.0.0.1:{port}" in out


@pytest.mark.integration
def test_the_forge_command_starts_with_its_demo(tmp_path):
    line = next(line for line in code_lines() if line.startswith("python -m backout_sandbox.forge"))
    argv = shlex.split(line)
    argv[0] = sys.executable
    argv[argv.index("--demo") + 1] = str(tmp_path / "forge-demo")
    out = _started(argv, tmp_path, "backout package-rollback --repo")
    assert "export GITHUB_TOKEN=" in out
