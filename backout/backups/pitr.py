"""The `pitr` backup strategy: a point in time and the WAL position, nothing copied.

Heroku Postgres keeps continuous WAL archives, so a rollback restores the database as it was at
this instant (a rollback add-on created `--to` the recorded time). Taking it is one query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import tuple_row

from backout.errors import BackoutError
from backout.redact import mask_url

if TYPE_CHECKING:
    from backout.backups import BackupContext


def take(ctx: "BackupContext") -> dict:
    """{"time": UTC ISO 8601, "lsn": the server's current WAL position, "addon_id"}."""
    if ctx.conn is not None:
        mark = _mark(ctx.conn)
    else:
        try:
            with psycopg.connect(ctx.database_url, autocommit=True, connect_timeout=10) as conn:
                mark = _mark(conn)
        except psycopg.OperationalError as exc:
            raise BackoutError(f"cannot connect to the database {mask_url(ctx.database_url)}: "
                               f"{str(exc).strip().splitlines()[0]}") from None
    ctx.progress(f"backup: point in time {mark['time']} at WAL {mark['lsn']}")
    return {**mark, "addon_id": ctx.addon_id}


def _mark(conn: psycopg.Connection) -> dict:
    # The server's clock, not ours: the rollback is to a time on the server's WAL timeline.
    when, lsn = conn.cursor(row_factory=tuple_row).execute(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " pg_current_wal_lsn()::text"
    ).fetchone()
    return {"time": when, "lsn": lsn}
