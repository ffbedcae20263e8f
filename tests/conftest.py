"""Shared fixtures: throwaway PostgreSQL databases and a clean Redis database per test."""

from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

SERVER_URL = os.environ.get("BACKOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("BACKOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


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


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own for this test (index 1-15 picked by the xdist worker), flushed before and after."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = 1 + int(worker.lstrip("gw") or 0) % 15
    url = f"{REDIS_SERVER}/{index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
