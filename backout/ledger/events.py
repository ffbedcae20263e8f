"""Health events: every verdict of the monitor and of `backout health`."""

from __future__ import annotations

import psycopg

from backout.ledger.rows import jsonb, plain
from backout.ledger.schema import SCHEMA, new_id
from backout.redact import scrub


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
        (new_id("he"), app, release_version, kind, verdict, scrub(reason), jsonb(detail)),
    ).fetchone()
    return plain(row)


def health_events(conn: psycopg.Connection, app: str, limit: int = 50) -> list[dict]:
    """An app's health events, newest first."""
    rows = conn.execute(
        f"SELECT * FROM {SCHEMA}.health_events WHERE app = %s ORDER BY at DESC, id DESC LIMIT %s",
        (app, limit),
    ).fetchall()
    return [plain(r) for r in rows]
