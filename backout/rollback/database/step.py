"""The database step of a rollback: planning it (`plan_db_step`) and carrying it out (`run_db_step`).

The restore point. A deploy checkpoint of release vN is taken in vN's release phase, before vN's
migrations, so it holds the database as the release before vN left it. The database that goes
with vN's code is therefore the one held by the checkpoint of the deploy that replaced vN (its
previous release is vN), or by a safety checkpoint taken while vN ran: the oldest complete such
checkpoint taken after vN's own. Without one, a safety checkpoint named with `--to cp_...` is
its own restore point (how a rollback is undone); a deploy checkpoint is, too, and then the
rollback release's release phase runs vN's migrations again.

- `--db restore` restores the restore point's backup (see `restore`), discarding every write
  since it was taken.
- `--db down` undoes the migrations applied since the restore point, from the down scripts the
  checkpoints saved (see `down`); data in tables and columns those migrations made is lost.

Either way a safety checkpoint of the current state comes first (same backup kind as the
restore point's for a restore; BACKOUT_BACKUP for down migrations), so the rollback can itself
be rolled back: it is listed by `backout checkpoints`, kind `safety`, and named in the step.

The plan only reads (the ledger, the Platform and Data APIs, and the app's database and the
backup file where this process can reach them) and raises PlanRefused saying what differs or is
missing. The worker checks everything again before it changes anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Required, TypedDict

import psycopg

from backout import checkpoint as checkpoints
from backout import ledger
from backout.errors import BackoutError, PlanRefused
from backout.heroku import HerokuClient
from backout.ledger.records import (
    FINISHED_STEP,
    CheckpointKind,
    CheckpointRow,
    CheckpointStatus,
    LedgerConnection,
    StepName,
    StepRow,
    StepStatus,
)
from backout.output import human_bytes
from backout.redact import redact
from backout.release_version import slug_id
from backout.rollback.database import down, leftovers, loss, pgtools, restore, stream, swap
from backout.rollback.database.down import DownMigrationError
from backout.settings import Settings

Progress = Callable[[str], None]

DB_KINDS = {"restore": StepName.DB_RESTORE, "down": StepName.DB_DOWN}



class CheckpointSummary(TypedDict):
    """A checkpoint as a plan names it (its restore point)."""

    id: str
    kind: str
    release_version: int | None
    created_at: str
    backup_strategy: str
    migration_tool: str


class DbStep(TypedDict, total=False):
    """The database step of a rollback plan (`Plan["db_step"]`), JSON-friendly: planned by
    `plan_db_step`, carried out by `run_db_step`."""

    kind: Required[str]  # StepName.DB_RESTORE or StepName.DB_DOWN
    db: Required[str]  # restore | down
    restore_point: Required[CheckpointSummary]
    restore_point_reason: Required[str]
    checked_here: Required[list[str]]  # what the plan checked where it was made
    checked_by_worker: Required[list[str]]  # what only the worker can check
    restore: dict[str, Any]  # restore: the strategy, and the mode, size, source ... it implies
    down: dict[str, Any]  # down: the DownPlan's JSON (tool, migrations newest first)
    safety_checkpoint: dict[str, str] | None  # {"backup": strategy}, or None when nothing changes
    loss: dict[str, Any]  # what it discards, estimated from the app's database when reachable
    summary: str

# ---------------------------------------------------------------------------------------------
# planning


def restore_point(ledger_conn: LedgerConnection, app: str, target_checkpoint: CheckpointRow | None,
                  target_version: int | None, current_version: int | None = None) -> tuple[CheckpointRow, str]:
    """The checkpoint whose database goes with the target release, and why it was chosen."""
    if target_version is None:
        raise PlanRefused("the target release has no version, so no checkpoint can be matched to it")
    after = target_checkpoint["created_at"] if target_checkpoint else ""
    later = [cp for cp in ledger.list_checkpoints(ledger_conn, app)
             if cp["status"] == CheckpointStatus.COMPLETE and cp["created_at"] > after and left_by(cp, target_version)]
    if later:
        point = later[-1]
        if point["kind"] == CheckpointKind.SAFETY:
            return point, f"a safety checkpoint taken while v{target_version} ran: the database as it left it"
        return point, (f"taken when v{point['release_version']} was deployed over v{target_version}: the database "
                       f"as v{target_version} left it")
    if target_checkpoint is not None and target_checkpoint["status"] == CheckpointStatus.COMPLETE:
        if target_checkpoint["kind"] == CheckpointKind.SAFETY:
            return target_checkpoint, f"the safety checkpoint named, taken while v{target_version} ran"
        if target_version == current_version:
            raise PlanRefused(f"v{target_version} is the release {app} runs, so its database is the current one; "
                              "name a safety checkpoint (cp_...) to go back to an earlier state")
        return target_checkpoint, (f"v{target_version}'s own checkpoint, taken before its migrations (no later "
                                   f"checkpoint); the rollback release's release phase runs them again")
    raise PlanRefused(f"no complete checkpoint of {app} holds the database of v{target_version}; "
                      "`backout checkpoints` lists them")


def left_by(cp: CheckpointRow, version: int) -> bool:
    """Whether a checkpoint holds the database as release `version` left it: the checkpoint of the
    deploy that replaced it, or a safety checkpoint taken while it ran."""
    if cp["kind"] == CheckpointKind.SAFETY:
        return cp["release_version"] == version
    previous = cp["previous_release_version"]
    # Without the Platform API the hook records no previous release: a later version then counts.
    return previous == version or (previous is None and (cp["release_version"] or 0) > version)


def plan_db_step(settings: Settings, ledger_conn: LedgerConnection, app: str, target_checkpoint: CheckpointRow | None,
                 db: str, *, target_version: int | None = None, current_version: int | None = None,
                 heroku: HerokuClient | None = None) -> DbStep | None:
    """The database step of a rollback plan (None for `--db none`), JSON-friendly; PlanRefused
    when it cannot be carried out."""
    if db == "none":
        return None
    if db not in DB_KINDS:
        raise PlanRefused(f"--db {db!r} is not one of none, down, restore")
    if target_version is None and target_checkpoint is not None:
        target_version = target_checkpoint.get("release_version")
    point, why = restore_point(ledger_conn, app, target_checkpoint, target_version, current_version)
    step: DbStep = {
        "kind": DB_KINDS[db], "db": db, "restore_point": summary(point), "restore_point_reason": why,
        "checked_here": [], "checked_by_worker": [],
    }
    client = heroku or (HerokuClient.from_settings(settings) if settings.heroku_api_key else None)
    try:
        with _app_database(settings, step) as conn:
            if db == "restore":
                _plan_restore(step, settings, client, app, point, conn, ledger_conn)
            else:
                _plan_down(step, settings, ledger_conn, point, conn)
            step["loss"] = _loss(conn, point, db)
    finally:
        if heroku is None and client is not None:
            client.close()
    step["summary"] = _describe(step)
    return step


def _plan_restore(step: DbStep, settings: Settings, client: HerokuClient | None, app: str, point: CheckpointRow,
                  conn: psycopg.Connection[Any] | None, ledger_conn: LedgerConnection) -> None:
    strategy = point["backup_strategy"]
    backup = point.get("backup") or {}
    info: dict[str, Any] = {"strategy": strategy}
    if strategy == "none" or not backup:
        raise PlanRefused(f"checkpoint {point['id']} holds no copy of the data (taken with BACKOUT_BACKUP=none); "
                          "roll back with --db down, or choose a checkpoint with a backup")
    if strategy == "pg_dump":
        info.update(file=backup.get("url") or backup.get("path"), size=backup.get("size"),
                    archive_bytes=backup.get("dump_size"))
        try:
            toc = stream.read_toc(restore.archive_of(point, settings))
            step["checked_here"].append(f"the {'archive in storage' if backup.get('storage') else 'backup file'} is "
                                        "present, with its recorded size, and readable")
        except BackoutError as exc:
            if "not on this machine" not in str(exc):
                raise PlanRefused(str(exc)) from None
            toc = None
            step["checked_by_worker"].append("the backup file (it is not on this machine)")
        if conn is not None:
            choice = swap.choose(conn, ledger_here=restore.ledger_in_app_database(settings), archive=toc)
            info.update(choice.to_json())
            if toc is None:
                step["checked_by_worker"].append("the restore mode, with the archive's contents")
        else:
            info.update(mode=None, reason="decided by the worker, which can reach the database")
    elif strategy == "heroku":
        info.update(mode="data-api", transfer=backup.get("transfer_num"),
                    reason="a Heroku Data API restore into DATABASE, in place: the app waits for the whole restore")
        if client is None:
            raise PlanRefused("restoring a Heroku backup needs the Data API: set HEROKU_API_KEY")
        check_heroku = restore.check_heroku_backup(client, app, backup)
        info["size"] = check_heroku.get("processed_bytes")
        step["checked_here"].append("the Heroku backup exists and succeeded")
    elif strategy == "pitr":
        if client is None:
            raise PlanRefused("a point-in-time rollback needs the Platform API: set HEROKU_API_KEY")
        source = restore.check_pitr(client, app, backup)
        info.update(mode="rollback-addon", time=backup.get("time"), source=source["addon_name"], plan=source["plan"],
                    reason="a new database rolled back to the checkpoint's time, promoted to DATABASE when ready; "
                           "the app switches at the promotion, the old database stays attached")
        step["checked_here"].append("the add-on's plan supports rollback and the time is in its window")
        # The promotion's release phase migrates the new database with the current code; those
        # migrations are undone again, so they must have down scripts.
        reapplied = down.saved_plan(ledger_conn, point)
        problems = reapplied.problems_without_database()
        if problems:
            raise PlanRefused("the promoted database would be migrated again by the current release's release "
                              "phase, and that cannot be undone: " + "; ".join(problems))
        info["reapplied"] = [m.id for m in reapplied.migrations]
    else:
        raise PlanRefused(f"checkpoint {point['id']} has a backup of unknown kind {strategy!r}")
    step["restore"] = info
    step["safety_checkpoint"] = _safety_plan(strategy)


def _plan_down(step: DbStep, settings: Settings, ledger_conn: LedgerConnection, point: CheckpointRow,
               conn: psycopg.Connection[Any] | None) -> None:
    path = _migrations_path(settings, point)
    if conn is None:
        plan = down.saved_plan(ledger_conn, point)
        step["checked_by_worker"].append(f"the {plan.tool} state applied now, from which the worker plans again")
    else:
        plan = down.live_plan(ledger_conn, conn, point, path)
    problems = plan.problems()
    if conn is not None and not problems:
        problems = down.check(conn, plan, path)
        step["checked_here"].append(f"the {plan.tool} state applied now, and a saved down script for each step")
    if problems:
        raise down.refusal(plan, problems, point)
    step["down"] = plan.to_json()
    step["safety_checkpoint"] = _safety_plan(settings.backup) if plan.migrations else None


def _migrations_path(settings: Settings, point: CheckpointRow) -> Path | None:
    """BACKOUT_MIGRATIONS_PATH when it is the checkpoints' tool's (Django runs from there)."""
    return settings.migrations_path if settings.migrations == point["migration_tool"] else None


def _safety_plan(strategy: str) -> dict[str, str]:
    if strategy == "none":
        raise PlanRefused("the safety checkpoint taken before a database rollback would hold no copy of the data "
                          "(BACKOUT_BACKUP=none); set BACKOUT_BACKUP to pg_dump, heroku or pitr")
    return {"backup": strategy}


def _loss(conn: psycopg.Connection[Any] | None, point: CheckpointRow, db: str) -> dict[str, Any]:
    what = ("every write since the checkpoint" if db == "restore"
            else "the data in the tables and columns the undone migrations made")
    if conn is None:
        return {"discards": what, "since": point["created_at"],
                "method": "not estimated: the app's database is not reachable where the plan was made"}
    return {"discards": what, **loss.estimate(conn, point["created_at"], point.get("wal_lsn"))}


class _app_database:
    """The app's database when this process can reach it; None (and a note) when it cannot."""

    def __init__(self, settings: Settings, step: DbStep) -> None:
        self.settings = settings
        self.step = step
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.Connection[Any] | None:
        if not self.settings.database_url:
            self.step["checked_by_worker"].append("the app's database (DATABASE_URL is not set here)")
            return None
        try:
            self.conn = pgtools.connect(self.settings.database_url, "the app's database")
        except BackoutError:
            self.step["checked_by_worker"].append("the app's database (not reachable from here)")
            return None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def summary(cp: CheckpointRow) -> CheckpointSummary:
    return {"id": cp["id"], "kind": cp["kind"], "release_version": cp["release_version"],
            "created_at": cp["created_at"], "backup_strategy": cp["backup_strategy"],
            "migration_tool": cp["migration_tool"]}


def _describe(step: DbStep) -> str:
    point = step["restore_point"]
    lost = step.get("loss") or {}
    estimate = lost.get("rows_changed_estimate")
    discards = f"discards writes since {point['created_at']}" + (f" (~{estimate} rows changed)" if estimate is not None else "")
    if step["db"] == "restore":
        info = step["restore"]
        mode = info.get("mode") or "a mode the worker chooses"
        how = {"database": "into a new database, then a swap of names",
               "schema": "into new schemas, then a swap of names",
               "in-place": "in place (the app waits for the whole restore)"}.get(mode, mode)
        size = f", {human_bytes(info['size'])}" if isinstance(info.get("size"), int) else ""
        text = f"restore {point['id']} ({info['strategy']}{size}) {how}; {discards}"
    else:
        undo = step["down"]["migrations"]
        if not undo:
            return f"no migrations to undo: the database is already at {point['id']}'s migrations"
        text = (f"undo {len(undo)} {step['down']['tool']} migration(s) newest first ({', '.join(m['id'] for m in undo)}) "
                f"back to {point['id']}; discards their tables' and columns' data")
    if safety := step.get("safety_checkpoint"):
        text += f"; a safety checkpoint ({safety['backup']}) first"
    return text


# ---------------------------------------------------------------------------------------------
# running


def run_db_step(settings: Settings, request_id: str, db_step: DbStep, progress: Progress,
                conn: ledger.FollowingConnection | None = None) -> dict[str, Any]:
    """Carry out a planned database step for a request: checks again, safety checkpoint, restore
    or down migrations, verification; each recorded as a ledger step. Returns what was done.
    Running it again for the same request does the work once. `conn`: the caller's ledger
    connection, which follows the ledger when a promotion moves it (else one of its own)."""
    settings.require("BACKOUT_DATABASE_URL", "DATABASE_URL", "HEROKU_API_KEY")
    kind = db_step["kind"]
    own = conn is None
    if conn is None:
        conn = ledger.FollowingConnection(ledger.connect(settings.ledger_url or ""))
    try:
        request = ledger.require_request(conn, request_id)
        app = request["app"]
        earlier = [s for s in ledger.steps(conn, request_id) if s["step"] == kind]
        finished = next((s for s in reversed(earlier) if s["status"] in FINISHED_STEP), None)
        if finished is not None:
            progress(f"{kind}: already done by an earlier run of request {request_id}")
            return {**(finished["detail"] or {}), "resumed": True}
        point = ledger.get_checkpoint(conn, db_step["restore_point"]["id"])
        if point is None:
            raise PlanRefused(f"checkpoint {db_step['restore_point']['id']} is no longer in the ledger")
        with HerokuClient.from_settings(settings) as client:
            restore.check_database_url(settings, client, app)
            runner = _Runner(settings, conn, client, app, request_id, kind, point, progress)
            return runner.run(db_step, earlier)
    finally:
        if own:
            conn.close()


@dataclasses.dataclass
class _Runner:
    settings: Settings
    conn: ledger.FollowingConnection
    client: HerokuClient
    app: str
    request_id: str
    kind: str
    point: CheckpointRow
    progress: Progress

    def say(self, line: str, record: bool = False) -> None:
        self.progress(line)
        if record:
            ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.STARTED, {"progress": line})

    def run(self, db_step: DbStep, earlier: list[StepRow]) -> dict[str, Any]:
        if self.kind == StepName.DB_DOWN:
            plan = self._down_plan(db_step)
            if not plan.migrations:
                detail = {"undone": [], "reason": "the database is already at the checkpoint's migrations"}
                ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.SKIPPED, detail)
                return detail
            strategy = self.settings.backup
        else:
            plan = None
            strategy = self.point["backup_strategy"]
        safety = self._safety_checkpoint(_safety_plan(strategy)["backup"])
        ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.STARTED,
                           {"restore_point": self.point["id"], "safety_checkpoint_id": safety["id"]})
        try:
            result = self._down(plan) if plan is not None else self._restore(earlier)
        except DownMigrationError as exc:
            ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.FAILED,
                               {"ran": exc.ran, "failed": exc.failed, "reason": exc.reason,
                                "safety_checkpoint_id": safety["id"]})
            raise BackoutError(f"{exc}; safety checkpoint {safety['id']} holds the database as it was before") from exc
        except Exception as exc:
            ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.FAILED,
                               {"reason": redact(str(exc), self.settings.secrets()),
                                "safety_checkpoint_id": safety["id"]})
            raise
        result.update(restore_point=self.point["id"], safety_checkpoint_id=safety["id"])
        ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.DONE, result)
        return result

    def _down_plan(self, db_step: DbStep) -> down.DownPlan:
        path = _migrations_path(self.settings, self.point)
        with pgtools.connect(self.settings.database_url or "", "the app's database") as app_conn:
            plan = down.live_plan(self.conn, app_conn, self.point, path)
            planned = db_step.get("down") or {}
            ids = [m["id"] for m in planned.get("migrations") or []]
            if planned.get("from_live_state") and sorted(m.id for m in plan.migrations) != sorted(ids):
                raise PlanRefused(f"the plan is stale: it undoes {ids or 'nothing'}, but the database now calls for "
                                  f"{[m.id for m in plan.migrations] or 'nothing'}; ask for the rollback again")
            problems = plan.problems() or down.check(app_conn, plan, path)
        if problems:
            raise down.refusal(plan, problems, self.point)
        return plan

    def _down(self, plan: down.DownPlan) -> dict[str, Any]:
        path = _migrations_path(self.settings, self.point)
        with pgtools.connect(self.settings.database_url or "", "the app's database") as app_conn:
            result = {"tool": plan.tool, **down.run(app_conn, plan, lambda line: self.say(line, record=True), path)}
            result["schema_checked"] = self._check_schema(app_conn)
        return result

    def _check_schema(self, app_conn: psycopg.Connection[Any]) -> bool:
        """After the down migrations, the schema must hold what the restore point's backup holds and
        nothing more: a down script that left a table (or dropped one too many) stops the rollback
        here, before the rollback release's own migrate could paper over it. False when the backup
        cannot be read here (no backup, or a Heroku backup without the Data API)."""
        archive = self._restore_point_archive()
        if archive is None:
            return False
        extra = leftovers.leftovers(app_conn, archive)
        tables = [e for e in archive.entries if e.desc == "TABLE" and e.namespace != swap.LEDGER_SCHEMA]
        present = {row[0] for row in app_conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace")}
        gone = [e.qualified for e in tables if e.qualified not in present]
        if extra or gone:
            held = [f"{kind.lower()} {schema}.{name}" for kind, schema, name, _ in extra]
            raise BackoutError(
                "after the down migrations the schema is not the one checkpoint " + self.point["id"] + " holds"
                + (f": it has {', '.join(held)}, which the checkpoint did not" if held else "")
                + (f"{';' if held else ':'} it lacks {', '.join(gone)}" if gone else "")
                + "; the code was not rolled back. Check the down scripts, or --db restore that checkpoint")
        self.say("down migrations: the schema holds what the checkpoint's backup holds", record=True)
        return True

    def _restore_point_archive(self) -> Any:
        backup = self.point.get("backup") or {}
        try:
            if self.point["backup_strategy"] == "pg_dump":
                return stream.read_toc(stream.locate(backup, self.settings.storage))
            if self.point["backup_strategy"] == "heroku" and backup.get("transfer_num") is not None:
                return restore.remote_toc(self.client.backup_url(self.app, backup["transfer_num"])["url"])
        except BackoutError as exc:
            self.say(f"down migrations: the schema is not checked, the checkpoint's backup cannot be read ({exc})",
                     record=True)
        return None

    def _restore(self, earlier: list[StepRow]) -> dict[str, Any]:
        strategy = self.point["backup_strategy"]
        if strategy == "pg_dump":
            return restore.restore_pg_dump(self.settings, self.point, self.request_id,
                                           lambda line: self.say(line, record=True))
        if strategy == "heroku":
            # The Data API restore replaces the ledger's tables when the ledger lives in the app's
            # database: progress lines are not recorded there until it is merged back.
            return restore.restore_heroku(self.settings, self.client, self.app, self.point, self.say)
        if strategy == "pitr":
            made = next((s["detail"] for s in earlier if (s["detail"] or {}).get("rollback_addon")), None)
            result = restore.restore_pitr(
                self.settings, self.client, self.app, self.point, self.say, made,
                lambda detail: ledger.record_step(self.conn, self.request_id, self.kind, StepStatus.STARTED, detail),
                down.saved_plan(self.conn, self.point))
            if result.get("ledger_carried"):
                self._follow_ledger(result)
            return result
        raise PlanRefused(f"checkpoint {self.point['id']} has a backup of unknown kind {strategy!r}")

    def _follow_ledger(self, result: dict[str, Any]) -> None:
        """The ledger was copied into the promoted database: go on there. The old copy is told, so
        that nobody reading it (a worker still on the old DATABASE_URL) runs the request again."""
        new_url = self.client.config_vars(self.app)["DATABASE_URL"]
        ledger.record_step(self.conn, self.request_id, StepName.LEDGER_MOVED, StepStatus.DONE,
                           {"to": result.get("addon"), "reason": "the ledger moved with the promoted database; "
                            "this copy is no longer kept up to date"})
        self.conn.follow(new_url)
        self.settings = dataclasses.replace(self.settings, database_url=new_url)
        self.progress(f"restore: the ledger and {self.app}'s lock follow it into {result.get('addon')}")

    def _safety_checkpoint(self, strategy: str) -> CheckpointRow:
        for cp in ledger.list_checkpoints(self.conn, self.app, limit=50):
            if (cp["kind"] == CheckpointKind.SAFETY and cp["request_id"] == self.request_id
                    and cp["status"] == CheckpointStatus.COMPLETE):
                return cp
        ledger.record_step(self.conn, self.request_id, StepName.SAFETY_CHECKPOINT, StepStatus.STARTED, {"backup": strategy})
        current = self.client.current_release(self.app)
        release = checkpoints.Release(version=current["version"], id=current.get("id"),
                                      slug_id=slug_id(current),
                                      description=current.get("description"))
        settings = dataclasses.replace(self.settings, backup=strategy, app_name=self.app)
        try:
            cp = checkpoints.take(settings, self.conn, release, kind=CheckpointKind.SAFETY, heroku=self.client,
                                  progress=self.say, request_id=self.request_id)
        except Exception as exc:
            ledger.record_step(self.conn, self.request_id, StepName.SAFETY_CHECKPOINT, StepStatus.FAILED,
                               {"reason": redact(str(exc), self.settings.secrets())})
            raise BackoutError(f"the safety checkpoint failed, so nothing was changed: {exc}") from exc
        ledger.record_step(self.conn, self.request_id, StepName.SAFETY_CHECKPOINT, StepStatus.DONE,
                           {"checkpoint_id": cp["id"], "backup": strategy})
        self.say(f"safety checkpoint {cp['id']} ({strategy}) taken: this rollback can be undone with "
                 f"backout rollback --app {self.app} --to {cp['id']} --db restore")
        return cp
