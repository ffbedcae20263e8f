"""Restore drills (`backout drill`, and the worker's scheduled drill job) against a real ledger, a
real PostgreSQL and the loopback S3 endpoint; and the sweep of uploads left open by a checkpoint
whose process died, which the next checkpoint aborts (a live one's is left alone)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from backout import checkpoint as checkpoints
from backout import drill as drills
from backout import ledger
from backout import settings as settings_module
from backout.storage.archives import archive_key
from tests.support import S3, SERVER_URL, child_env

pytestmark = pytest.mark.integration


def seed(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 3000) g")
        conn.execute("ALTER TABLE notes ADD PRIMARY KEY (id)")
        conn.execute("CREATE TABLE tags (id serial PRIMARY KEY, note int REFERENCES notes (id))")
        conn.execute("INSERT INTO tags (note) SELECT g FROM generate_series(1, 40) g")


def take(settings: settings_module.Settings, version: int) -> dict:
    with ledger.connect(settings.ledger_url or "") as conn:
        return checkpoints.take(settings, conn, checkpoints.Release(version=version), app="shop")


def backout(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backout", *args], env=child_env(env), capture_output=True,
                          text=True, timeout=120)


def scratch_databases() -> set[str]:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backout_drill_%'")}


def test_drill_restores_checks_drops_and_records(database: str, s3: S3) -> None:
    seed(database)
    env = {"DATABASE_URL": database, **s3.env()}
    settings = settings_module.load(env)
    cp = take(settings, 7)
    before = scratch_databases()

    done = backout(env, "drill", "--app", "shop")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drilled {cp['id']}: restored in ") and "2 tables and 3040 rows" in done.stdout
    assert "drill: restoring" in done.stderr and "s3://" in done.stderr
    assert scratch_databases() == before  # the scratch database is gone
    listed = json.loads(backout(env, "checkpoints", "--app", "shop", "--json").stdout)["checkpoints"][0]
    assert listed["drill"]["ok"] is True and listed["drill"]["rows"] == 3040 and listed["drill"]["at"]
    assert listed["drill"]["seconds"] > 0
    table = backout(env, "checkpoints", "--app", "shop").stdout
    assert "DRILLED" in table and "pg_dump (s3)" in table and f"({listed['drill']['seconds']:.1f}s)" in table

    # An archive that no longer reads as written: the drill fails, says why, and is recorded as failed.
    s3.client.put_object(Bucket=s3.bucket, Key=cp["backup"]["key"], Body=b"\0" * cp["backup"]["size"])
    failed = backout(env, "drill", "--app", "shop")
    assert failed.returncode == 1 and f"drill of {cp['id']} failed" in failed.stderr, failed.stderr
    listed = json.loads(backout(env, "checkpoints", "--app", "shop", "--json").stdout)["checkpoints"][0]
    assert listed["drill"]["ok"] is False and listed["drill"]["error"]
    assert scratch_databases() == before

    nothing = backout({"DATABASE_URL": database}, "drill", "--app", "nobody")
    assert nothing.returncode == 2 and "nobody has no complete pg_dump checkpoint to drill" in nothing.stderr


def test_the_worker_drills_on_its_schedule_once_per_interval(database: str, s3: S3, redis_url: str,
                                                             tmp_path: Path) -> None:
    seed(database)
    env = {"DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "unused-here",
           "BACKOUT_DRILL_EVERY": "1h", **s3.env()}
    settings = settings_module.load(env)
    assert settings_module.load({k: v for k, v in env.items() if k != "BACKOUT_DRILL_EVERY"}).storage.drill_every is None
    cp = take(settings, 3)
    connection = redis.Redis.from_url(redis_url)
    (job,) = drills.schedule(settings, connection)
    assert job.startswith(f"drill-shop-{cp['id']}-") and drills.schedule(settings, connection) == []
    done = subprocess.run([sys.executable, "-m", "backout", "worker", "--burst"], env=child_env(env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with ledger.connect(database) as conn:
        drilled = ledger.get_checkpoint(conn, cp["id"])
    assert drilled["drill"]["ok"] is True and drilled["drill"]["tables"] == 2, done.stderr
    assert drills.schedule(settings, connection) == []  # drilled within the interval


def test_the_next_checkpoint_aborts_uploads_that_dead_checkpoints_left(database: str, s3: S3) -> None:
    seed(database)
    settings = settings_module.load({"DATABASE_URL": database, **s3.env()})
    assert settings.storage.archives is not None
    with ledger.connect(database) as conn:
        def running(version: int) -> dict:
            return ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=version, release_id=None,
                                            slug_id=None, slug_commit=None, previous_release_version=None,
                                            backup_strategy="pg_dump", migration_tool="none")
        dead, alive = running(1), running(2)
    # A release phase killed mid-upload leaves its row 'running' and its upload open; a live one holds its lock.
    for cp in (dead, alive):
        s3.client.create_multipart_upload(Bucket=s3.bucket, Key=archive_key(settings.storage.archives, "shop", cp["id"]))
    holder = ledger.connect(database)
    holder.execute("SELECT pg_advisory_lock(%s)", [ledger.checkpoint_lock_key(alive["id"])])  # as its taker does
    try:
        lines: list[str] = []
        with ledger.connect(database) as conn:
            new = checkpoints.take(settings, conn, checkpoints.Release(version=3), app="shop", progress=lines.append)
        assert new["status"] == "complete" and new["backup"]["key"] in s3.keys()
        left = [u["Key"] for u in s3.uploads()]
        assert left == [archive_key(settings.storage.archives, "shop", alive["id"])]
        assert any("aborted 1 unfinished upload(s) left by interrupted checkpoints" in line for line in lines)
    finally:
        holder.close()
