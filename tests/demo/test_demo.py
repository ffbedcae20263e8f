"""`backout demo`: the whole story as a newcomer runs it, and what it leaves behind (nothing).

The story runs as a real subprocess against the machine's PostgreSQL and Redis; the pieces it is
made of (slugs from the app's versions, the Redis claim, starting a Redis that is not running)
are tested on their own below.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from backout import deploy
from backout.errors import BadInput
from backout.demo import services, slug
from tests.support import SERVER_URL

DEMO_TIMEOUT = 240  # the demo takes well under a minute; a loaded machine gets room


# --- the story -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_demo_plays_to_a_verified_rollback_and_leaves_nothing_behind():
    proc = subprocess.Popen([sys.executable, "-m", "backout", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    finally:
        _stop(proc)
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    made = _what_it_made(err)
    _check_timeline(out)
    assert "every step verified, nothing left behind" in err
    _check_nothing_left(made)


@pytest.mark.integration
def test_keep_leaves_it_running_for_status_checkpoints_and_the_web_page_until_interrupted(tmp_path):
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "backout", "demo", "--keep"], stdout=subprocess.PIPE,
                            stderr=err, text=True, env=_env())
    try:
        out = _read_until(proc, "Ctrl-C here", DEMO_TIMEOUT)
        made = _what_it_made(Path(err.name).read_text())
        _check_timeline(out)
        env_file = re.search(r"set -a; \. (\S+); set \+a", out)[1]
        explore = {**_env(), **dict(word.split("=", 1) for word in shlex.split(Path(env_file).read_text()))}

        status = subprocess.run([sys.executable, "-m", "backout", "status", "--app", made["app"]],
                                capture_output=True, text=True, timeout=60, env=explore)
        assert status.returncode == 0, status.stderr
        assert re.search(r"v(\d+)\s+succeeded\s+\*\s+none\s+Rollback to v\d+", status.stdout), status.stdout
        assert "health-monitor" in status.stdout

        health = subprocess.run([sys.executable, "-m", "backout", "health", "--app", made["app"]],
                                capture_output=True, text=True, timeout=60, env=explore)
        assert health.returncode == 0, health.stderr
        assert re.search(r"verdict: pass: status 200", health.stdout) and "code+down" in health.stdout, health.stdout

        checkpoints = subprocess.run([sys.executable, "-m", "backout", "checkpoints", "--app", made["app"], "--json"],
                                     capture_output=True, text=True, timeout=60, env=explore)
        assert checkpoints.returncode == 0, checkpoints.stderr
        kinds = re.findall(r'"kind": "(\w+)"', checkpoints.stdout)
        assert sorted(kinds) == ["deploy", "deploy", "safety"], checkpoints.stdout

        # The page tells the same story in a real browser (tests/web/browser.py).
        from tests.web.browser import check_the_demo_page

        told = re.search(r"v(\d+) \(code v2\) failed .* then v(\d+) \('Rollback to v(\d+)'\)", out)
        assert told, out
        page, password = re.search(r"web page: (\S+)", out)[1], re.search(r"password: (\S+)", out)[1]
        assert page.endswith(f"/apps/{made['app']}")
        check_the_demo_page(page, password, made["app"],
                            {"v1": int(told[3]), "v2": int(told[1]), "rollback": int(told[2])})

        assert proc.poll() is None, "--keep must keep the demo running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, Path(err.name).read_text()[-3000:]
    finally:
        _stop(proc)
        err.close()
    _check_nothing_left(made)


@pytest.mark.integration
def test_a_demo_stopped_halfway_removes_what_it_made(tmp_path):
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "backout", "demo"], stdout=subprocess.DEVNULL, stderr=err,
                            env=_env())
    try:
        # Stopped while v2's release phase runs: a release command, the dynos and the worker are up.
        _wait_for_line(Path(err.name), "code v2 deployed as", DEMO_TIMEOUT)
        proc.terminate()
        assert proc.wait(90) == 130
    finally:
        _stop(proc)
        err.close()
    progress = Path(err.name).read_text()
    assert "interrupted: removing what the demo made" in progress
    _check_nothing_left(_what_it_made(progress))


def _wait_for_line(path: Path, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker not in path.read_text():
        assert time.monotonic() < deadline, f"the demo did not print {marker!r}:\n{path.read_text()[-3000:]}"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    """A demo cut short by a failed assertion or a timeout still cleans up after itself on SIGTERM."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env() -> dict[str, str]:
    # Nothing of the caller's backout settings reaches the demo: it builds its own environment.
    return {k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "HEROKU_", "REDIS_", "DATABASE_"))}


def _what_it_made(progress: str) -> dict[str, str]:
    found = re.search(r"app (backout-demo-[0-9a-f]{6}); work directory (\S+); Redis database redis://127\.0\.0\.1:"
                      r"(\d+)/(\d+)", progress)
    assert found, progress[:2000]
    database = re.search(r"database (backout_sandbox_[0-9a-f]+)", progress)
    assert database, progress[:2000]
    return {"app": found[1], "work_dir": found[2], "redis_port": found[3], "redis_db": found[4],
            "database": database[1]}


def _check_timeline(out: str) -> None:
    """The timeline's events are there, in the story's order, with times that only go forward."""
    timeline, _, told = out.partition("What people were told")
    rows = [line for line in timeline.splitlines() if re.match(r"\s*\d+\.\ds  ", line)]
    story = [
        r"code v1 deployed as v(\d+)", r"v\d+ checkpointed .*pg_dump", r"v\d+ migrated .*alembic none -> 0001",
        r"v\d+ verified healthy", r"code v2 deployed as v\d+", r"saved 0002's down script",
        r"alembic 0001 -> 0002", r"v\d+ probe failed \(1\)", r"v\d+ failed its health checks",
        r"rollback requested .*--db down, by health-monitor", r"safety checkpoint .*cp_",
        r"down migration .*undid 0002", r"code and config rolled back", r"rollback verified", r"rollback succeeded",
        r"v\d+ verified healthy",
    ]
    at = 0
    for pattern in story:
        while at < len(rows) and not re.search(pattern, rows[at]):
            at += 1
        assert at < len(rows), f"no timeline row matching {pattern!r} in order:\n" + "\n".join(rows)
        at += 1
    times = [float(re.match(r"\s*(\d+\.\d)s", row)[1]) for row in rows]
    assert times == sorted(times) and times[-1] < 120, times
    assert "health.rollback_started" in told and "rollback.succeeded" in told


def _check_nothing_left(made: dict[str, str]) -> None:
    assert not Path(made["work_dir"]).exists()
    with psycopg.connect(SERVER_URL) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (made["database"],)).fetchone()
        assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (made["database"],)).fetchone()
    assert _processes_mentioning(made["work_dir"]) == []
    client = redis.Redis(host="127.0.0.1", port=int(made["redis_port"]), db=int(made["redis_db"]))
    try:
        # Empty, or claimed since by another run: never this run's keys.
        assert client.get(services.CLAIM_KEY) != made["app"].encode()
        assert not [k for k in client.scan_iter(count=1000) if made["app"].encode() in k]
    finally:
        client.close()


def _processes_mentioning(text: str) -> list[str]:
    """Processes whose command line, working directory or environment mention `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if text in cmdline or text in environ or cwd.startswith(text):
            found.append(f"{pid}: {cmdline}")
    return found


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"the demo did not print {marker!r} (exit status {proc.poll()}):\n" + "".join(lines)[-3000:])


# --- its pieces ----------------------------------------------------------------------------------


def test_each_version_of_the_app_is_a_slug_of_its_own():
    v1, v2 = slug.version_files("v1"), slug.version_files("v2")
    for files in (v1, v2):
        assert slug.process_types(files) == {"release": "backout release -- alembic upgrade head",
                                               "web": "python app.py"}
    with tarfile.open(fileobj=io.BytesIO(deploy.tarball(v2))) as tar:
        names = tar.getnames()
    assert all(name.startswith("./app/") for name in names)
    assert "./app/migrations/versions/0002_priority.py" in names and "./app/Procfile" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    with tarfile.open(fileobj=io.BytesIO(deploy.tarball(v1))) as tar:
        names = tar.getnames()
    assert "./app/migrations/versions/0002_priority.py" not in names
    assert "./app/queries.py" in names and "./app/migrations/versions/0001_notes.py" in names
    assert v1["queries.py"] != v2["queries.py"] and v1["app.py"] == v2["app.py"]


def test_a_procfile_line_without_a_command_is_refused(tmp_path):
    (tmp_path / "Procfile").write_text("# processes\n\nweb: python app.py\nworker:\n")
    with pytest.raises(BadInput, match=r"Procfile:4 is not `<process type>: <command>`"):
        slug.process_types({"Procfile": tmp_path / "Procfile"})


@pytest.mark.integration
def test_the_redis_claim_takes_an_empty_database_and_empties_it_afterwards(redis_server):
    port = urlsplit(redis_server).port
    top = redis.Redis(host="127.0.0.1", port=port, db=15)
    below = redis.Redis(host="127.0.0.1", port=port, db=14)
    try:
        top.flushdb()
        below.flushdb()
        top.set("someone-elses", "data")  # in use without a claim: not taken
        claim = services.claim_database("demo-a", port)
        assert claim.index == 14 and claim.url == f"redis://127.0.0.1:{port}/14"
        other = services.claim_database("demo-b", port)  # a second run at the same time
        assert other.index == 13
        below.set("rq:queue:backout-rollback", "x")
        claim.release()
        assert below.dbsize() == 0
        assert top.get("someone-elses") == b"data"

        below.set(services.CLAIM_KEY, "demo-c")  # claimed since by another run: left alone
        claim.release()
        assert below.get(services.CLAIM_KEY) == b"demo-c"
        other.release()
    finally:
        for client in (top, below, redis.Redis(host="127.0.0.1", port=port, db=13)):
            client.flushdb()
            client.close()


@pytest.mark.integration
def test_a_redis_that_is_not_running_is_started_and_stopped_again(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    said = []
    started = services.ensure_redis(said.append, port=port, data_dir=tmp_path / "data",
                                    log_file=tmp_path / "log" / "redis.log")
    try:
        assert started is not None and services.redis_answers(port)
        assert said == [f"starting Redis on 127.0.0.1:{port} (it was not running; it is stopped again at the end)"]
        assert services.ensure_redis(said.append, port=port) is None  # answering now: left alone
    finally:
        if started is not None:
            started.stop()
    assert not services.redis_answers(port)


@pytest.mark.integration
def test_a_running_postgres_is_left_as_it_is():
    assert services.ensure_postgres(lambda line: None, SERVER_URL) is None
