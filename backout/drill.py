"""Restore drills: proof that a checkpoint can be restored, before an incident needs it.

`drill(settings, conn, app)` restores the newest complete `pg_dump` checkpoint (or the one named)
into a scratch database made for it on the app database's server (or BACKOUT_DRILL_DATABASE_URL's),
streaming the archive from wherever it is kept, as a rollback would; checks every table's row count
against the archive's own count; drops the scratch database; and records on the checkpoint that it
was drilled, how long it took and what it found (`backout checkpoints` shows it). A failed drill is
recorded too, and raises. `backout drill --app A` runs one; the worker runs them on a schedule when
BACKOUT_DRILL_EVERY is set (`schedule`).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timezone
from typing import Any, Callable, cast

import psycopg
from psycopg import sql

from backout import ledger
from backout.errors import BackoutError, BadInput
from backout.ledger.records import CheckpointRow, CheckpointStatus, LedgerConnection
from backout.ledger.schema import SCHEMA, new_id
from backout.output import human_bytes
from backout.redact import redact
from backout.rollback.database import pgtools, restore, swap
from backout.settings import Settings

Progress = Callable[[str], None]

DRILL_JOB = "backout.jobs.drill.run_drill"


def drillable(conn: LedgerConnection, app: str) -> CheckpointRow | None:
    """The newest complete checkpoint of `app` with a pg_dump archive that was not pruned."""
    return next((cp for cp in ledger.list_checkpoints(conn, app)
                 if cp["status"] == CheckpointStatus.COMPLETE and cp["backup_strategy"] == "pg_dump" and not cp.get("pruned_at")
                 and cp.get("backup")), None)


def drill(settings: Settings, conn: LedgerConnection, app: str, progress: Progress,
          checkpoint_id: str | None = None) -> dict[str, Any]:
    """Drill one checkpoint; returns (and records) {"ok", "seconds", "tables", "rows", ...}."""
    settings.require("DATABASE_URL")
    cp = ledger.get_checkpoint(conn, checkpoint_id) if checkpoint_id else drillable(conn, app)
    if cp is None or cp["app"] != app:
        raise BadInput(f"{app} has no complete pg_dump checkpoint to drill" if checkpoint_id is None
                       else f"checkpoint {checkpoint_id} is not a checkpoint of {app}")
    if cp["backup_strategy"] != "pg_dump":
        raise BadInput(f"checkpoint {cp['id']} was taken with BACKOUT_BACKUP={cp['backup_strategy']}: only pg_dump "
                       "archives are drilled (Heroku restores its own backups)")
    started = time.monotonic()
    try:
        result = _restore_and_count(settings, cp, progress)
    except BackoutError as exc:
        failed = {"ok": False, "error": redact(str(exc), settings.secrets()), "seconds": round(time.monotonic() - started, 3)}
        ledger.update_checkpoint(conn, cp["id"], drilled_at="now", drill=failed)
        raise BackoutError(f"drill of {cp['id']} failed: {exc}") from None
    result.update(ok=True, seconds=round(time.monotonic() - started, 3))
    ledger.update_checkpoint(conn, cp["id"], drilled_at="now", drill=result)
    progress(f"drill: {cp['id']} restored and checked in {result['seconds']:.1f}s: {result['tables']} tables, "
             f"{result['rows']} rows, as the archive says")
    return {"checkpoint_id": cp["id"], **result}


def _restore_and_count(settings: Settings, cp: CheckpointRow, progress: Progress) -> dict[str, Any]:
    source = restore.archive_of(cp, settings)
    server = settings.drill_database_url or settings.database_url or ""
    admin_url = swap.maintenance_url(server)
    name = f"backout_drill_{new_id('d').lower()[2:]}"
    scratch = pgtools.with_database(server, name)
    with pgtools.connect(admin_url, "the drill's database server") as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise BackoutError("the role may not create databases on the drill's server; set BACKOUT_DRILL_DATABASE_URL "
                               "to a server where it may (a spare database add-on, or a local PostgreSQL)") from None
        try:
            progress(f"drill: restoring {cp['id']} ({source.name}, {human_bytes(cp['backup'].get('size') or 0)}) "
                     f"into the scratch database {name}")
            conninfo, env = pgtools.child_env(scratch)
            # Roles and grants of the app's server may not exist where the drill runs: objects become the drill's.
            proc = subprocess.Popen([pgtools.program("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
                                     f"--dbname={conninfo}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env)
            archive = swap.feed(proc, env, source, cp["backup"], progress)
            counts = swap.verify_counts(scratch, archive, {})
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return {"tables": len(counts), "rows": sum(counts.values()), "archive": source.name,
            "archive_bytes": cp["backup"].get("dump_size")}


def schedule(settings: Settings, connection: Any) -> list[str]:
    """Enqueue a drill for every app whose newest drillable checkpoint was not drilled within
    BACKOUT_DRILL_EVERY; the job ids enqueued (one per checkpoint: a drill is queued once)."""
    every = settings.storage.drill_every
    if every is None or not settings.ledger_url:
        return []
    from backout.worker.queues import enqueue_once, ledger_queues

    queued = []
    with ledger.connect(settings.ledger_url) as conn:
        routine = ledger_queues(conn)[1]  # this ledger's own queue: apps may share a Redis
        rows = conn.execute(f"SELECT DISTINCT app FROM {SCHEMA}.checkpoints").fetchall()
        apps = [cast(dict, row)["app"] for row in rows]  # the ledger's connections give dict rows
        for app in apps:
            cp = drillable(conn, app)
            if cp is None:
                continue
            last = cp.get("drilled_at")
            if last and (datetime.now(timezone.utc) - datetime.fromisoformat(last)).total_seconds() < every:
                continue
            slot = int(time.time() // every)
            job_id = f"drill-{app}-{cp['id']}-{slot}"
            if enqueue_once(connection, routine, DRILL_JOB, [app], job_id, secrets=settings.secrets()):
                queued.append(job_id)
    return queued
