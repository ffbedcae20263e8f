"""Checkpoint rows: created by the release hook and safety points, read by plans."""

from __future__ import annotations

from typing import Any, cast

from backout.errors import BackoutError
from backout.ledger.locks import checkpoint_lock_key
from backout.ledger.records import (
    FINISHED_CHECKPOINT,
    CheckpointKind,
    CheckpointRow,
    CheckpointStatus,
    LedgerConnection,
)
from backout.ledger.rows import check_choice, plain, update_row
from backout.ledger.schema import CHECKPOINT_FIELDS, SCHEMA, new_id


def create_checkpoint(
    conn: LedgerConnection,
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
) -> CheckpointRow:
    """A new checkpoint with status 'running'; the caller fills in the rest with update_checkpoint.

    This connection holds the checkpoint's lock until update_checkpoint gives it a final status
    (or the process dies): a 'running' checkpoint whose lock is free was abandoned.
    """
    check_choice("checkpoint kind", kind, CheckpointKind)
    checkpoint_id = new_id("cp")
    # Locked before the row exists, so nobody ever sees it 'running' and unlocked while alive.
    conn.execute("SELECT pg_advisory_lock(%s)", (checkpoint_lock_key(checkpoint_id),))
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.checkpoints (id, app, kind, release_version, release_id, slug_id,
                slug_commit, previous_release_version, backup_strategy, migration_tool, request_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (checkpoint_id, app, kind, release_version, release_id, slug_id, slug_commit,
         previous_release_version, backup_strategy, migration_tool, request_id),
    ).fetchone()
    return cast(CheckpointRow, plain(row))


def update_checkpoint(conn: LedgerConnection, checkpoint_id: str, **fields: Any) -> CheckpointRow:
    """Set the given fields (see CHECKPOINT_FIELDS) and return the whole row.

    Timestamps take a datetime, an ISO 8601 string, or "now".
    """
    if "status" in fields:
        check_choice("checkpoint status", fields["status"], CheckpointStatus)
    row = update_row(conn, "checkpoints", CHECKPOINT_FIELDS, checkpoint_id, fields)
    if row is None:
        raise BackoutError(f"checkpoint {checkpoint_id} is not in the ledger")
    if fields.get("status") in FINISHED_CHECKPOINT:
        # Released by the connection that took it; on another one this unlocks nothing (a notice).
        conn.execute("SELECT pg_advisory_unlock(%s)", (checkpoint_lock_key(checkpoint_id),))
    return cast(CheckpointRow, row)


def running_checkpoints(conn: LedgerConnection) -> list[CheckpointRow]:
    """Every checkpoint of every app still 'running', oldest first."""
    rows = conn.execute(f"SELECT * FROM {SCHEMA}.checkpoints WHERE status = 'running' ORDER BY created_at").fetchall()
    return [cast(CheckpointRow, plain(r)) for r in rows]


def get_checkpoint(conn: LedgerConnection, checkpoint_id: str) -> CheckpointRow | None:
    row = conn.execute(f"SELECT * FROM {SCHEMA}.checkpoints WHERE id = %s", (checkpoint_id,)).fetchone()
    return cast(CheckpointRow, plain(row)) if row else None


def list_checkpoints(conn: LedgerConnection, app: str, limit: int | None = None) -> list[CheckpointRow]:
    """An app's checkpoints, newest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.checkpoints WHERE app = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        (app, limit),
    ).fetchall()
    return [cast(CheckpointRow, plain(r)) for r in rows]


def checkpoint_for_release(conn: LedgerConnection, app: str, release_version: int) -> CheckpointRow | None:
    """The complete 'deploy' checkpoint taken when that release was deployed (the newest, if several)."""
    row = conn.execute(
        f"""SELECT * FROM {SCHEMA}.checkpoints
            WHERE app = %s AND release_version = %s AND kind = 'deploy' AND status = 'complete'
            ORDER BY created_at DESC, id DESC LIMIT 1""",
        (app, release_version),
    ).fetchone()
    return cast(CheckpointRow, plain(row)) if row else None


def latest_verified_checkpoint(
    conn: LedgerConnection, app: str, before_version: int | None = None
) -> CheckpointRow | None:
    """The complete deploy checkpoint of the newest release verified healthy (below `before_version`)."""
    row = conn.execute(
        f"""SELECT * FROM {SCHEMA}.checkpoints
            WHERE app = %s AND kind = 'deploy' AND status = 'complete'
              AND verified_healthy_at IS NOT NULL
              AND (%s::integer IS NULL OR release_version < %s::integer)
            ORDER BY release_version DESC NULLS LAST, created_at DESC, id DESC LIMIT 1""",
        (app, before_version, before_version),
    ).fetchone()
    return cast(CheckpointRow, plain(row)) if row else None


def mark_release_verified(conn: LedgerConnection, app: str, release_version: int) -> None:
    """Record that a release passed its health window; the first verification time is kept."""
    conn.execute(
        f"""UPDATE {SCHEMA}.checkpoints SET verified_healthy_at = coalesce(verified_healthy_at, clock_timestamp())
            WHERE app = %s AND release_version = %s AND kind = 'deploy' AND status = 'complete'""",
        (app, release_version),
    )
