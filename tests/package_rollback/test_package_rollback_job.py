"""A package rollback enqueued from a script and run by backout's worker (real Redis, JSON jobs)."""

from __future__ import annotations

import json
import subprocess
import zlib

import psycopg
import pytest
import redis

from backout import settings as settings_module
from backout.errors import BadInput, PlanRefused
from backout.package_rollback import enqueue_package_rollback
from backout.worker import queues
from backout.worker.main import build_worker
from backout_sandbox import forge as forge_module
from tests.support import ledger_queue_names

pytestmark = pytest.mark.integration

REPO = "acme/widgets"


@pytest.fixture
def world(tmp_path, database, redis_url, monkeypatch):
    forge = forge_module.start(port=0, state_path=tmp_path / "forge.json")
    demo = forge_module.demo_package(forge, tmp_path / "world")
    env = {"BACKOUT_GITHUB_API_URL": forge.url, "BACKOUT_PYPI_URL": forge.url, "GITHUB_TOKEN": demo["token"],
           "DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "t0ken-for-tests"}
    # The job reads its settings from the worker's environment, as on a dyno.
    for name in ("BACKOUT_DATABASE_URL", "BACKOUT_NOTIFY_URL", "SENTRY_DSN", "REDIS_TLS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield forge, demo, settings_module.load(env)
    forge.stop()


def requests_in(database: str) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT id, status, result, job_id FROM backout.requests").fetchall()


def test_enqueued_rollback_runs_on_the_worker_then_rechecks_the_yank(world, database, redis_url):
    forge, demo, settings = world
    connection = redis.Redis.from_url(redis_url)
    request_id = enqueue_package_rollback(REPO, "1.2.3", confirm=REPO, reason="broken", settings=settings)

    job_id = queues.request_job_id(request_id)
    raw = json.loads(zlib.decompress(connection.hget(f"rq:job:{job_id}", "data")))  # JSON, compressed by RQ
    assert raw[0] == "backout.jobs.package_rollback.run_package_rollback" and raw[2] == [request_id]
    assert demo["token"] not in json.dumps(raw)
    assert enqueue_package_rollback(REPO, "1.2.3", confirm=REPO, settings=settings) == request_id
    rollback_queue = ledger_queue_names(database)[0]
    assert connection.llen(f"rq:queue:{rollback_queue}") == 1  # enqueueing twice queued one job

    build_worker(connection, settings, simple=True).work(burst=True)
    [(rid, status, result, stored_job)] = requests_in(database)
    assert (rid, status, stored_job) == (request_id, "succeeded", job_id)
    assert result["yank"] == "pending" and result["tag"] == "v1.2.4"
    assert subprocess.run(["git", "--git-dir", demo["bare"], "tag", "--list", "v1.2.*"], capture_output=True,
                          text=True).stdout.split() == ["v1.2.0", "v1.2.1", "v1.2.2", "v1.2.4"]
    scheduled = queues.queue(rollback_queue, connection).scheduled_job_registry.get_job_ids()
    assert scheduled == [f"{job_id}-recheck-1"]

    # The maintainer yanks; the next run (a rerun from a script here) only re-checks PyPI.
    forge.yank("widgets", "1.2.3", "broken")
    assert enqueue_package_rollback(REPO, "1.2.3", confirm=REPO, settings=settings) == request_id
    build_worker(connection, settings, simple=True).work(burst=True)
    [(_, status, result, _)] = requests_in(database)
    assert status == "succeeded" and result["yank"] == "yanked"
    assert len(forge.issues(REPO)) == 1 and len(forge.releases(REPO)) == 4


def test_enqueue_refuses_bad_input_before_writing_anything(world, database, redis_url):
    forge, demo, settings = world
    connection = redis.Redis.from_url(redis_url)
    with pytest.raises(BadInput, match="repository acme/nope was not found"):
        enqueue_package_rollback("acme/nope", "1.2.3", confirm="acme/nope", settings=settings)
    with pytest.raises(PlanRefused, match="needs --confirm acme/widgets"):
        enqueue_package_rollback(REPO, "1.2.3", confirm="yes", settings=settings)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM backout.requests").fetchone()[0] == 0
    assert connection.llen(f"rq:queue:{ledger_queue_names(database)[0]}") == 0
