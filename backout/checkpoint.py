"""Taking a checkpoint: what a later rollback needs to put the app back as it is now.

A checkpoint records the release (and the one it replaces), the WAL position, a fingerprint of the
config vars (a hash, never the values), the migration state read from the tool's own table, the
down scripts of the migrations the new code is about to apply (saved, because that code may be
gone when they are needed), and a backup made by the BACKOUT_BACKUP strategy. It is written to the
ledger as 'running' first and ends 'complete' or 'failed', never half-written and 'complete'.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import psycopg
from psycopg.rows import tuple_row

from backout import backups, ledger
from backout.backups.heroku import database_addon
from backout.backups.libpq import database_name
from backout.errors import BackoutError
from backout.ledger.records import CheckpointKind, CheckpointRow, CheckpointStatus, LedgerConnection
from backout.redact import mask_url, redact
from backout.release_version import rollback_target, slug_id
from backout.rollback.database import pgtools
from backout.settings import Settings

if TYPE_CHECKING:
    from backout.backups.pg_dump import Dump
    from backout.heroku import ApiObject

Progress = Callable[[str], None]

@dataclass(frozen=True)
class Release:
    """A release as the checkpoint records it."""

    version: int | None
    id: str | None = None
    slug_id: str | None = None
    commit: str | None = None
    description: str | None = None
    previous_version: int | None = None
    # The version this release rolls back to, when Heroku made it by a rollback.
    rollback_of: int | None = None

    @property
    def is_rollback(self) -> bool:
        return self.rollback_of is not None


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 over the sorted names and values: equal config gives an equal fingerprint, and the
    values cannot be read back from it."""
    canonical = json.dumps(sorted((str(k), "" if v is None else str(v)) for k, v in config.items()),
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def database_connection(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the app's database, or one clear line saying why not."""
    return pgtools.connect(url, variable="DATABASE_URL")


def lookup(settings: Settings, heroku: Any, app: str, version: int | None, *, release: bool,
           config: bool, addon: bool) -> dict[str, Any]:
    """The Platform API facts a checkpoint wants, fetched at once (they are independent calls, and
    each is a round trip that adds to the release phase): the release being deployed and the one it
    replaces, the config vars, and the DATABASE add-on."""
    calls: dict[str, Callable[[], Any]] = {}
    if release and version is not None:
        calls["release"] = lambda: heroku.release_info(app, version)
        calls["current"] = lambda: heroku.current_release(app)
    if config:
        calls["config"] = lambda: heroku.config_vars(app)
    if addon:
        calls["addon"] = lambda: database_addon(heroku, app)
    if not calls:
        return {}
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def release_from_api(settings: Settings, facts: Mapping[str, Any], heroku: Any = None) -> Release:
    """The Release of HEROKU_RELEASE_VERSION, with what the Platform API says about it when known."""
    version = settings.release_version
    info = facts.get("release") or {}
    current = facts.get("current") or {}
    previous = current.get("version")
    if previous is not None and version is not None and previous >= version and heroku is not None:
        # The release being deployed is already current only when its release phase runs again.
        older = [r for r in heroku.list_releases(settings.app_name or "")
                 if r.get("version", 0) < version and r.get("status") in (None, "succeeded")]
        previous = older[0]["version"] if older else None
    return release_from_info(info, version=version, commit=settings.slug_commit, previous_version=previous)


def release_from_info(info: ApiObject, *, version: int | None = None, commit: str | None = None,
                      previous_version: int | None = None) -> Release:
    """A Release from a Platform API release object (a safety checkpoint uses the current release)."""
    return Release(
        version=version if version is not None else info.get("version"),
        id=info.get("id"),
        slug_id=slug_id(info),
        commit=commit,
        description=info.get("description"),
        previous_version=previous_version,
        rollback_of=rollback_target(info.get("description")),
    )


def take(
    settings: Settings,
    ledger_conn: LedgerConnection,
    release: Release,
    *,
    kind: str = CheckpointKind.DEPLOY,
    heroku: Any = None,
    adapter: Any = None,
    facts: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    request_id: str | None = None,
    complete: bool = True,
    app_conn: psycopg.Connection[Any] | None = None,
    app: str | None = None,
    dump: "Dump | None" = None,
) -> CheckpointRow:
    """Take a checkpoint of settings.database_url for `app` (default HEROKU_APP_NAME) and return
    its ledger row.

    With `complete=False` it stays 'running' for the caller to finish (the release hook completes
    it after the migrate command). On failure it is marked 'failed' with the reason and the
    BackoutError is raised. `facts` are Platform API answers already fetched by `lookup`; `dump` is
    a pg_dump already under way for it (`pg_dump.start_early`).
    """
    settings.require("DATABASE_URL")
    if app is None:
        settings.require("HEROKU_APP_NAME")
        app = settings.app_name
    say = progress or (lambda message: None)
    database_url = settings.database_url
    assert app is not None and database_url is not None
    if adapter is None:
        from backout.migrations import get_adapter

        adapter = get_adapter(settings.migrations, settings.migrations_path)
    backups.strategy(settings.backup)  # an unknown strategy fails before anything is written
    if kind == CheckpointKind.DEPLOY:
        # Bad input (BACKOUT_MIGRATIONS_PATH pointing nowhere) is refused before the ledger row.
        adapter.available()
    backups.check_restorable(settings)  # so does one whose checkpoint could never be restored

    own_conn = app_conn is None
    conn = database_connection(database_url) if app_conn is None else app_conn
    try:
        if facts is None:
            facts = lookup(settings, heroku, app, release.version, release=False, config=True,
                           addon=settings.backup in ("heroku", "pitr")) if heroku is not None else {}
        cp = ledger.create_checkpoint(
            ledger_conn, app=app, kind=kind, release_version=release.version, release_id=release.id,
            slug_id=release.slug_id, slug_commit=release.commit,
            previous_release_version=release.previous_version, backup_strategy=settings.backup,
            migration_tool=settings.migrations, request_id=request_id,
        )
        say(f"checkpoint {cp['id']}: {kind} of {app} v{release.version}, backup {settings.backup}, "
            f"migrations {settings.migrations}")
        try:
            return _fill(settings, ledger_conn, conn, cp, facts, heroku, adapter, say, complete, dump)
        except BaseException as exc:
            _fail(ledger_conn, cp["id"], exc, settings)
            raise
    finally:
        if own_conn:
            conn.close()


def _fill(settings: Settings, ledger_conn: LedgerConnection, conn: psycopg.Connection[Any], cp: CheckpointRow,
          facts: Mapping[str, Any], heroku: Any, adapter: Any, say: Progress, complete: bool,
          dump: "Dump | None") -> CheckpointRow:
    row = conn.cursor(row_factory=tuple_row).execute("SELECT pg_current_wal_lsn()::text, current_database()").fetchone()
    assert row is not None, "a SELECT without FROM answers one row"
    lsn, dbname = row
    addon = facts.get("addon") or {}
    applied = adapter.applied(conn)
    # Only a deploy checkpoint's down scripts are ever run (no release applies migrations after a
    # safety checkpoint), and the worker taking a safety checkpoint may not have the app's
    # migration files at all: it reads the state table only.
    pending = adapter.pending(conn) if cp["kind"] == CheckpointKind.DEPLOY else []
    irreversible = [m.id for m in pending if not m.reversible]
    fingerprint = config_fingerprint(facts["config"]) if "config" in facts else None
    ledger.update_checkpoint(
        ledger_conn, cp["id"], wal_lsn=lsn, config_fingerprint=fingerprint,
        database={"url": mask_url(settings.database_url or ""), "name": dbname or database_name(settings.database_url or ""),
                  "addon_id": addon.get("addon_id"), "addon_name": addon.get("addon_name")},
        migrations_before=applied, down_scripts=[m.to_json() for m in pending], irreversible=irreversible,
    )
    count = len(adapter.applied_history(conn)) if cp["kind"] == CheckpointKind.DEPLOY else len(applied)
    say(f"checkpoint {cp['id']}: WAL {lsn}, {count} migrations applied, {len(pending)} pending"
        + (f" ({len(irreversible)} irreversible: {', '.join(irreversible)})" if irreversible else ""))
    if cp["kind"] == CheckpointKind.DEPLOY:
        _judge(settings, ledger_conn, conn, cp, adapter, pending, say)
    if settings.storage.files:
        from backout.files.record import record
        from backout.storage.client import make_client

        ledger.update_checkpoint(ledger_conn, cp["id"], files=record(settings.storage, make_client(settings.storage), say))
    stored = settings.backup == "pg_dump" and settings.storage.archives is not None
    if stored:
        _sweep_uploads(settings, ledger_conn, cp, say)
    context = backups.BackupContext(
        checkpoint_id=cp["id"], app=cp["app"], database_url=settings.database_url or "",
        backup_dir=settings.backup_dir, progress=say, conn=conn, heroku=heroku,
        addon_id=addon.get("addon_id"), storage=settings.storage if stored else None, dump=dump,
    )
    backup = backups.take(settings.backup, context)
    fields: dict[str, Any] = {"backup": {"strategy": settings.backup, **backup}}
    if complete:
        fields.update(status=CheckpointStatus.COMPLETE, completed_at="now")
    return ledger.update_checkpoint(ledger_conn, cp["id"], **fields)


def _judge(settings: Settings, ledger_conn: LedgerConnection, conn: psycopg.Connection[Any], cp: CheckpointRow, adapter: Any,
           pending: list, say: Progress) -> None:
    """Record what rolling this release back will cost, print it in the release log with the
    statements that decided it, and refuse (before the backup and the migrations) a release that
    breaks BACKOUT_REQUIRE."""
    from backout.verdict import policy
    from backout.verdict.verdict import judge

    verdict = judge(adapter, conn, pending)
    ledger.update_checkpoint(ledger_conn, cp["id"], verdict=verdict.to_json())
    for line in verdict.lines():
        say(line)
    policy.enforce(verdict, settings.require_policy)
def _sweep_uploads(settings: Settings, ledger_conn: LedgerConnection, cp: CheckpointRow, say: Progress) -> None:
    """Abort the uploads that checkpoints killed mid-way left open (S3 keeps, and bills, their
    parts until then). Best effort: a checkpoint is not failed for its predecessors' leftovers."""
    assert settings.storage.archives is not None
    from backout.storage import archives
    from backout.storage.client import make_client

    def writing(checkpoint_id: str) -> bool:
        return checkpoint_id == cp["id"] or ledger.taker_alive(ledger_conn, checkpoint_id)

    try:
        aborted = archives.sweep(make_client(settings.storage), settings.storage.archives, cp["app"], writing)
    except BackoutError as exc:
        say(f"warning: {exc}")
        return
    if aborted:
        say(f"storage: aborted {len(aborted)} unfinished upload(s) left by interrupted checkpoints: {', '.join(aborted)}")


def _fail(ledger_conn: LedgerConnection, checkpoint_id: str, exc: BaseException, settings: Settings) -> None:
    reason = str(exc) if isinstance(exc, BackoutError) else f"{type(exc).__name__}: {exc}"
    try:
        ledger.update_checkpoint(ledger_conn, checkpoint_id, status=CheckpointStatus.FAILED,
                                 error=redact(reason, settings.secrets()))
    except Exception:  # noqa: BLE001 - the original failure is the one to report
        pass
