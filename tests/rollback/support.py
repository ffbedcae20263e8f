"""What the rollback tests share: the sandbox app `shop` with its five releases, checkpoints of its
releases in the ledger, and checksums of a database's rows."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from backout import ledger
from backout import settings as settings_module
from backout.heroku import HerokuClient
from backout.worker.main import build_worker
from tests.stub_http import Reply, StubServer
from tests.support import child_env, deploy_slug, start_worker, stop_workers

APP = "shop"


class Shop:
    """The sandbox app `shop` with five releases, and what a test needs around it."""

    def __init__(self, sandbox: Any, database: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sandbox, self.database, self.redis_url, self.tmp = sandbox, database, redis_url, tmp_path
        self.delay_file = tmp_path / "delay"
        self.hook = StubServer(lambda request: Reply(200, "ok"))
        self.env = {
            "DATABASE_URL": database, "REDIS_URL": redis_url, "BACKOUT_NOTIFY_URL": self.hook.url + "/hook",
            "BACKOUT_LOG_LEVEL": "INFO", **sandbox.env,
            # The worker's health monitor wakes this often, so a stopped worker exits at once.
            "BACKOUT_HEALTH_INTERVAL": "0.5",
        }
        # Jobs run in this process (SimpleWorker) read their settings from the environment.
        for name in settings_module.setting_names():
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        self.settings = settings_module.load(self.env)
        self.client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
        self.redis = redis.Redis.from_url(redis_url)
        self.workers: list[subprocess.Popen] = []
        self.client.create_app(APP)
        self.client.update_config_vars(APP, {"FEATURE": "old"})                    # v2
        self.slug_a = self.deploy("a")                                             # v3
        self.client.update_config_vars(APP, {"FEATURE": "new"})                    # v4
        self.slug_b = self.deploy("b")                                             # v5

    def deploy(self, code: str) -> str:
        processes = {"release": f"sleep $(cat {self.delay_file} 2>/dev/null || echo 0)"}
        done = deploy_slug(self.client, APP, processes, {"VERSION": code}, commit=f"{code}{time.time_ns()}",
                           timeout=30, poll=0.05)
        assert done["status"] == "succeeded", done
        return done["slug"]["id"]

    def run_worker(self) -> None:
        """Run the queued jobs in a real RQ worker in this process, then return."""
        build_worker(self.redis, self.settings, simple=True).work(burst=True, logging_level="WARNING")

    def start_worker(self, *args: str) -> subprocess.Popen:
        proc = start_worker(child_env(self.env), self.tmp / f"worker-{len(self.workers)}.log", *args)
        self.workers.append(proc)
        return proc

    def worker_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*.log")))

    def request(self, request_id: str) -> dict:
        conn = ledger.connect(self.database)
        try:
            return ledger.get_request(conn, request_id)
        finally:
            conn.close()

    def steps(self, request_id: str) -> list[tuple[str, str]]:
        conn = ledger.connect(self.database)
        try:
            return [(s["step"], s["status"]) for s in ledger.steps(conn, request_id)]
        finally:
            conn.close()

    def rollback_releases(self, version: int = 3) -> list[dict]:
        return [r for r in self.client.list_releases(APP) if r["description"] == f"Rollback to v{version}"]

    def config(self) -> dict:
        return self.client.config_vars(APP)

    def notified(self) -> list[dict]:
        return [r.json() for r in self.hook.requests]

    def close(self) -> None:
        stop_workers(self.workers)
        self.hook.close()
        self.client.close()
        self.redis.close()


def shop_checkpoint(database: str, version: int, verified: bool) -> dict:
    conn = ledger.connect(database)
    try:
        cp = ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=version, release_id=None,
                                      slug_id=None, slug_commit=None, previous_release_version=version - 1,
                                      backup_strategy="none", migration_tool="none")
        cp = ledger.update_checkpoint(conn, cp["id"], status="complete", completed_at="now")
        if verified:
            ledger.mark_release_verified(conn, "shop", version)
        return cp
    finally:
        conn.close()


def checksums(url: str) -> dict[str, str]:
    """md5 of every app table's rows in a stable order (the ledger's schema left out)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            """SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
               WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema', 'backout')
                 AND table_schema NOT LIKE '%\\_before\\_%' ORDER BY 1""").fetchall()
        return {t: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")
                .fetchone()[0] for (t,) in tables}


def schema(url: str) -> str:
    """The app's schema as pg_dump prints it, without the ledger or copies kept by a swap."""
    out = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--exclude-schema=backout",
                          "--exclude-schema=*_before_*", "--dbname", url], capture_output=True, text=True, check=True)
    return "\n".join(line for line in out.stdout.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")))
