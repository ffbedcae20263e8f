"""The ledger's records as types: the rows other modules read, and the states a row can be in.

Rows stay dicts of JSON-friendly values (see `rows.plain`): they go into `--json` output, job
results and the web page as they are, so a row's type is a TypedDict, not a class. The states are
StrEnums: each member is the very string the ledger stores and CHECK constraints name, so a member
compares, formats, serializes and binds as that string.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias, TypedDict

import psycopg
from psycopg.rows import DictRow

# Every ledger connection returns rows as dicts (see schema.connect).
LedgerConnection: TypeAlias = psycopg.Connection[DictRow]
# A jsonb column's document (null when not yet written): its shape is its writer's, e.g. a rollback
# request's `plan` is backout.rollback.plan.Plan, a checkpoint's `backup` what its strategy returned.
Document: TypeAlias = Any


class CheckpointKind(StrEnum):
    DEPLOY = "deploy"  # taken by the release phase, before the release's migrations
    SAFETY = "safety"  # taken by a rollback, of the state it is about to discard


class CheckpointStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABANDONED = "abandoned"  # its process died before it finished (see backups.abandoned)


# A checkpoint in one of these will not change again; its taker's lock is released.
FINISHED_CHECKPOINT = (CheckpointStatus.COMPLETE, CheckpointStatus.FAILED, CheckpointStatus.ABANDONED)


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # its plan refused it, before anything changed


# A request in one of these is over: no job works on it again.
FINAL_STATUSES = (RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.REFUSED)
# A request in one of these is still to be carried out, or being carried out.
ACTIVE_STATUSES = (RequestStatus.QUEUED, RequestStatus.RUNNING)


class StepStatus(StrEnum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


# A step in one of these needs no doing again when its job runs twice.
FINISHED_STEP = (StepStatus.DONE, StepStatus.SKIPPED)


class StepName(StrEnum):
    """The steps of a Heroku rollback request, in the order its job records them (a package
    rollback's steps are backout.package_rollback.runbook.STEPS)."""

    PLAN = "plan"
    LOCK = "lock"
    SAFETY_CHECKPOINT = "safety_checkpoint"
    DB_DOWN = "db_down"
    DB_RESTORE = "db_restore"
    FILES_RESTORE = "files_restore"
    CODE_ROLLBACK = "code_rollback"
    RELEASE_PHASE = "release_phase"
    VERIFY = "verify"
    # Recorded by the worker and the job around a request rather than by its plan.
    INTERRUPTED = "interrupted"
    RECONCILE = "reconcile"
    REQUEUE = "requeue"
    # The request's record in the ledger a promotion left behind (see ledger.follow).
    LEDGER_MOVED = "ledger_moved"


class CheckpointRow(TypedDict):
    """A row of backout.checkpoints; the jsonb columns as their documents."""

    id: str
    app: str
    kind: str
    status: str
    release_version: int | None
    release_id: str | None
    slug_id: str | None
    slug_commit: str | None
    previous_release_version: int | None
    backup_strategy: str
    migration_tool: str
    request_id: str | None
    created_at: str
    completed_at: str | None
    wal_lsn: str | None
    config_fingerprint: str | None
    backup: Document
    database: Document
    migrations_before: Document
    migrations_after: Document
    down_scripts: Document
    irreversible: Document
    reversible: bool
    error: str | None
    verified_healthy_at: str | None
    files: Document
    drilled_at: str | None
    drill: Document
    pruned_at: str | None
    pruned: Document
    verdict: Document


class RequestRow(TypedDict):
    """A row of backout.requests: a rollback request (`kind` heroku) or a package rollback."""

    id: str
    app: str
    kind: str
    target: str
    db: str
    dry_run: bool
    requested_by: str
    status: str
    plan: Document
    params: Document
    result: Document
    error: str | None
    job_id: str | None
    attempts: int
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


class StepRow(TypedDict):
    """A row of backout.steps: one line of a request's story."""

    id: int
    request_id: str
    step: str
    status: str
    detail: Document
    at: str


class HealthEventRow(TypedDict):
    """A row of backout.health_events: a verdict of the monitor or of `backout health`."""

    id: str
    app: str
    release_version: int | None
    kind: str
    verdict: str | None
    reason: str | None
    detail: Document
    at: str


class ProbeSampleRow(TypedDict):
    """A probe sample as the web page's chart reads it (backout.ledger.probes)."""

    app: str
    release_version: int | None
    url: str
    at: str
    outcome: str
    status: int | None
    elapsed: float | None
    counted: bool
