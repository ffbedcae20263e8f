"""Health events: every verdict of the monitor and of `backout health`."""

from __future__ import annotations

from typing import Any, cast

from backout.ledger.records import HealthEventRow, LedgerConnection
from backout.ledger.rows import jsonb, plain
from backout.ledger.schema import SCHEMA, new_id
from backout.redact import scrub


def record_health_event(
    conn: LedgerConnection,
    *,
    app: str,
    release_version: int | None,
    kind: str,
    verdict: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> HealthEventRow:
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.health_events (id, app, release_version, kind, verdict, reason, detail)
            VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (new_id("he"), app, release_version, kind, verdict, scrub(reason), jsonb(detail)),
    ).fetchone()
    return cast(HealthEventRow, plain(row))


def health_events(conn: LedgerConnection, app: str, limit: int = 50) -> list[HealthEventRow]:
    """An app's health events, newest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.health_events WHERE app = %s ORDER BY at DESC, id DESC LIMIT %s",
        (app, limit),
    ).fetchall()
    return [cast(HealthEventRow, plain(r)) for r in rows]
