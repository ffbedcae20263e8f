"""The worker: allowlisted job functions only, JSON on the queue, rollback queue first, enqueue once."""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from backout import settings as settings_module
from backout.worker import allowlist, queues
from backout.worker.main import build_worker
from backout.worker.serializer import check_arguments
from tests.support import ledger_queue_names


def test_allowlist_accepts_backout_jobs_only() -> None:
    assert allowlist.resolve("backout.jobs.rollback.run_rollback").__name__ == "run_rollback"
    refused = [
        "os.system",
        "subprocess.run",
        "backout.jobs.rollback.os.system",          # an attribute chain out of a job module
        "backout.jobs.rollback.load",               # imported into the module, defined elsewhere
        "backout.jobs.rollback._finish",            # private helper
        "backout.jobs.rollback.RollbackFailed",     # a class, not a job function
        "backout.jobs.nosuchmodule.run",
        "backout.rollback.enqueue.enqueue_rollback",        # backout, but not a job
        "backout.jobs.rollback.run_rollback ",
        None,
    ]
    for name in refused:
        with pytest.raises(allowlist.JobRefused):
            allowlist.resolve(name)


def test_job_arguments_must_be_plain_and_secret_free() -> None:
    check_arguments(["rb_01ABC", 3, None, {"a": [1, True]}], secrets=["s3cr3t-token"])
    with pytest.raises(ValueError, match="secret"):
        check_arguments(["Bearer s3cr3t-token"], secrets=["s3cr3t-token"])
    with pytest.raises(ValueError, match="secret"):
        check_arguments([{"url": "postgres://u:hunter22@db/x"}])
    with pytest.raises(ValueError, match="JSON"):
        check_arguments([b"bytes"])
    with pytest.raises(ValueError):
        check_arguments([{1: "x"}])


def test_enqueue_refuses_foreign_functions_before_redis(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    with pytest.raises(allowlist.JobRefused):
        queues.enqueue_once(conn, queues.ROLLBACK, "os.system", ["true"], "job-x")
    assert conn.keys("rq:job:*") == []


@pytest.mark.integration
def test_enqueue_twice_queues_once(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    job_id = queues.request_job_id("rb_TEST")
    assert queues.enqueue_once(conn, queues.ROLLBACK, queues.ROLLBACK_JOB, ["rb_TEST"], job_id)
    assert not queues.enqueue_once(conn, queues.ROLLBACK, queues.ROLLBACK_JOB, ["rb_TEST"], job_id)
    q = queues.queue(queues.ROLLBACK, conn)
    assert q.job_ids == [job_id]
    # The job is stored as JSON (zlib-compressed by RQ): data, not a pickle.
    data = zlib.decompress(conn.hget(f"rq:job:{job_id}", "data"))
    assert json.loads(data)[0] == queues.ROLLBACK_JOB


def _settings(database: str, redis_url: str) -> settings_module.Settings:
    return settings_module.load({"DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "t0ken-for-tests"})


@pytest.mark.integration
def test_worker_refuses_and_logs_a_foreign_function(
    redis_url: str, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = redis.Redis.from_url(redis_url)
    marker = tmp_path / "ran"
    # Someone with access to Redis pushes a job naming os.system, with the serializer the worker uses.
    raw = Queue(ledger_queue_names(database)[0], connection=conn, serializer=JSONSerializer)
    job = raw.enqueue("os.system", f"touch {marker}")
    # And one that names a backout job but smuggles a callback.
    sneaky = raw.enqueue(queues.ROLLBACK_JOB, "rb_NOPE", on_failure=Callback("os.system"))
    worker = build_worker(conn, _settings(database, redis_url), simple=True)
    with caplog.at_level(logging.WARNING):
        worker.work(burst=True)
    assert not marker.exists()
    for refused in (job, sneaky):
        refused.refresh()
        assert refused.get_status() == JobStatus.FAILED
        assert "JobRefused" in refused.latest_result().exc_string
    assert "refused to run 'os.system'" in caplog.text
    assert "refused job with callback 'os.system'" in caplog.text


@pytest.mark.integration
def test_worker_takes_rollbacks_before_routine_work(redis_url: str, database: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    rollback_queue, routine_queue = ledger_queue_names(database)
    assert rollback_queue.startswith(queues.ROLLBACK + "@") and routine_queue.startswith(queues.ROUTINE + "@")
    routine = queues.queue(routine_queue, conn).enqueue(queues.ROLLBACK_JOB, "rb_ROUTINE")
    rollback = queues.queue(rollback_queue, conn).enqueue(queues.ROLLBACK_JOB, "rb_ROLLBACK")
    worker = build_worker(conn, _settings(database, redis_url), simple=True)
    assert [q.name for q in worker.queues] == [rollback_queue, routine_queue]
    worker.bootstrap()
    first, queue = worker.dequeue_job_and_maintain_ttl(None)
    assert (first.id, queue.name) == (rollback.id, rollback_queue)
    second, _ = worker.dequeue_job_and_maintain_ttl(None)
    assert second.id == routine.id
    worker.teardown()
