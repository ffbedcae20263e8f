"""The ledger: backout's record of checkpoints, rollback requests, job steps and health events.

It lives in the PostgreSQL schema `backout` of `settings.ledger_url` and is the truth; Redis only
carries jobs. The ledger creates and upgrades its own tables, under an advisory lock so that two
processes starting at once (a release dyno and a worker) do not race. Rows come back as dicts of
JSON-friendly values: timestamps are ISO 8601 strings in UTC, LSNs are text, jsonb is plain Python.
The schema is left out of every backup and restore, so restoring the app's database never rewinds it.

Split by concept: `schema` (tables, upgrades, connections, ids), `records` (the rows' types and
the states a row can be in), `checkpoints`, `requests` (and their steps), `events` (health
events), `locks` (one rollback per app), `rows` (row conversion).
Callers use this package's names: `ledger.connect(url)`, `ledger.create_checkpoint(conn, ...)`.
"""

from backout.ledger.checkpoints import (
    checkpoint_for_release,
    create_checkpoint,
    get_checkpoint,
    latest_verified_checkpoint,
    list_checkpoints,
    mark_release_verified,
    running_checkpoints,
    update_checkpoint,
)
from backout.ledger.events import (
    health_events,
    record_health_event,
)
from backout.ledger.follow import FollowingConnection
from backout.ledger.locks import (
    app_lock,
    carry_app_lock,
    app_lock_key,
    checkpoint_lock_key,
    release_lock,
    taker_alive,
)
from backout.ledger.probes import (
    probe_samples,
    prune_probe_samples,
    record_probe_samples,
)
from backout.ledger.records import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    FINISHED_CHECKPOINT,
    FINISHED_STEP,
    CheckpointKind,
    CheckpointRow,
    CheckpointStatus,
    HealthEventRow,
    LedgerConnection,
    ProbeSampleRow,
    RequestRow,
    RequestStatus,
    StepName,
    StepRow,
    StepStatus,
)
from backout.ledger.requests import (
    create_request,
    moved_away,
    get_request,
    list_requests,
    record_step,
    require_request,
    steps,
    update_request,
)
from backout.ledger.schema import (
    CHECKPOINT_FIELDS,
    REQUEST_FIELDS,
    SCHEMA,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    connect,
    ensure_schema,
    ledger_id,
    new_id,
)

__all__ = [
    "LedgerConnection",
    "CheckpointRow",
    "RequestRow",
    "StepRow",
    "HealthEventRow",
    "ProbeSampleRow",
    "CheckpointKind",
    "CheckpointStatus",
    "RequestStatus",
    "StepStatus",
    "StepName",
    "FINAL_STATUSES",
    "ACTIVE_STATUSES",
    "FINISHED_STEP",
    "create_checkpoint",
    "update_checkpoint",
    "get_checkpoint",
    "list_checkpoints",
    "checkpoint_for_release",
    "latest_verified_checkpoint",
    "mark_release_verified",
    "record_health_event",
    "health_events",
    "record_probe_samples",
    "probe_samples",
    "prune_probe_samples",
    "app_lock_key",
    "checkpoint_lock_key",
    "app_lock",
    "carry_app_lock",
    "moved_away",
    "FollowingConnection",
    "ledger_id",
    "release_lock",
    "taker_alive",
    "running_checkpoints",
    "FINISHED_CHECKPOINT",
    "create_request",
    "get_request",
    "require_request",
    "update_request",
    "list_requests",
    "record_step",
    "steps",
    "SCHEMA",
    "SCHEMA_LOCK",
    "SCHEMA_VERSION",
    "CHECKPOINT_FIELDS",
    "REQUEST_FIELDS",
    "new_id",
    "connect",
    "ensure_schema",
]
