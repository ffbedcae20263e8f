"""Shared fixtures: throwaway PostgreSQL databases and a clean Redis database per test."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

SERVER_URL = os.environ.get("BACKOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    """SERVER_URL pointed at another database on the same server."""
    return urlunsplit(urlsplit(SERVER_URL)._replace(path="/" + name))


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases (their URLs); each is dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"backout_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(SERVER_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return database_url(name)

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start; is it installed (scripts/setup)?")
            time.sleep(0.05)
    client.close()
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


@pytest.fixture
def sandbox(tmp_path):
    """A fresh sandbox (a local Heroku) on a free loopback port, with its own state file and work
    directory under tmp_path. Its add-on databases get unique names on SERVER_URL's server and are
    dropped, with its dynos stopped, after the test. Use `.url`, `.token`, `.env` (the
    BACKOUT_HEROKU_API_URL, BACKOUT_HEROKU_DATA_URL and HEROKU_API_KEY a client needs), `.faults`
    (scripted 429/5xx, slow answers, failing release phases), `.requests` (every API request
    served) and `.log_path(app)`."""
    from backout.sandbox.server import start

    box = start(port=0, state_path=tmp_path / "sandbox.json", work_dir=tmp_path / "sandbox",
                postgres_url=SERVER_URL, stop_timeout=5)
    yield box
    box.stop(drop_databases=True)
