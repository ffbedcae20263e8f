"""Restoring a checkpoint's backup, one function per kind of backup.

- `pg_dump`: the archive in BACKOUT_BACKUP_DIR, restored beside the live data and swapped in
  (`swap`), verified against the archive's row counts first.
- `heroku`: a Data API restore of the checkpoint's Heroku Postgres backup into the app's
  DATABASE, polled to completion; then every table the backup holds is looked for and counted.
  The backup holds the whole database, ledger included, so the ledger is read out before and
  merged back after (`ledger_copy`) when it lives in that database.
- `pitr`: a rollback add-on of the database's plan, `rollback` from the checkpoint's add-on `to`
  the checkpoint's time, waited for, checked (its migration state is the checkpoint's), given the
  current ledger when the ledger lives in the app's database, and promoted to DATABASE. The old
  database stays attached under its other name; backout never destroys it. Attaching makes
  releases, and their release phase runs the current (failing) code's migrate command on the new
  database: what it applies is undone again from the saved down scripts, so the database is at
  the checkpoint's migrations when the code rollback's own release phase runs.

After a `pg_dump` or `heroku` restore, whatever the checkpoint's archive does not hold (a table, type,
function or schema a later migration made, which `pg_restore --clean` leaves) is dropped
(`leftovers`): the database equals the checkpoint, and what stood beside it is kept only in the
safety checkpoint. Each returns a JSON-friendly account of what it did.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import psycopg
import requests

from backout import ledger
from backout.backups.archive import Archive, Scanner
from backout.backups.heroku import ATTACHMENT, database_addon
from backout.backups.pitr import PITR_TIERS, plan_tier
from backout.errors import BackoutError, PlanRefused
from backout.heroku import HerokuClient
from backout.ledger.records import CheckpointRow
from backout.migrations import get_adapter
from backout.rollback.database import down, ledger_copy, leftovers, pgtools, stream, swap
from backout.settings import Settings
from backout.timestamps import parse_time

Progress = Callable[[str], None]

ATTACH_WAIT = 120.0
# While a Data API restore runs the ledger holds the backup's rows: the shorter, the better.
TRANSFER_POLL = 0.5


# ---------------------------------------------------------------------------------------------
# pg_dump


def pg_dump_choice(settings: Settings, toc: Archive) -> swap.Choice:
    """The restore mode for this archive and database (plan time and run time alike)."""
    with pgtools.connect(settings.database_url or "", "the app's database (DATABASE_URL)") as conn:
        return swap.choose(conn, ledger_here=ledger_in_app_database(settings), archive=toc)


def restore_pg_dump(settings: Settings, checkpoint: CheckpointRow, request_id: str, progress: Progress) -> dict[str, Any]:
    backup = checkpoint["backup"] or {}
    source = archive_of(checkpoint, settings)
    toc = stream.read_toc(source)
    choice = pg_dump_choice(settings, toc)
    progress(f"restore: {checkpoint['id']} ({source.name}) by {choice.mode}: {choice.reason}")
    restore = swap.Restore(settings.database_url or "", backup, checkpoint["id"], swap.request_key(request_id),
                           progress, work_dir=Path(settings.backup_dir), storage=settings.storage)
    result = restore.run(choice.mode, toc)
    result["choice"] = choice.to_json()
    result["dropped"] = _drop_leftovers(settings, toc, progress)
    return result


def archive_of(checkpoint: CheckpointRow, settings: Settings) -> stream.Source:
    """The checkpoint's pg_dump archive, checked to be there as written; BackoutError naming the
    checkpoint and what is missing when it is not (pruned, deleted, expired, on another machine)."""
    if checkpoint.get("pruned_at"):
        raise BackoutError(f"checkpoint {checkpoint['id']}'s archive was pruned at {checkpoint['pruned_at']} "
                           f"({(checkpoint.get('pruned') or {}).get('reason', 'BACKOUT_KEEP')})")
    source = stream.locate(checkpoint.get("backup") or {}, settings.storage)
    try:
        source.check()
    except BackoutError as exc:
        raise BackoutError(f"cannot restore checkpoint {checkpoint['id']}: {exc}") from None
    return source


def _drop_leftovers(settings: Settings, toc: Archive, progress: Progress) -> list[str]:
    """After a restore that keeps what the archive does not hold (in place, or schemas beside
    the archive's): drop it, so the database equals the checkpoint."""
    dropped = leftovers.drop_leftovers(settings.database_url or "", toc)
    if dropped:
        progress(f"restore: dropped what the checkpoint did not hold: {', '.join(dropped)}")
    return dropped


def ledger_in_app_database(settings: Settings) -> bool:
    return settings.backout_database_url is None or pgtools.same_database(settings.ledger_url, settings.database_url)


# ---------------------------------------------------------------------------------------------
# heroku


def check_heroku_backup(client: HerokuClient, app: str, backup: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's backup as the Data API has it now; PlanRefused when it is gone or failed."""
    num = backup.get("transfer_num")
    if num is None:
        raise PlanRefused("the checkpoint records no Heroku backup number")
    transfer = _unless_gone(lambda: client.transfer(app, num),
                            f"Heroku backup b{int(num):03d} of {app} no longer exists (expired or deleted); "
                            "choose another checkpoint")
    if not transfer.get("succeeded") or transfer.get("deleted_at") or transfer.get("purged_at"):
        raise PlanRefused(f"Heroku backup b{int(num):03d} of {app} cannot be restored: it "
                          + ("was deleted" if transfer.get("deleted_at") or transfer.get("purged_at") else "did not succeed"))
    return transfer


def restore_heroku(settings: Settings, client: HerokuClient, app: str, checkpoint: CheckpointRow,
                   progress: Progress) -> dict[str, Any]:
    backup = checkpoint["backup"] or {}
    check_heroku_backup(client, app, backup)
    num = backup["transfer_num"]
    addon = database_addon(client, app)
    check_database_url(settings, client, app)
    link = client.backup_url(app, num)
    toc = remote_toc(link["url"])
    carry = ledger_in_app_database(settings)
    snap = hold = None
    if carry:
        hold = pgtools.connect(settings.ledger_url or "", "the ledger")
        # Others finding the ledger's tables gone mid-restore would create them afresh, and the
        # restore's own CREATE would then fail: the ledger's schema lock makes them wait instead.
        hold.execute("SELECT pg_advisory_lock(%s)", [ledger.SCHEMA_LOCK])
        snap = ledger_copy.snapshot(hold)
        progress(f"restore: ledger read out ({sum(snap.rows().values())} rows); the backup holds an older one")
    try:
        progress(f"restore: Data API restore of b{int(num):03d} into {addon.get('addon_name') or addon['addon_id']}")
        started = client.restore_backup(addon["addon_id"], link["url"])
        done = client.wait_transfer(app, started["num"], poll=TRANSFER_POLL,
                                    progress=lambda line: progress(f"restore: {line}"))
    finally:
        if hold is not None:
            hold.close()  # the schema lock goes with the session
        if snap is not None:
            merged = ledger_copy.merge(settings.ledger_url or "", snap)
            snap.close()
            progress(f"restore: ledger merged back ({sum(merged.values())} rows)")
    dropped = _drop_leftovers(settings, toc, progress)
    names = sorted(e.qualified for e in toc.table_data() if e.namespace != swap.LEDGER_SCHEMA)
    counts = _count_tables(settings.database_url or "", names)
    progress(f"restore: verified, {len(counts)} tables of the backup present")
    return {"transfer": {"num": done.get("num"), "uuid": done.get("uuid"), "from": f"b{int(num):03d}",
                         "processed_bytes": done.get("processed_bytes")},
            "addon": addon.get("addon_name") or addon["addon_id"], "tables": counts,
            "ledger_carried": carry, "mode": "data-api", "dropped": dropped}


def remote_toc(url: str) -> Archive:
    """The TOC of the backup behind a public URL, reading only as far as it goes."""
    scanner = Scanner()
    with requests.get(url, stream=True, timeout=60) as answer:
        if answer.status_code != 200:
            raise BackoutError(f"the backup's public URL answered {answer.status_code}")
        for chunk in answer.iter_content(1 << 16):
            scanner.feed(chunk)
            if not scanner.in_toc:
                break
    if scanner.in_toc:
        raise BackoutError("the backup ends inside its table of contents")
    return scanner.archive


def _count_tables(url: str, names: list[str]) -> dict[str, int]:
    found = {}
    with pgtools.connect(url, "the app's database") as conn:
        for name in names:
            schema, _, table = name.partition(".")
            try:
                found[name] = pgtools.one(conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                    psycopg.sql.Identifier(schema, table))))[0]
            except psycopg.errors.UndefinedTable:
                raise BackoutError(f"verification failed: table {name} of the backup is missing after the restore") from None
    return found


# ---------------------------------------------------------------------------------------------
# pitr


def check_pitr(client: HerokuClient, app: str, backup: dict[str, Any]) -> dict[str, Any]:
    """The add-on to roll back and its plan; PlanRefused when it is gone, on a plan without
    rollback, or the checkpoint's time is outside the add-on's rollback window."""
    if not backup.get("time"):
        raise PlanRefused("the checkpoint records no point in time")
    source = backup.get("addon_id") or database_addon(client, app)["addon_id"]
    addon = _unless_gone(lambda: client.addon_info(app, source),
                         f"the database add-on {source} the checkpoint marked is gone; a rollback add-on needs it")
    plan = (addon.get("plan") or {}).get("name") or ""
    if plan_tier(plan) not in PITR_TIERS:
        raise PlanRefused(f"{addon.get('name')} is on {plan}, which Heroku cannot roll back to a point in time "
                          "(standard, premium, private and shield plans can)")
    earliest = _earliest(client.database_info(addon["id"]))
    when = parse_time(backup["time"])
    if earliest is not None and when < earliest:
        raise PlanRefused(f"{addon.get('name')} can be rolled back to {earliest.isoformat()} at the earliest; "
                          f"the checkpoint's time {backup['time']} is older")
    return {"addon_id": addon["id"], "addon_name": addon.get("name"), "plan": plan, "time": backup["time"],
            "earliest": earliest.isoformat() if earliest else None}


def restore_pitr(settings: Settings, client: HerokuClient, app: str, checkpoint: CheckpointRow, progress: Progress,
                 earlier: dict[str, Any] | None, record: Callable[[dict[str, Any]], object],
                 reapplied: down.DownPlan) -> dict[str, Any]:
    """`earlier`: what an earlier run of the same request recorded when it created the rollback
    add-on, if one did; `record` writes such a step detail to the ledger (never while ledger writes
    are held); `reapplied`: the down plan back to the checkpoint's migrations, for the ones the
    promotion's release phase applies again (it runs the current code's migrate command)."""
    source = check_pitr(client, app, checkpoint["backup"] or {})
    expected = checkpoint.get("migrations_before")
    if earlier and _attached_as(client, app, earlier["rollback_addon"]) == ATTACHMENT:
        progress(f"restore: {earlier['rollback_addon']} is already the app's DATABASE (an earlier run promoted it)")
        url = client.config_vars(app)["DATABASE_URL"]
        undone = _undo_reapplied(client, app, earlier["release_before"], url, expected, reapplied, progress)
        return {"mode": "rollback-addon", "addon_id": earlier["rollback_addon"], "undone": undone, "resumed": True}
    check_database_url(settings, client, app)
    before = client.current_release(app)["version"]
    if earlier:
        addon = client.addon_info(app, earlier["rollback_addon"])
        before = earlier["release_before"]
    else:
        progress(f"restore: creating a {source['plan']} rollback of {source['addon_name']} to {source['time']}")
        addon = client.create_addon(app, source["plan"], config={"rollback": source["addon_name"] or source["addon_id"],
                                                                  "to": source["time"]})
        record({"rollback_addon": addon["id"], "rollback_addon_name": addon.get("name"), "to": source["time"],
                "release_before": before})
    client.wait_database(addon["id"], progress=lambda line: progress(f"restore: {line}"))
    attachment = _wait_attachment(client, app, addon["id"])
    new_url = client.config_vars(app).get(f"{attachment}_URL")
    if not new_url:
        raise BackoutError(f"the rollback database is attached as {attachment}, but {attachment}_URL is not set")
    state = _migration_state(checkpoint["migration_tool"], new_url)
    if expected is not None and sorted(state) != sorted(expected):
        raise BackoutError(f"the rollback database {addon.get('name')} has migrations {state}, the checkpoint "
                           f"recorded {expected}; it was not promoted")
    old = database_addon(client, app)
    carried = None
    if ledger_in_app_database(settings):
        with pgtools.connect(settings.ledger_url or "", "the ledger", autocommit=True) as hold:
            with ledger_copy.writes_held(hold):
                snap = ledger_copy.snapshot(hold)
                try:
                    carried = ledger_copy.replace_into(new_url, snap)
                finally:
                    snap.close()
                # The app's lock moves with the ledger: held there before the app uses it.
                ledger.carry_app_lock(app, new_url)
                _promote(client, app, addon["id"])
        progress(f"restore: ledger copied into the rollback database ({sum(carried.values())} rows) and promoted")
    else:
        _promote(client, app, addon["id"])
    kept_as = _attached_as(client, app, old["addon_id"])
    progress(f"restore: {addon.get('name')} is DATABASE now; the old database {old.get('addon_name')} stays "
             f"attached as {kept_as}")
    undone = _undo_reapplied(client, app, before, new_url, expected, reapplied, progress)
    return {"mode": "rollback-addon", "addon": addon.get("name") or addon["id"], "addon_id": addon["id"],
            "to": source["time"], "kept": {"addon": old.get("addon_name"), "attachment": kept_as},
            "migrations": state, "undone": undone, "ledger_carried": carried is not None}


def _undo_reapplied(client: HerokuClient, app: str, before: int, url: str, expected: list[str] | None,
                    plan: down.DownPlan, progress: Progress) -> list[str]:
    """Wait for the releases made since `before` (the promotion's); undo what their release phase
    migrated, back to `expected`."""
    for release in client.list_releases(app):
        if release["version"] <= before:
            break
        client.wait_release(app, release["id"], poll=1.0)
    with pgtools.connect(url, "the promoted database") as conn:
        state = get_adapter(plan.tool).applied(conn)
        if expected is None or sorted(state) == sorted(expected):
            return []
        progress(f"restore: the promotion's release phase migrated the new database to {state}; undoing that "
                 f"back to {expected} from the saved down scripts")
        return down.run(conn, plan, progress)["undone"]


def _promote(client: HerokuClient, app: str, addon_id: str) -> None:
    client.create_attachment(app, addon_id, name=ATTACHMENT, confirm=app)


def _wait_attachment(client: HerokuClient, app: str, addon_id: str) -> str:
    deadline = time.monotonic() + ATTACH_WAIT
    while True:
        name = _attached_as(client, app, addon_id)
        if name:
            return name
        if time.monotonic() > deadline:
            raise BackoutError(f"the rollback database {addon_id} is provisioned but not attached to {app}")
        time.sleep(1.0)


def _attached_as(client: HerokuClient, app: str, addon_id: str) -> str | None:
    names = [a["name"] for a in client.attachments(app) if (a.get("addon") or {}).get("id") == addon_id]
    return ATTACHMENT if ATTACHMENT in names else (sorted(names)[0] if names else None)


def _migration_state(tool: str, url: str) -> list[str]:
    with pgtools.connect(url, "the rollback database") as conn:
        return get_adapter(tool).applied(conn)


_EARLIEST = re.compile(r"earliest from (\S+)")


def _earliest(info: dict[str, Any]) -> datetime | None:
    for item in info.get("info") or []:
        if item.get("name") == "Rollback":
            for value in item.get("values") or []:
                found = _EARLIEST.search(str(value))
                if found:
                    return parse_time(found[1])
    return None


# ---------------------------------------------------------------------------------------------


def _unless_gone(lookup: Callable[[], dict[str, Any]], refusal: str) -> dict[str, Any]:
    """What `lookup` answers; PlanRefused(refusal) when the API says it does not exist (404)."""
    try:
        return lookup()
    except BackoutError as exc:
        if getattr(exc, "status", None) == 404:
            raise PlanRefused(refusal) from None
        raise


def check_database_url(settings: Settings, client: HerokuClient, app: str) -> None:
    """Refuse when this process's DATABASE_URL is not the app's: the restore would be checked,
    or made, against the wrong database."""
    theirs = client.config_vars(app).get("DATABASE_URL")
    if theirs and settings.database_url and not pgtools.same_database(theirs, settings.database_url):
        raise PlanRefused(f"DATABASE_URL here is not the DATABASE_URL of {app} (another host or database); "
                          f"run the worker with {app}'s config")

