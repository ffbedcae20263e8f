"""Re-enqueueing rollback requests that Redis lost.

The ledger is the truth and Redis is transport: a request is written to the ledger before its job
is enqueued, so a Redis restart without persistence, a flush, or a worker killed mid-job can lose
the job but never the request. The worker calls `requeue_lost` when it starts and every
maintenance interval. A request still 'queued' or 'running' is given its job again when:

- its job is not in Redis at all;
- its job ended (finished, failed, stopped) without the request reaching a final status, which is
  what a job cut short by a shutdown leaves behind;
- it is 'running' but nobody holds the app's lock: the job takes the lock before it marks the
  request running and releases it only after the final status, and PostgreSQL drops the lock the
  moment the process holding it dies;
- its job is 'started' but its worker stopped sending heartbeats.

A request that ended 'failed' after it asked Heroku for the rollback release (the POST took effect,
then 503s outlasted the retries) is reconciled once: when the rollback release exists, the request
goes back to the queue and its job, which finds that release instead of making another, follows it
to the end and verifies it.

Re-running is safe because the job is idempotent: it records each step and re-checks the app's
state, so a request that is given its job twice still rolls back once. After MAX_ATTEMPTS runs
the request is marked failed and people are told, so a job that always crashes does not loop.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import sentry_sdk
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from backout import ledger
from backout.errors import BackoutError
from backout.ledger.records import (
    ACTIVE_STATUSES,
    LedgerConnection,
    RequestRow,
    RequestStatus,
    StepName,
    StepStatus,
)
from backout.notify import notify
from backout.redact import redact
from backout.settings import Settings
from backout.worker.allowlist import AllowlistedJob
from backout.worker.queues import REQUEST_JOBS, enqueue_once, ledger_queues, request_job_id
from backout.worker.serializer import SERIALIZER

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# A failed request is reconciled with Heroku only this long after it failed.
RECONCILE_WITHIN = timedelta(hours=6)
# A busy worker refreshes its job's heartbeat every job_monitoring_interval (5 s in backout's worker).
STALE_HEARTBEAT = timedelta(seconds=60)
_ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
# One sweep of a ledger at a time (each ledger its own: apps may share a Redis).
_LOCK_KEY = "backout:recovery@{}"


def requeue_lost(settings: Settings, connection: Redis) -> list[str]:
    """Give every lost request its job again; returns the ids of the requests re-enqueued.

    Two workers may sweep at once; a short Redis lock lets one of them do it.
    """
    settings.require("BACKOUT_DATABASE_URL")
    assert settings.ledger_url is not None
    requeued: list[str] = []
    conn = ledger.connect(settings.ledger_url)
    try:
        rollback_queue = ledger_queues(conn)[0]
        lock = connection.lock(_LOCK_KEY.format(ledger.ledger_id(conn)), timeout=120)
        if not lock.acquire(blocking=False):
            return []
        try:
            for request in ledger.list_requests(conn, statuses=ACTIVE_STATUSES, limit=1000):
                if request["dry_run"] or request["kind"] not in REQUEST_JOBS:
                    continue
                reason = _why_lost(request, connection, settings, rollback_queue)
                if reason is None:
                    continue
                if ledger.moved_away(conn, request["id"]):
                    continue  # this ledger is the copy a promotion left behind
                # The job may have finished between listing and looking at Redis.
                current = ledger.get_request(conn, request["id"])
                if current is None or current["status"] not in ACTIVE_STATUSES:
                    continue
                if _requeue(conn, connection, settings, current, reason, rollback_queue):
                    requeued.append(current["id"])
            requeued += _reconcile_failed(conn, connection, settings, rollback_queue)
        finally:
            lock.release()
    finally:
        conn.close()
    return requeued


def _why_lost(request: RequestRow, connection: Redis, settings: Settings, rollback_queue: str) -> str | None:
    try:
        job = AllowlistedJob.fetch(request_job_id(request["id"]), connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return "its job is not in Redis"
    status = job.get_status(refresh=False)
    if status in _ENDED:
        return f"its job ended ({status.value}) before the request did"
    if status != JobStatus.STARTED and job.origin != rollback_queue:
        # Put there by an older backout, whose queues were shared by every ledger on the Redis.
        return f"its job waits on {job.origin}, where no worker of this ledger looks"
    if status != JobStatus.STARTED:
        return None  # queued, scheduled or deferred: a worker will get to it
    if request["status"] == RequestStatus.RUNNING:
        assert settings.ledger_url is not None
        with ledger.app_lock(settings.ledger_url, request["app"], wait=False) as free:
            if free:
                return "the worker running it died (the app lock is free)"
    heartbeat = job.last_heartbeat
    if heartbeat is not None and heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=timezone.utc)
    if heartbeat is None or datetime.now(timezone.utc) - heartbeat > STALE_HEARTBEAT:
        return "its worker stopped sending heartbeats"
    return None


def _reconcile_failed(conn: LedgerConnection, connection: Redis, settings: Settings, rollback_queue: str) -> list[str]:
    """Give their job again to recently failed requests whose rollback release Heroku made."""
    since = datetime.now(timezone.utc) - RECONCILE_WITHIN
    candidates = []
    for request in ledger.list_requests(conn, statuses=["failed"], limit=200):
        if request["kind"] != "heroku" or request["dry_run"] or not request["finished_at"]:
            continue
        if datetime.fromisoformat(request["finished_at"]) < since or request["attempts"] >= MAX_ATTEMPTS:
            continue
        steps = ledger.steps(conn, request["id"])
        asked = any(s["step"] == StepName.CODE_ROLLBACK and s["status"] in (StepStatus.STARTED, StepStatus.DONE) for s in steps)
        if asked and not any(s["step"] == StepName.RECONCILE for s in steps):
            candidates.append(request)
    if not candidates:
        return []
    from backout.heroku import HerokuClient

    reconciled = []
    with HerokuClient.from_settings(settings) as client:
        for request in candidates:
            plan = request["plan"] or {}
            try:
                release = client.rollback_release_since(request["app"], plan["target"]["version"],
                                                        plan["current"]["version"], failed=False)
            except BackoutError as exc:  # Heroku still failing: the next sweep asks again
                log.warning("cannot reconcile rollback request %s yet: %s", request["id"],
                            redact(str(exc), settings.secrets()))
                continue
            if release is None:
                ledger.record_step(conn, request["id"], StepName.RECONCILE, StepStatus.SKIPPED,
                                   {"reason": "Heroku has no rollback release of this request; it failed"})
                continue
            reason = (f"it failed, but its rollback release v{release['version']} exists "
                      f"({release.get('status')}): following it to the end")
            ledger.record_step(conn, request["id"], StepName.RECONCILE, StepStatus.DONE,
                               {"reason": reason, "release_version": release["version"]})
            ledger.update_request(conn, request["id"], status=RequestStatus.QUEUED, error=None, finished_at=None)
            if _requeue(conn, connection, settings, ledger.require_request(conn, request["id"]), reason,
                        rollback_queue):
                reconciled.append(request["id"])
    return reconciled


def _requeue(conn: LedgerConnection, connection: Redis, settings: Settings, request: RequestRow, reason: str,
             rollback_queue: str) -> bool:
    request_id = request["id"]
    if request["attempts"] >= MAX_ATTEMPTS:
        error = f"gave up after {request['attempts']} attempts: {reason}"
        ledger.record_step(conn, request_id, StepName.REQUEUE, StepStatus.FAILED, {"reason": reason})
        ledger.update_request(conn, request_id, status=RequestStatus.FAILED, error=error, finished_at="now")
        log.error("rollback request %s: %s", request_id, error)
        notify(settings, "rollback.failed", f"Rollback {request_id} of {request['app']} failed: {error}",
               {"request_id": request_id, "app": request["app"], "error": error})
        return False
    job_id = request_job_id(request_id)
    try:
        AllowlistedJob.fetch(job_id, connection=connection, serializer=SERIALIZER).delete()
    except NoSuchJobError:
        pass
    enqueue_once(connection, rollback_queue, REQUEST_JOBS[request["kind"]], [request_id], job_id,
                 secrets=settings.secrets())
    ledger.record_step(conn, request_id, StepName.REQUEUE, StepStatus.DONE, {"reason": reason, "job_id": job_id})
    if request["status"] == RequestStatus.RUNNING:
        ledger.update_request(conn, request_id, status=RequestStatus.QUEUED)
    message = f"rollback request {request_id} of {request['app']} re-enqueued: {reason}"
    log.warning(message)
    # A job lost this way was abandoned by its worker; Sentry hears of it (a no-op without SENTRY_DSN).
    sentry_sdk.capture_message(message, level="warning")
    return True
