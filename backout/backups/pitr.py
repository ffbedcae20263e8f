"""The `pitr` backup strategy: a point in time and the WAL position, nothing copied.

Heroku Postgres keeps continuous WAL archives, so a rollback restores the database as it was at
this instant (a rollback add-on created `--to` the recorded time). Taking it is one query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from backout.backups.heroku import database_addon
from backout.errors import BackoutError, BadInput, ConfigError, first_line
from backout.redact import mask_url

if TYPE_CHECKING:
    from backout.backups import Backup, BackupContext


# Heroku Postgres plans whose databases can be rolled back to a point in time (not Essential).
PITR_TIERS = ("standard", "premium", "private", "shield")


def plan_tier(plan: str) -> str:
    """"heroku-postgresql:standard-0" -> "standard"."""
    return plan.partition(":")[2].split("-")[0]


def take(ctx: "BackupContext") -> "Backup":
    """{"time": UTC ISO 8601, "lsn": the server's current WAL position, "addon_id"}.

    The database's plan is checked first: a mark on a plan Heroku cannot roll back (Essential)
    would only be found useless at rollback time, so the release fails now, naming the fix."""
    if ctx.heroku is None:
        raise ConfigError("HEROKU_API_KEY", "is not set, and BACKOUT_BACKUP=pitr needs the Platform API",
                          "a Platform API token (heroku authorizations:create)")
    addon_id = ctx.addon_id or database_addon(ctx.heroku, ctx.app)["addon_id"]
    addon = ctx.heroku.addon_info(ctx.app, addon_id)
    plan = (addon.get("plan") or {}).get("name") or ""
    if plan_tier(plan) not in PITR_TIERS:
        raise BadInput(f"BACKOUT_BACKUP=pitr needs a database Heroku can roll back to a point in time, but {addon.get('name')} "
                       f"is on {plan} (standard, premium, private and shield plans can); use BACKOUT_BACKUP=heroku, or "
                       "pg_dump with BACKOUT_STORAGE_URL, or upgrade the database's plan")
    if ctx.conn is not None:
        mark = _mark(ctx.conn)
    else:
        try:
            with psycopg.connect(ctx.database_url, autocommit=True, connect_timeout=10) as conn:
                mark = _mark(conn)
        except psycopg.OperationalError as exc:
            raise BackoutError(f"cannot connect to the database {mask_url(ctx.database_url)}: "
                               f"{first_line(exc)}") from None
    ctx.progress(f"backup: point in time {mark['time']} at WAL {mark['lsn']}")
    return {**mark, "addon_id": addon_id, "plan": plan}


def _mark(conn: psycopg.Connection[Any]) -> "Backup":
    # The server's clock, not ours: the rollback is to a time on the server's WAL timeline.
    row = conn.cursor(row_factory=tuple_row).execute(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " pg_current_wal_lsn()::text"
    ).fetchone()
    assert row is not None, "a SELECT without FROM answers one row"
    when, lsn = row
    return {"time": when, "lsn": lsn}
