"""The ledger: backout's record of checkpoints, rollback requests, job steps and health events.

It lives in the PostgreSQL schema `backout` of `settings.ledger_url` and is the truth; Redis only
carries jobs. The ledger creates and upgrades its own tables, under an advisory lock so that two
processes starting at once (a release dyno and a worker) do not race. Rows come back as dicts of
JSON-friendly values: timestamps are ISO 8601 strings in UTC, LSNs are text, jsonb is plain Python.
The schema is left out of every backup and restore, so restoring the app's database never rewinds it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .errors import BackoutError
from .redact import mask_url

SCHEMA = "backout"

CHECKPOINT_KINDS = ("deploy", "safety")
CHECKPOINT_STATUSES = ("running", "complete", "failed")
REQUEST_STATUSES = ("queued", "running", "succeeded", "failed", "refused")
STEP_STATUSES = ("started", "done", "failed", "skipped")

# Advisory-lock keys. The schema key is a fixed 64-bit number; app keys are derived from the name.
_SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"backout ledger schema").digest()[:8], "big", signed=True)

# Each entry upgrades the schema by one version; entries are only ever appended.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE backout.checkpoints (
        id text PRIMARY KEY,
        app text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('deploy', 'safety')),
        status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'complete', 'failed')),
        release_version integer,
        release_id text,
        slug_id text,
        slug_commit text,
        previous_release_version integer,
        backup_strategy text NOT NULL,
        migration_tool text NOT NULL,
        request_id text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        completed_at timestamptz,
        wal_lsn pg_lsn,
        config_fingerprint text,
        backup jsonb,
        database jsonb,
        migrations_before jsonb,
        migrations_after jsonb,
        down_scripts jsonb,
        irreversible jsonb,
        reversible boolean GENERATED ALWAYS AS (coalesce(jsonb_array_length(irreversible), 0) = 0) STORED,
        error text,
        verified_healthy_at timestamptz
    );
    CREATE INDEX checkpoints_app_created ON backout.checkpoints (app, created_at DESC);
    CREATE INDEX checkpoints_app_release ON backout.checkpoints (app, release_version);

    CREATE TABLE backout.requests (
        id text PRIMARY KEY,
        app text NOT NULL,
        kind text NOT NULL DEFAULT 'heroku',
        target text NOT NULL,
        db text NOT NULL,
        dry_run boolean NOT NULL DEFAULT false,
        requested_by text NOT NULL,
        status text NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'refused')),
        plan jsonb,
        params jsonb,
        result jsonb,
        error text,
        job_id text,
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX requests_app_created ON backout.requests (app, created_at DESC);
    CREATE INDEX requests_status ON backout.requests (status);

    CREATE TABLE backout.steps (
        id bigserial PRIMARY KEY,
        request_id text NOT NULL REFERENCES backout.requests (id) ON DELETE CASCADE,
        step text NOT NULL,
        status text NOT NULL CHECK (status IN ('started', 'done', 'failed', 'skipped')),
        detail jsonb,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX steps_request ON backout.steps (request_id, id);

    CREATE TABLE backout.health_events (
        id text PRIMARY KEY,
        app text NOT NULL,
        release_version integer,
        kind text NOT NULL,
        verdict text,
        reason text,
        detail jsonb,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX health_events_app_at ON backout.health_events (app, at DESC);
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

_CHECKPOINT_FIELDS = {
    "status": "text", "wal_lsn": "pg_lsn", "config_fingerprint": "text", "backup": "jsonb",
    "database": "jsonb", "migrations_before": "jsonb", "migrations_after": "jsonb",
    "down_scripts": "jsonb", "irreversible": "jsonb", "completed_at": "timestamptz", "error": "text",
    "verified_healthy_at": "timestamptz", "release_id": "text", "slug_id": "text", "slug_commit": "text",
    "previous_release_version": "integer", "request_id": "text",
}
_REQUEST_FIELDS = {
    "status": "text", "plan": "jsonb", "params": "jsonb", "result": "jsonb", "error": "text",
    "started_at": "timestamptz", "finished_at": "timestamptz", "job_id": "text", "attempts": "integer",
}


# ---------------------------------------------------------------------------------------------
# ids


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id = (0, 0)


def new_id(prefix: str) -> str:
    """`prefix_` and a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32.

    Ids sort by creation time; within one millisecond in one process the random part counts up,
    so ids made in sequence still sort in order.
    """
    global _last_id
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            ms, rand = last_ms, (last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id = (ms, rand)
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


# ---------------------------------------------------------------------------------------------
# connections and the schema


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection with dict rows, the session in UTC, the ledger schema current."""
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackoutError(f"cannot connect to the ledger database {mask_url(url)}: {_first_line(exc)}") from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create or upgrade the ledger's tables. Cheap when they are current (one query, no lock)."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # A transaction-scoped advisory lock: released by COMMIT/ROLLBACK even if this process dies.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL)"
        )
        row = conn.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
        current = row["version"] if row else 0
        if current > SCHEMA_VERSION:
            raise BackoutError(
                f"the ledger schema is version {current}, newer than this backout understands "
                f"({SCHEMA_VERSION}); upgrade backout"
            )
        for script in _MIGRATIONS[current:]:
            conn.execute(script)
        if row:
            conn.execute(f"UPDATE {SCHEMA}.schema_version SET version = %s", (SCHEMA_VERSION,))
        else:
            conn.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))


def _schema_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT to_regclass(%s) AS t", (f"{SCHEMA}.schema_version",)).fetchone()
    if row["t"] is None:
        return None
    row = conn.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    if row and row["version"] > SCHEMA_VERSION:
        raise BackoutError(
            f"the ledger schema is version {row['version']}, newer than this backout understands "
            f"({SCHEMA_VERSION}); upgrade backout"
        )
    return row["version"] if row else None


# ---------------------------------------------------------------------------------------------
# checkpoints


def create_checkpoint(
    conn: psycopg.Connection,
    *,
    app: str,
    kind: str,
    release_version: int | None,
    release_id: str | None,
    slug_id: str | None,
    slug_commit: str | None,
    previous_release_version: int | None,
    backup_strategy: str,
    migration_tool: str,
    request_id: str | None = None,
) -> dict:
    """A new checkpoint with status 'running'; the caller fills in the rest with update_checkpoint."""
    _check_choice("checkpoint kind", kind, CHECKPOINT_KINDS)
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.checkpoints (id, app, kind, release_version, release_id, slug_id,
                slug_commit, previous_release_version, backup_strategy, migration_tool, request_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (new_id("cp"), app, kind, release_version, release_id, slug_id, slug_commit,
         previous_release_version, backup_strategy, migration_tool, request_id),
    ).fetchone()
    return _plain(row)


def update_checkpoint(conn: psycopg.Connection, checkpoint_id: str, **fields: Any) -> dict:
    """Set the given fields (see _CHECKPOINT_FIELDS) and return the whole row.

    Timestamps take a datetime, an ISO 8601 string, or "now".
    """
    if "status" in fields:
        _check_choice("checkpoint status", fields["status"], CHECKPOINT_STATUSES)
    row = _update(conn, "checkpoints", _CHECKPOINT_FIELDS, checkpoint_id, fields)
    if row is None:
        raise BackoutError(f"checkpoint {checkpoint_id} is not in the ledger")
    return row


def get_checkpoint(conn: psycopg.Connection, checkpoint_id: str) -> dict | None:
    row = conn.execute(f"SELECT * FROM {SCHEMA}.checkpoints WHERE id = %s", (checkpoint_id,)).fetchone()
    return _plain(row) if row else None


def list_checkpoints(conn: psycopg.Connection, app: str, limit: int | None = None) -> list[dict]:
    """An app's checkpoints, newest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.checkpoints WHERE app = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        (app, limit),
    ).fetchall()
    return [_plain(r) for r in rows]


def checkpoint_for_release(conn: psycopg.Connection, app: str, release_version: int) -> dict | None:
    """The complete 'deploy' checkpoint taken when that release was deployed (the newest, if several)."""
    row = conn.execute(
        f"""SELECT * FROM {SCHEMA}.checkpoints
            WHERE app = %s AND release_version = %s AND kind = 'deploy' AND status = 'complete'
            ORDER BY created_at DESC, id DESC LIMIT 1""",
        (app, release_version),
    ).fetchone()
    return _plain(row) if row else None


def latest_verified_checkpoint(
    conn: psycopg.Connection, app: str, before_version: int | None = None
) -> dict | None:
    """The complete deploy checkpoint of the newest release verified healthy (below `before_version`)."""
    row = conn.execute(
        f"""SELECT * FROM {SCHEMA}.checkpoints
            WHERE app = %s AND kind = 'deploy' AND status = 'complete'
              AND verified_healthy_at IS NOT NULL
              AND (%s::integer IS NULL OR release_version < %s::integer)
            ORDER BY release_version DESC NULLS LAST, created_at DESC, id DESC LIMIT 1""",
        (app, before_version, before_version),
    ).fetchone()
    return _plain(row) if row else None


def mark_release_verified(conn: psycopg.Connection, app: str, release_version: int) -> None:
    """Record that a release passed its health window; the first verification time is kept."""
    conn.execute(
        f"""UPDATE {SCHEMA}.checkpoints SET verified_healthy_at = coalesce(verified_healthy_at, clock_timestamp())
            WHERE app = %s AND release_version = %s AND kind = 'deploy' AND status = 'complete'""",
        (app, release_version),
    )


# ---------------------------------------------------------------------------------------------
# rollback requests and their steps


def create_request(
    conn: psycopg.Connection,
    *,
    app: str,
    target: str,
    db: str,
    dry_run: bool,
    requested_by: str,
    kind: str = "heroku",
    plan: dict | None = None,
    params: dict | None = None,
) -> dict:
    """A rollback request with status 'queued', written before it is enqueued."""
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.requests (id, app, kind, target, db, dry_run, requested_by, plan, params)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (new_id("rb"), app, kind, target, db, dry_run, requested_by, _jsonb(plan), _jsonb(params)),
    ).fetchone()
    return _plain(row)


def get_request(conn: psycopg.Connection, request_id: str) -> dict | None:
    row = conn.execute(f"SELECT * FROM {SCHEMA}.requests WHERE id = %s", (request_id,)).fetchone()
    return _plain(row) if row else None


def require_request(conn: psycopg.Connection, request_id: str) -> dict:
    """The request's row; BackoutError when the ledger has none by that id."""
    request = get_request(conn, request_id)
    if request is None:
        raise BackoutError(f"rollback request {request_id} is not in the ledger")
    return request


def update_request(conn: psycopg.Connection, request_id: str, **fields: Any) -> dict:
    """Set the given fields (see _REQUEST_FIELDS) and return the whole row; updated_at is kept current."""
    if "status" in fields:
        _check_choice("request status", fields["status"], REQUEST_STATUSES)
    row = _update(conn, "requests", _REQUEST_FIELDS, request_id, fields, touch="updated_at")
    if row is None:
        raise BackoutError(f"rollback request {request_id} is not in the ledger")
    return row


def list_requests(
    conn: psycopg.Connection,
    app: str | None = None,
    statuses: Sequence[str] | None = None,
    limit: int = 50,
) -> list[dict]:
    """Rollback requests, newest first, optionally of one app and in some statuses."""
    rows = conn.execute(
        f"""SELECT * FROM {SCHEMA}.requests
            WHERE (%s::text IS NULL OR app = %s::text) AND (%s::text[] IS NULL OR status = ANY(%s::text[]))
            ORDER BY created_at DESC, id DESC LIMIT %s""",
        (app, app, None if statuses is None else list(statuses),
         None if statuses is None else list(statuses), limit),
    ).fetchall()
    return [_plain(r) for r in rows]


def record_step(
    conn: psycopg.Connection, request_id: str, step: str, status: str, detail: dict | None = None
) -> dict:
    """One line of a job's story ('plan', 'restore', 'verify' ... and 'started', 'done' ...)."""
    _check_choice("step status", status, STEP_STATUSES)
    row = conn.execute(
        f"INSERT INTO {SCHEMA}.steps (request_id, step, status, detail) VALUES (%s, %s, %s, %s) RETURNING *",
        (request_id, step, status, _jsonb(detail)),
    ).fetchone()
    return _plain(row)


def steps(conn: psycopg.Connection, request_id: str) -> list[dict]:
    """A request's steps, oldest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.steps WHERE request_id = %s ORDER BY id", (request_id,)
    ).fetchall()
    return [_plain(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# health events


def record_health_event(
    conn: psycopg.Connection,
    *,
    app: str,
    release_version: int | None,
    kind: str,
    verdict: str | None = None,
    reason: str | None = None,
    detail: dict | None = None,
) -> dict:
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.health_events (id, app, release_version, kind, verdict, reason, detail)
            VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (new_id("he"), app, release_version, kind, verdict, reason, _jsonb(detail)),
    ).fetchone()
    return _plain(row)


def health_events(conn: psycopg.Connection, app: str, limit: int = 50) -> list[dict]:
    """An app's health events, newest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.health_events WHERE app = %s ORDER BY at DESC, id DESC LIMIT %s",
        (app, limit),
    ).fetchall()
    return [_plain(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# one rollback per app at a time


def app_lock_key(app: str) -> int:
    """The 64-bit advisory-lock key of an app."""
    return int.from_bytes(hashlib.sha256(f"backout app {app}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def app_lock(url: str, app: str, wait: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold the app's advisory lock on a connection of its own while the block runs.

    Yields True when held. Yields False, without waiting, when `wait` is False and another session
    holds it, or after `timeout` seconds of waiting. The lock is a session lock, so it goes away if
    this process dies and the connection closes.
    """
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackoutError(f"cannot connect to the ledger database {mask_url(url)}: {_first_line(exc)}") from None
    key = app_lock_key(app)
    try:
        if not wait:
            held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        elif timeout is not None:
            conn.execute(f"SET lock_timeout = {max(1, int(timeout * 1000))}")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                held = True
            except psycopg.errors.LockNotAvailable:
                held = False
            conn.execute("SET lock_timeout = 0")
        else:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            held = True
        try:
            yield held
        finally:
            if held and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# helpers


def _update(
    conn: psycopg.Connection, table: str, allowed: dict[str, str], row_id: str, fields: dict[str, Any],
    touch: str | None = None,
) -> dict | None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"cannot update {table} field(s) {', '.join(unknown)}")
    assignments = []
    values: list[Any] = []
    for name, value in fields.items():
        kind = allowed[name]
        if kind == "jsonb":
            value = _jsonb(value)
        elif kind == "timestamptz" and isinstance(value, _dt.datetime) and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
        # Explicit casts let a string such as "now" or an ISO time reach the right type.
        assignments.append(sql.SQL("{} = %s::" + kind).format(sql.Identifier(name)))
        values.append(value)
    if touch:
        assignments.append(sql.SQL("{} = clock_timestamp()").format(sql.Identifier(touch)))
    if not assignments:
        return _plain_or_none(
            conn.execute(sql.SQL("SELECT * FROM {}.{} WHERE id = %s").format(
                sql.Identifier(SCHEMA), sql.Identifier(table)), (row_id,)).fetchone()
        )
    query = sql.SQL("UPDATE {}.{} SET {} WHERE id = %s RETURNING *").format(
        sql.Identifier(SCHEMA), sql.Identifier(table), sql.SQL(", ").join(assignments)
    )
    return _plain_or_none(conn.execute(query, [*values, row_id]).fetchone())


def _plain_or_none(row: dict | None) -> dict | None:
    return _plain(row) if row else None


def _plain(row: dict) -> dict:
    """The row with timestamps as ISO 8601 UTC strings and LSNs as text."""
    out = {}
    for key, value in row.items():
        if isinstance(value, _dt.datetime):
            value = value.astimezone(_dt.timezone.utc).isoformat()
        elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            value = str(value)
        out[key] = value
    return out


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
