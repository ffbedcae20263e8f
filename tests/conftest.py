"""Shared fixtures: throwaway PostgreSQL databases and a clean Redis database per test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from backout_sandbox.s3 import LocalS3
from tests.support import (
    S3,
    SERVER_URL,
    create_database,
    database_url,
    drop_database,
    start_redis_server,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here and not in tests/faults/conftest.py: pytest reads options only from the conftest files
    # it loads before collecting, and `scripts/test --repeat 20` must work from the top.
    parser.addoption("--repeat", type=int, default=None, metavar="N",
                     help="tries per fault-suite test (tests/faults/); default: each test's CI count")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A line per fault-suite test: how often its fault was tried and how often backout held."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "fault" and getattr(report, "when", "") == "call":
                    lines.append(f"{report.nodeid}: {value}")
    if lines:
        terminalreporter.write_sep("-", "fault suite: tried, held")
        for line in sorted(lines):
            terminalreporter.write_line(line)


@pytest.fixture
def make_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases (their URLs); each is dropped after the test."""
    created: list[str] = []

    def make() -> str:
        created.append(create_database("backout_test"))
        return database_url(created[-1])

    yield make
    for name in created:
        drop_database(name)


@pytest.fixture
def database(make_database: Callable[[], str]) -> str:
    """The URL of a fresh, empty database, dropped after the test."""
    return make_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real Redis for this test session: BACKOUT_TEST_REDIS_URL if set, else a private
    redis-server on a free loopback port, so that concurrent test runs never share a queue."""
    if os.environ.get("BACKOUT_TEST_REDIS_URL"):
        yield os.environ["BACKOUT_TEST_REDIS_URL"]
        return
    proc, url = start_redis_server()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """Database 0 of the session's Redis, flushed before and after the test."""
    url = f"{redis_server}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def heroku_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `heroku` (scripts/heroku: the Heroku CLI that scripts/install-heroku-cli
    pins), to put first on PATH. The CLI is installed now if it is missing; the test is skipped
    only where npm cannot be had (scripts/setup installs it from Debian, so CI never skips)."""
    root = Path(__file__).resolve().parent.parent
    if shutil.which("npm") is not None:
        subprocess.run([str(root / "scripts" / "install-heroku-cli")], check=True)  # at once when it is there
    elif not (root / ".tools" / "heroku" / "node_modules" / "heroku" / "bin" / "run.js").exists():
        reason = "npm is not installed, so the Heroku CLI cannot be: scripts/setup installs Node.js and npm"
        if os.environ.get("BACKOUT_TEST_REQUIRE_HEROKU_CLI"):  # CI sets it: there the test must run
            pytest.fail(reason)
        pytest.skip(reason)
    bin_dir = tmp_path_factory.mktemp("heroku-bin")
    (bin_dir / "heroku").symlink_to(root / "scripts" / "heroku")
    return bin_dir


@pytest.fixture
def notes():
    """A receiver of BACKOUT_NOTIFY_URL posts on a free loopback port (tests.health_support's
    Notifications: `.url`, `.received`, `.events`), closed after the test."""
    from tests.health_support import Notifications

    receiver = Notifications()
    yield receiver
    receiver.close()


@pytest.fixture
def sandbox(tmp_path):
    """A fresh sandbox (a local Heroku) on a free loopback port, with its own state file and work
    directory under tmp_path. Its add-on databases get unique names on SERVER_URL's server and are
    dropped, with its dynos stopped, after the test. Use `.url`, `.token`, `.env` (the
    BACKOUT_HEROKU_API_URL, BACKOUT_HEROKU_DATA_URL and HEROKU_API_KEY a client needs), `.faults`
    (scripted 429/5xx, slow answers, failing release phases), `.requests` (every API request
    served) and `.log_path(app)`."""
    from backout_sandbox.server import start

    box = start(port=0, state_path=tmp_path / "sandbox.json", work_dir=tmp_path / "sandbox",
                postgres_url=SERVER_URL, stop_timeout=5)
    yield box
    box.stop(drop_databases=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """A real S3 endpoint on loopback for this test session: moto's standalone server, over HTTP."""
    with LocalS3() as server:
        yield server


@pytest.fixture
def s3(s3_server: LocalS3) -> S3:
    """A fresh bucket on the session's S3 endpoint (`.bucket`, `.env` for a process, `.client`)."""
    return S3(s3_server)


@pytest.fixture
def heroku(sandbox):
    """The sandbox through backout's own client, with apps deployed with the release hook as their
    release phase (tests.hooks.support.Heroku)."""
    from tests.hooks.support import Heroku

    h = Heroku(sandbox)
    yield h
    h.client.close()
