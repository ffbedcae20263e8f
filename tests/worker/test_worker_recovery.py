"""The ledger sweep: requests that Redis lost get their job again, once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis
from rq.job import Job, JobStatus

from backout import ledger
from backout import settings as settings_module
from backout.worker import queues
from backout.worker.recovery import MAX_ATTEMPTS, requeue_lost

pytestmark = pytest.mark.integration


@pytest.fixture
def env(database: str, redis_url: str):
    settings = settings_module.load({"DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "t0ken"})
    conn = ledger.connect(database)
    yield settings, conn, redis.Redis.from_url(redis_url)
    conn.close()


def _request(conn, app: str = "app-one", **fields) -> dict:
    request = ledger.create_request(conn, app=app, target="v3", db="none", dry_run=fields.pop("dry_run", False),
                                    requested_by="test@host", plan={"target": {"version": 3}})
    return ledger.update_request(conn, request["id"], **fields) if fields else request


def _queued_ids(r: redis.Redis, conn) -> list[str]:
    return queues.queue(queues.ledger_queues(conn)[0], r).job_ids


def _taken_off_the_queue(r: redis.Redis, conn, request: dict) -> Job:
    """The request's job, enqueued and then taken off the queue, as a worker takes it."""
    job_id = queues.request_job_id(request["id"])
    rollback_queue = queues.ledger_queues(conn)[0]
    queues.enqueue_once(r, rollback_queue, queues.ROLLBACK_JOB, [request["id"]], job_id)
    job = queues.queue(rollback_queue, r).fetch_job(job_id)
    queues.queue(rollback_queue, r).remove(job)
    return job


def test_a_request_redis_lost_is_enqueued_again_once(env) -> None:
    settings, conn, r = env
    lost = _request(conn)
    _request(conn, dry_run=True)                       # never enqueued
    _request(conn, status="succeeded")                 # finished
    assert requeue_lost(settings, r) == [lost["id"]]
    assert _queued_ids(r, conn) == [queues.request_job_id(lost["id"])]
    # Its job is in Redis now: a second sweep leaves it alone.
    assert requeue_lost(settings, r) == []
    assert _queued_ids(r, conn) == [queues.request_job_id(lost["id"])]
    assert [(s["step"], s["status"]) for s in ledger.steps(conn, lost["id"])] == [("requeue", "done")]


def test_a_job_that_ended_before_its_request_is_run_again(env) -> None:
    settings, conn, r = env
    request = _request(conn, attempts=1)
    job = _taken_off_the_queue(r, conn, request)
    job_id = job.id
    job.set_status(JobStatus.FAILED)                   # cut short without writing its outcome
    assert requeue_lost(settings, r) == [request["id"]]
    assert _queued_ids(r, conn) == [job_id]
    assert queues.queue(queues.ledger_queues(conn)[0], r).fetch_job(job_id).get_status() == JobStatus.QUEUED


def test_a_running_request_whose_worker_died_is_run_again(env) -> None:
    settings, conn, r = env
    request = _request(conn, status="running", attempts=1)
    job = _taken_off_the_queue(r, conn, request)
    job_id = job.id
    job.set_status(JobStatus.STARTED)
    job.heartbeat(datetime.now(timezone.utc), 60)

    # While someone holds the app's lock, the job is alive: leave it.
    with ledger.app_lock(settings.ledger_url, "app-one") as held:
        assert held
        assert requeue_lost(settings, r) == []
    # Nobody holds it: the process running the job is gone.
    assert requeue_lost(settings, r) == [request["id"]]
    assert ledger.get_request(conn, request["id"])["status"] == "queued"
    assert _queued_ids(r, conn) == [job_id]


def test_a_started_job_without_heartbeats_is_run_again(env) -> None:
    settings, conn, r = env
    request = _request(conn, attempts=1)               # still queued: it was waiting for the app lock
    job = _taken_off_the_queue(r, conn, request)
    job.set_status(JobStatus.STARTED)
    job.heartbeat(datetime.now(timezone.utc), 60)
    assert requeue_lost(settings, r) == []
    job.heartbeat(datetime.now(timezone.utc) - timedelta(minutes=5), 60)
    assert requeue_lost(settings, r) == [request["id"]]


def test_a_request_that_keeps_failing_is_given_up(env) -> None:
    settings, conn, r = env
    request = _request(conn, attempts=MAX_ATTEMPTS)
    assert requeue_lost(settings, r) == []
    row = ledger.get_request(conn, request["id"])
    assert row["status"] == "failed"
    assert f"gave up after {MAX_ATTEMPTS} attempts" in row["error"]
    assert _queued_ids(r, conn) == []


def test_two_sweeps_at_once_enqueue_once(env) -> None:
    settings, conn, r = env
    request = _request(conn)
    lock = r.lock(f"backout:recovery@{ledger.ledger_id(conn)}", timeout=30)
    assert lock.acquire(blocking=False)                # another worker is sweeping
    try:
        assert requeue_lost(settings, r) == []
    finally:
        lock.release()
    assert requeue_lost(settings, r) == [request["id"]]
