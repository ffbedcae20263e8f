"""Asking for a rollback: `backout.enqueue_rollback(...)` and `backout rollback ...`.

The order is what makes a rollback request safe to make from a script:

1. the plan is computed and validated (reads only; `PlanRefused`, exit status 2, changes nothing);
2. the request is written to the ledger with the plan and who asked;
3. its job is enqueued under `rollback-<request id>`, so enqueueing the same request again (the
   worker's sweep does, for requests Redis lost) queues it once.

`--dry-run` plans and records the request as a dry run (status `succeeded`, result
`{"dry_run": true}`), never enqueued: the app is not touched. A target the app already runs is not
refused; the plan says `noop` and the job records success without making a release (it decides
under the app's lock, since a rollback running at that moment may change the answer).
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from typing import Any, Callable, TypedDict

import psycopg
import redis
from rq import Worker

from backout import ledger, redis_conn
from backout.errors import BackoutError, BadInput
from backout.heroku import HerokuClient
from backout.ledger.records import FINAL_STATUSES, RequestRow, RequestStatus, StepName, StepRow, StepStatus
from backout.rollback.plan import Plan, build_plan
from backout.rollback.steps import describe as describe_step
from backout.settings import Settings, load
from backout.worker.queues import (
    REQUEST_JOBS,
    enqueue_once,
    ledger_queues,
    queue,
    request_job_id,
)

log = logging.getLogger(__name__)

NO_WORKER_HINT_AFTER = 10.0


def enqueue_rollback(
    app: str,
    to: str,
    db: str = "none",
    dry_run: bool = False,
    confirm: str | None = None,
    settings: Settings | None = None,
    requested_by: str | None = None,
    files: str = "none",
) -> str:
    """Plan a rollback of `app` to `to` (`vNN`, a checkpoint id or `previous`), record it, enqueue it.

    `files="restore"` also puts the uploads (BACKOUT_FILES) back as they were at the checkpoint.
    Returns the request id. Raises PlanRefused when the plan cannot be carried out; nothing is
    written then. `requested_by` defaults to `$USER@host` (the health monitor passes its own name).
    """
    settings = settings or load()
    if not isinstance(app, str) or not app.strip():
        raise BadInput("the app is empty; give the Heroku app's name")
    app = app.strip()
    settings.require("BACKOUT_DATABASE_URL", "HEROKU_API_KEY", *(() if dry_run else ("REDIS_URL",)))
    assert settings.ledger_url is not None
    conn = ledger.connect(settings.ledger_url)
    try:
        with HerokuClient.from_settings(settings) as client:
            plan = build_plan(client, conn, app, to, db, confirm, settings=settings, dry_run=dry_run,
                              files=files)
        request = ledger.create_request(
            conn, app=app, target=plan["to"], db=db, dry_run=dry_run,
            requested_by=requested_by or _who_asks(), plan=plan,
        )
        request_id = request["id"]
        ledger.record_step(conn, request_id, StepName.PLAN, StepStatus.DONE, {
            "target_version": plan["target"]["version"], "current_version": plan["current"]["version"],
            "noop": plan["noop"], "steps": plan["steps"],
        })
        if dry_run:
            ledger.update_request(conn, request_id, status=RequestStatus.SUCCEEDED, result={"dry_run": True}, finished_at="now")
            return request_id
        job_id = request_job_id(request_id)
        ledger.update_request(conn, request_id, job_id=job_id)
        try:
            enqueue_once(redis_conn.from_settings(settings), ledger_queues(conn)[0], REQUEST_JOBS["heroku"], [request_id],
                         job_id, secrets=settings.secrets())
        except redis.RedisError as exc:
            # The ledger has the request; a worker's sweep enqueues it once Redis answers.
            log.warning("rollback request %s is recorded but could not be enqueued (%s); "
                        "the worker will pick it up when Redis is reachable", request_id, type(exc).__name__)
        return request_id
    finally:
        conn.close()


def follow(
    settings: Settings,
    request_id: str,
    progress: Callable[[str], None],
    poll: float = 0.5,
    timeout: float | None = None,
) -> RequestRow:
    """Print each ledger step of the request as it is recorded; return the request once it is final."""
    assert settings.ledger_url is not None
    conn = ledger.connect(settings.ledger_url)
    try:
        shown = 0
        started = time.monotonic()
        hinted = False
        seen = gap_noted = False
        while True:
            try:
                request = ledger.get_request(conn, request_id)
                steps = ledger.steps(conn, request_id) if request else []
            except psycopg.Error:
                request = None
                if conn.closed or conn.broken:
                    conn = ledger.connect(settings.ledger_url)
            if request is None:
                if not seen:
                    raise BackoutError(f"rollback request {request_id} is not in the ledger")
                # A Data API restore replaces the ledger's tables with the backup's for a while when
                # the ledger lives in the app's database; the job puts the current rows back after.
                if not gap_noted:
                    progress("the ledger is being restored along with the database; waiting for it")
                    gap_noted = True
                time.sleep(poll)
                continue
            seen = True
            for step in steps[shown:]:
                if step["step"] == ledger.StepName.LEDGER_MOVED:
                    break
                progress(describe_step(step))
                shown += 1
            if any(step["step"] == ledger.StepName.LEDGER_MOVED for step in steps):
                # A promotion moved the ledger: the request goes on in the app's new database.
                progress(describe_step(steps[shown]))
                conn.close()
                conn = _moved_ledger(settings, request["app"])
                continue
            if request["status"] in FINAL_STATUSES:
                return request
            waited = time.monotonic() - started
            if not hinted and request["status"] == RequestStatus.QUEUED and waited > NO_WORKER_HINT_AFTER:
                hinted = True
                rollback_queue = ledger_queues(conn)[0]
                if not _workers_listening(settings, rollback_queue):
                    progress(f"no worker is listening on {rollback_queue}; start one with `backout worker`")
            if timeout is not None and waited > timeout:
                raise BackoutError(f"rollback request {request_id} is still {request['status']} after {timeout:.0f}s")
            time.sleep(poll)
    finally:
        conn.close()


def request_document(settings: Settings, request_id: str) -> RequestDocument:
    """The stable JSON document of a request: the request's fields, its plan, result and steps."""
    assert settings.ledger_url is not None
    conn = ledger.connect(settings.ledger_url)
    try:
        request = ledger.require_request(conn, request_id)
        if ledger.moved_away(conn, request_id):
            conn.close()
            conn = _moved_ledger(settings, request["app"])
            request = ledger.require_request(conn, request_id)
        return _document(request, ledger.steps(conn, request_id))
    finally:
        conn.close()


def _moved_ledger(settings: Settings, app: str) -> ledger.LedgerConnection:
    """The ledger in the app's database now (DATABASE_URL, as the Platform API says), after a
    promotion moved it there from the one these settings name."""
    with HerokuClient.from_settings(settings) as client:
        url = client.config_vars(app).get("DATABASE_URL")
    if not url:
        raise BackoutError(f"the ledger moved with {app}'s promoted database, but {app} has no DATABASE_URL")
    return ledger.connect(url)


class StepDocument(TypedDict):
    step: str
    status: str
    detail: dict[str, Any] | None
    at: str


class RequestDocument(TypedDict):
    """A rollback request as `backout rollback --json` prints it (stable keys)."""

    request_id: str
    app: str
    to: str
    db: str
    dry_run: bool
    status: str
    requested_by: str
    job_id: str | None
    attempts: int
    plan: Plan  # written with the request, before it is enqueued
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    steps: list[StepDocument]


def _document(request: RequestRow, steps: list[StepRow]) -> RequestDocument:
    return {
        "request_id": request["id"],
        "app": request["app"],
        "to": request["target"],
        "db": request["db"],
        "dry_run": request["dry_run"],
        "status": request["status"],
        "requested_by": request["requested_by"],
        "job_id": request["job_id"],
        "attempts": request["attempts"],
        "plan": request["plan"],
        "result": request["result"],
        "error": request["error"],
        "created_at": request["created_at"],
        "started_at": request["started_at"],
        "finished_at": request["finished_at"],
        "steps": [{"step": s["step"], "status": s["status"], "detail": s["detail"], "at": s["at"]} for s in steps],
    }


def _workers_listening(settings: Settings, rollback_queue: str) -> bool:
    try:
        connection = redis_conn.from_settings(settings)
        return Worker.count(connection=connection, queue=queue(rollback_queue, connection)) > 0
    except (redis.RedisError, BackoutError):
        return False


def _who_asks() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
