"""The README's sandbox walkthrough, run as written: one bash script of its lines, with the Heroku
CLI pinned by scripts/install-heroku-cli as `heroku`, then each command's output checked.

Two things differ from a reader's run, because tests share the machine: the sandbox's port 5010
becomes a free one, and the shared Redis a private one. The lines ending in `&` run in the
background (their output kept), and the script waits for the sandbox's port before going on, as
a reader waits for its banner."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import SERVER_URL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHARED_REDIS = "redis://127.0.0.1:6379/0"


def walkthrough() -> list[str]:
    """The walkthrough's command lines, continuations folded and comments dropped."""
    section = README.split("### A walkthrough", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's walkthrough has no sh block"
    lines, pending = [], ""
    for raw in block[1].splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending + line:
            lines.append(pending + line)
        pending = ""
    return lines


def script(lines: list[str], port: int) -> str:
    parts = [
        "set -euo pipefail",
        # bash's /dev/tcp: wait until something listens on the port.
        'listening() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; '
        'sleep 0.1; done; echo "nothing listens on port $1" >&2; return 1; }',
    ]
    for number, line in enumerate(lines):
        parts.append(f"echo '### {number}'")
        if line.endswith("&"):
            parts.append(f"{line[:-1].strip()} > background-{number}.log 2>&1 & echo $! >> background.pids")
            if line.startswith("backout sandbox --port"):
                parts.append(f"listening {port}")
        else:
            parts.append(line)
    return "\n".join(parts) + "\n"


def outputs(text: str) -> dict[int, str]:
    """Each command's output (stdout and stderr), by its line's number."""
    pieces = re.split(r"^### (\d+)\n", text, flags=re.M)
    return {int(number): output for number, output in zip(pieces[1::2], pieces[2::2])}


def stop_background(cwd: Path) -> None:
    pids = cwd / "background.pids"
    for pid in (pids.read_text().split() if pids.exists() else []):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in (pids.read_text().split() if pids.exists() else []):
        for _ in range(300):
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                break
            subprocess.run(["sleep", "0.1"])


def drop_the_sandbox(cwd: Path) -> None:
    """The walkthrough's sandbox leaves its add-on databases on the shared server: drop them."""
    from backout_sandbox.server import start

    state = cwd / ".backout" / "sandbox.json"
    if state.exists():
        start(port=0, state_path=state, postgres_url=SERVER_URL, stop_timeout=5).stop(drop_databases=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)  # about a minute and a half on an idle machine; the Heroku CLI takes 2-3 s of CPU a command
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, heroku_bin: Path, redis_url: str) -> None:
    lines = walkthrough()
    port = free_port()
    run_lines = [line.replace("5010", str(port)).replace(SHARED_REDIS, redis_url) for line in lines]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    home = tmp_path / "home"
    home.mkdir()
    env = {name: os.environ[name] for name in ("LANG", "LC_ALL", "TMPDIR", "USER") if name in os.environ}
    env.update(HOME=str(home),
               PATH=os.pathsep.join([str(heroku_bin), str(Path(sys.executable).parent), os.environ["PATH"]]))
    try:
        done = subprocess.run(["bash", "-c", script(run_lines, port)], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    finally:
        stop_background(tmp_path)
        drop_the_sandbox(tmp_path)
    assert done.returncode == 0, done.stdout[-6000:]
    by_number = outputs(done.stdout)
    said = [(line, by_number.get(number, "")) for number, line in enumerate(lines)]

    def output(start: str) -> str:
        return next(out for line, out in said if line.startswith(start))

    assert "Created rehearsal, served at http://127.0.0.1:" in output("backout sandbox create")
    assert "as DATABASE_URL" in output("backout sandbox create")
    info = output("heroku pg:info")
    assert "=== DATABASE_URL" in info and re.search(r"^Plan:\s+Essential 0$", info, re.M), info
    assert "done, v3" in output("heroku config:set")
    first, second = [out for line, out in said if line.startswith("backout sandbox deploy")]
    assert "migrated: 001_greetings.sql" in first and "-----> v4 succeeded" in first, first
    assert "migrated: 002_loud.sql" in second and "-----> v5 succeeded" in second, second
    assert "now running worker at 1:Basic" in output("heroku ps:scale")
    assert "Current: v5" in output("heroku releases -a")
    assert "app[release.1]: migrated: 002_loud.sql" in output("heroku logs -a")
    dry_run = output("backout rollback --app rehearsal --to v4 --db restore --confirm rehearsal --dry-run")
    assert "restore" in dry_run
    rolled = output("backout rollback --app rehearsal --to v4 --db restore --confirm rehearsal --wait")
    assert "succeeded: rehearsal runs release v6, a rollback to v4 (verified)" in rolled, rolled
    assert "plan: done: roll back from v5 to v4" in rolled and ": started (progress=" not in rolled, rolled
    assert "Rollback to v4" in output("heroku releases:info v6")
    assert "migrate command exited with status 0" in output("heroku releases:output v6")
    ps = output("heroku ps -a")
    assert re.search(r"^web\.1: up ", ps, re.M) and re.search(r"^worker\.1: up ", ps, re.M), ps
    assert "(safety)" in output("backout checkpoints")
    tail = (tmp_path / f"background-{lines.index(next(l for l in lines if l.startswith('heroku logs --tail')))}.log")
    assert "app[api]: Rollback to v4 by user" in tail.read_text(), tail.read_text()
