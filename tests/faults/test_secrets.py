"""A secrets sweep: the commands run with credentials in every place they can be (the database URL,
the health URLs, the API token), then everything that was produced is searched for them: output,
the migrate command's relayed output, logs, ledger rows, Redis keys and values, the process list,
and every file written.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import redis

from backout import ledger
from tests.faults.conftest import Trials
from tests.health_support import HealthApp
from tests.stub_http import Reply, StubServer
from tests.support import child_env, start_worker, stop_workers, wait_for

pytestmark = pytest.mark.integration

DB_PASSWORD = "Pw-sweep-5f4e3d2c1b0a"
HEALTH_PASSWORD = "Hp-sweep-0a1b2c3d4e5f"
TOKEN = "hk-sweep-77d1c0ffee5eed00"
SECRETS = (DB_PASSWORD, HEALTH_PASSWORD, TOKEN)


def sweep(found_in: dict[str, str]) -> None:
    """Fail naming each place that holds one of SECRETS."""
    leaks = [f"{where} holds {secret!r}" for where, text in found_in.items() for secret in SECRETS if secret in text]
    assert not leaks, "\n".join(leaks)


def ledger_text(url: str) -> str:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'backout'")]
        return "\n".join(str(conn.execute(f'SELECT * FROM backout."{t}"').fetchall()) for t in tables)


def redis_text(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts = []
    for key in client.scan_iter():
        parts.append(repr(key))
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind in ("set", "zset"):
            parts.append(repr(client.zrange(key, 0, -1) if kind == "zset" else client.smembers(key)))
    return "\n".join(parts)


def files_text(root: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file()}


class ProcessWatch:
    """The command lines of every process on the machine, read every 50 ms while running."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen.update(line for line in out.splitlines() if "backout" in line or "sh -c" in line)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        return "\n".join(sorted(self.seen))


def test_no_secret_reaches_anything_backout_produces(database: str, redis_url: str, tmp_path: Path,
                                                     trials: Trials) -> None:
    url = database.replace("postgres@", f"postgres:{DB_PASSWORD}@")  # trust auth ignores the password
    app = HealthApp()
    # A Platform API that refuses the token at once (401 is not retried): the worker's job fails fast.
    api = StubServer(lambda request: Reply(401, {"id": "unauthorized", "message": "Invalid credentials provided."}))
    try:
        health_url = app.url.replace("http://", f"http://probe:{HEALTH_PASSWORD}@")
        env = child_env({"DATABASE_URL": url, "REDIS_URL": redis_url, "HEROKU_APP_NAME": "shop",
                         "BACKOUT_BACKUP": "pg_dump", "BACKOUT_BACKUP_DIR": str(tmp_path / "backups"),
                         "BACKOUT_HEALTH_URL": f"{health_url},{health_url}/other",
                         "BACKOUT_HEALTH_TIMEOUT": "2", "HEROKU_API_KEY": TOKEN,
                         "BACKOUT_HEROKU_API_URL": api.url, "BACKOUT_HEROKU_DATA_URL": api.url})

        def trial(i: int) -> None:
            produced: dict[str, str] = {}
            watch = ProcessWatch()
            # The migrate command prints the database URL and its password, as tools do.
            migrate = ["sh", "-c", 'echo "connecting to $DATABASE_URL"; echo "password: ${DATABASE_URL#*:*:}" >&2; sleep 0.3']
            hook_env = {**env, "HEROKU_RELEASE_VERSION": f"v{i + 1}", "HEROKU_API_KEY": ""}
            done = subprocess.run([sys.executable, "-m", "backout", "release", "--", *migrate], env=hook_env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert "connecting to postgres" in done.stdout  # the output was relayed, masked
            produced["release output"] = done.stdout + done.stderr

            done = subprocess.run([sys.executable, "-m", "backout", "health", "--app", "shop", "--json"],
                                  env={**env, "HEROKU_API_KEY": ""}, capture_output=True, text=True, timeout=60)
            produced["health output"] = done.stdout + done.stderr
            assert '"probes"' in done.stdout, done.stderr

            # A worker whose job fails against an API that does not answer, with the token set.
            with ledger.connect(url) as conn:
                request = ledger.create_request(conn, app="shop", target="v1", db="none", dry_run=False,
                                                requested_by="sweep", plan={"target": {"version": 1, "id": "x"}})
            worker = start_worker(env, tmp_path / f"worker-{i}.log", "--burst")
            worker.wait(120)
            with ledger.connect(url) as conn:
                wait_for(lambda: ledger.get_request(conn, request["id"])["status"] != "queued", timeout=60,
                         what="the worker to take the request")
            stop_workers([worker])
            produced["process list"] = watch.stop()
            produced["ledger"] = ledger_text(url)
            produced["redis"] = redis_text(redis_url)
            produced.update(files_text(tmp_path))
            sweep(produced)

        trials.run(trial, default=1)
    finally:
        app.close()
        api.close()
