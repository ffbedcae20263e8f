"""Rollback requests and their steps."""

from __future__ import annotations

from typing import Any, Mapping, Sequence, cast

from backout.errors import BackoutError
from backout.ledger.records import LedgerConnection, RequestRow, RequestStatus, StepName, StepRow, StepStatus
from backout.ledger.rows import check_choice, jsonb, plain, update_row
from backout.ledger.schema import REQUEST_FIELDS, SCHEMA, new_id


def create_request(
    conn: LedgerConnection,
    *,
    app: str,
    target: str,
    db: str,
    dry_run: bool,
    requested_by: str,
    kind: str = "heroku",
    plan: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> RequestRow:
    """A rollback request with status 'queued', written before it is enqueued."""
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.requests (id, app, kind, target, db, dry_run, requested_by, plan, params)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (new_id("rb"), app, kind, target, db, dry_run, requested_by, jsonb(plan, verbatim=True),
         jsonb(params, verbatim=True)),
    ).fetchone()
    return cast(RequestRow, plain(row))


def get_request(conn: LedgerConnection, request_id: str) -> RequestRow | None:
    row = conn.execute(f"SELECT * FROM {SCHEMA}.requests WHERE id = %s", (request_id,)).fetchone()
    return cast(RequestRow, plain(row)) if row else None


def require_request(conn: LedgerConnection, request_id: str) -> RequestRow:
    """The request's row; BackoutError when the ledger has none by that id."""
    request = get_request(conn, request_id)
    if request is None:
        raise BackoutError(f"rollback request {request_id} is not in the ledger")
    return request


def update_request(conn: LedgerConnection, request_id: str, **fields: Any) -> RequestRow:
    """Set the given fields (see REQUEST_FIELDS) and return the whole row; updated_at is kept current."""
    if "status" in fields:
        check_choice("request status", fields["status"], RequestStatus)
    row = update_row(conn, "requests", REQUEST_FIELDS, request_id, fields, touch="updated_at")
    if row is None:
        raise BackoutError(f"rollback request {request_id} is not in the ledger")
    return cast(RequestRow, row)


def list_requests(
    conn: LedgerConnection,
    app: str | None = None,
    statuses: Sequence[str] | None = None,
    limit: int = 50,
) -> list[RequestRow]:
    """Rollback requests, newest first, optionally of one app and in some statuses."""
    rows = conn.execute(
        f"""SELECT * FROM {SCHEMA}.requests
            WHERE (%s::text IS NULL OR app = %s::text) AND (%s::text[] IS NULL OR status = ANY(%s::text[]))
            ORDER BY created_at DESC, id DESC LIMIT %s""",
        (app, app, None if statuses is None else list(statuses),
         None if statuses is None else list(statuses), limit),
    ).fetchall()
    return [cast(RequestRow, plain(r)) for r in rows]


def record_step(
    conn: LedgerConnection, request_id: str, step: str, status: str, detail: dict[str, Any] | None = None
) -> StepRow:
    """One line of a job's story ('plan', 'restore', 'verify' ... and 'started', 'done' ...)."""
    check_choice("step status", status, StepStatus)
    row = conn.execute(
        f"INSERT INTO {SCHEMA}.steps (request_id, step, status, detail) VALUES (%s, %s, %s, %s) RETURNING *",
        (request_id, step, status, jsonb(detail)),
    ).fetchone()
    return cast(StepRow, plain(row))


def steps(conn: LedgerConnection, request_id: str) -> list[StepRow]:
    """A request's steps, oldest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.steps WHERE request_id = %s ORDER BY id", (request_id,)
    ).fetchall()
    return [cast(StepRow, plain(r)) for r in rows]


def moved_away(conn: LedgerConnection, request_id: str) -> bool:
    """Whether this ledger is the copy a promotion left behind: the request goes on in the new one."""
    row = conn.execute(f"SELECT 1 FROM {SCHEMA}.steps WHERE request_id = %s AND step = %s LIMIT 1",
                       (request_id, StepName.LEDGER_MOVED)).fetchone()
    return row is not None
