"""The machine's services the demo needs: PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379.

Each is started the way scripts/setup starts it when it does not answer, and stopped afterwards
only if the demo started it, so the machine is left as it was. In Redis the demo claims a database
index nobody uses (a claim key set only if absent, in a database that holds nothing else) and
empties it afterwards; other users of the server never see the demo's queues.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backout.errors import BackoutError

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_PORT = 6379
REDIS_DIR = Path("/var/lib/redis")
REDIS_LOG = Path("/var/log/redis/backout-demo.log")
CLAIM_KEY = "backout-demo:claim"
START_TIMEOUT = 30.0

Say = Callable[[str], None]


class ServiceError(BackoutError):
    """A service does not answer and could not be started; the message says how to fix it."""


@dataclass
class Started:
    """A service the demo started, and how to stop it again."""

    name: str
    stop_argv: list[str]

    def stop(self) -> None:
        subprocess.run(self.stop_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)


def postgres_answers(url: str = POSTGRES_URL) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_answers(port: int = REDIS_PORT) -> bool:
    # One try: redis-py's default retries would make a server that is not there take seconds to say so.
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=2,
                         retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_postgres(say: Say, url: str = POSTGRES_URL) -> Started | None:
    """Start the newest Debian cluster when PostgreSQL does not answer; None if it already did."""
    if postgres_answers(url):
        return None
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        raise ServiceError("PostgreSQL does not answer on 127.0.0.1:5432 and no Debian cluster is installed "
                           "to start; run scripts/setup (it installs and starts PostgreSQL)")
    versions = sorted(os.listdir("/etc/postgresql"), key=_version_key)
    if not versions:
        raise ServiceError("PostgreSQL does not answer on 127.0.0.1:5432 and /etc/postgresql holds no cluster; "
                           "run scripts/setup")
    cluster = [versions[-1], "main"]
    say(f"starting PostgreSQL {versions[-1]} (it was not running; it is stopped again at the end)")
    _run(_as_root(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "start"]), "start PostgreSQL")
    started = Started("PostgreSQL", _as_root(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "stop"]))
    if not _wait(lambda: postgres_answers(url)):
        started.stop()
        raise ServiceError(f"PostgreSQL {versions[-1]} started but does not accept user postgres on 127.0.0.1:5432 "
                           "without a password; allow it with 'host all all 127.0.0.1/32 trust' in pg_hba.conf")
    return started


def ensure_redis(say: Say, port: int = REDIS_PORT, data_dir: Path = REDIS_DIR,
                 log_file: Path = REDIS_LOG) -> Started | None:
    """Start a redis-server on 127.0.0.1:`port` when none answers; None if one already did."""
    if redis_answers(port):
        return None
    if not shutil.which("redis-server"):
        raise ServiceError(f"Redis does not answer on 127.0.0.1:{port} and redis-server is not installed; "
                           "run scripts/setup (it installs and starts Redis)")
    say(f"starting Redis on 127.0.0.1:{port} (it was not running; it is stopped again at the end)")
    _run(_as_root(["mkdir", "-p", str(data_dir), str(log_file.parent)]), "make Redis's directories")
    _run(_as_root(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(port),
                   "--save", "", "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(log_file)]),
         "start Redis")
    started = Started("Redis", ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"])
    if not _wait(lambda: redis_answers(port)):
        started.stop()
        raise ServiceError(f"redis-server was started but does not answer on 127.0.0.1:{port}; see {log_file}")
    return started


@dataclass
class RedisClaim:
    """A database index of a Redis server that this run alone uses."""

    port: int
    index: int
    owner: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.index}"

    def release(self) -> None:
        """Empty the database, if the claim is still this run's."""
        client = redis.Redis(host="127.0.0.1", port=self.port, db=self.index, socket_timeout=10)
        try:
            if client.get(CLAIM_KEY) == self.owner.encode():
                client.flushdb()
        finally:
            client.close()


def claim_database(owner: str, port: int = REDIS_PORT) -> RedisClaim:
    """Claim an empty database index, from the highest down (index 0 is everyone's default)."""
    index = _database_count(port) - 1
    while index > 0:
        client = redis.Redis(host="127.0.0.1", port=port, db=index, socket_timeout=10)
        try:
            if client.set(CLAIM_KEY, owner, nx=True):
                if client.dbsize() == 1:
                    return RedisClaim(port, index, owner)
                client.delete(CLAIM_KEY)  # someone uses this database without claiming it
        finally:
            client.close()
        index -= 1
    raise ServiceError(f"every database index of the Redis on 127.0.0.1:{port} holds keys; the demo needs an "
                       "empty one so it cannot disturb other users (FLUSHDB one you do not use, or raise "
                       "`databases` in redis.conf)")


def _database_count(port: int) -> int:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        return int(client.config_get("databases").get("databases") or 16)
    except redis.ResponseError:  # CONFIG may be renamed away; 16 is Redis's default
        return 16
    finally:
        client.close()


def _as_root(argv: list[str]) -> list[str]:
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"could not {what} ({exc}); run scripts/setup") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ServiceError(f"could not {what}: {' '.join(argv)}: {detail[0]}; run scripts/setup")


def _wait(answers: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answers():
            return True
        time.sleep(0.3)
    return False


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in name.split("."))
