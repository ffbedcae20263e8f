"""Restoring a `pg_dump` checkpoint beside the live data, then swapping it in.

The app keeps its database while the restore runs; it loses it only for the swap at the end,
which takes about the same time whatever the size. Three modes, the first one possible:

- `database`: the role may create databases and the ledger lives elsewhere. The archive is
  restored into a new database (when there are cores to share, in parallel, each table loading
  while the rest of the archive still decompresses: see `streamed`), verified, and the databases
  swap names: connections to the live one are ended, it becomes `<db>_before_<checkpoint>`
  (kept), and the restored one takes its name.
- `schema`: the role owns the app's schemas. Everything is restored in one transaction into
  schemas of their own: the transaction first renames the live schemas out of the way and
  creates empty ones under their names, so that every reference the restore makes (defaults,
  views, foreign keys, triggers) binds to the new objects, then gives the restored schemas
  their staging names and the live ones their names back before it commits. Other sessions see
  none of it until then, and the live schemas' names are never missing for them. The swap
  renames live -> `<schema>_before_<checkpoint>` and staging -> live in one short transaction,
  after taking the live tables' locks (ending sessions that hold them), so a query either ran
  before it or waits for it and then finds the restored table by name. The ledger's schema,
  `backout`, is never part of the archive, so it is not touched.
- `in-place`: `pg_restore --clean` into the live database in one transaction: the app waits
  for the whole restore. Chosen only when neither of the others is possible; the plan says so.

Every mode verifies the restored copy against the archive before the app sees it: every table
the archive holds data for is there with the archive's row count (counted while the archive
streamed by). A restore that fails leaves the live data as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg import sql

from backout.backups.archive import Archive, BlockFinder, scan_file
from backout.errors import BackoutError
from backout.output import human_bytes
from backout.rollback.database import pgtools, stream, streamed
from backout.storage.config import StorageSettings

MODES = ("database", "schema", "in-place")
LEDGER_SCHEMA = "backout"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
# Archive entries that live outside any schema and would clash with the live database's own when
# restored beside it.
GLOBAL_ENTRIES = ("EVENT TRIGGER", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
                  "SUBSCRIPTION", "FOREIGN DATA WRAPPER", "SERVER", "USER MAPPING", "CAST",
                  "PROCEDURAL LANGUAGE", "TRANSFORM", "ACCESS METHOD")
# Below this size the archive streams straight into one pg_restore; above it, with two cores or
# more, it decompresses into a file that the parallel restore reads as it grows (or, for an archive
# whose blocks cannot be found as it streams, once it is whole, for pg_restore -j).
PARALLEL_FROM = 32 * 1000 * 1000
# How long a verification waits for pg_restore's sessions' statistics before it counts the rows.
STATS_WAIT = 1.0
# How long the swap waits for sessions holding the live tables before it ends them.
BLOCKER_GRACE = 0.5
SWAP_LOCK_TIMEOUT = "10s"
PROGRESS_EVERY = 5.0

Progress = Callable[[str], None]


@dataclass
class Capabilities:
    role: str
    database: str
    superuser: bool
    createdb: bool
    owns_database: bool
    may_create_schema: bool


@dataclass
class Choice:
    mode: str
    reason: str
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason, "not_possible": self.problems}


def capabilities(conn: psycopg.Connection[Any]) -> Capabilities:
    row = pgtools.one(conn.execute(
        """SELECT current_user, current_database(), r.rolsuper, r.rolcreatedb,
                  pg_has_role(current_user, d.datdba, 'MEMBER'),
                  has_database_privilege(current_database(), 'CREATE')
           FROM pg_roles r, pg_database d
           WHERE r.rolname = current_user AND d.datname = current_database()"""
    ))
    return Capabilities(*row)


def choose(conn: psycopg.Connection[Any], *, ledger_here: bool, archive: Archive | None = None) -> Choice:
    """The first possible mode, why, and what ruled out the better ones."""
    caps = capabilities(conn)
    problems = []
    if ledger_here:
        problems.append("database swap: the ledger (schema backout) lives in this database, and renaming it "
                        "would cut backout's own connections; set BACKOUT_DATABASE_URL to another database to allow it")
    elif not (caps.superuser or caps.createdb):
        problems.append(f"database swap: role {caps.role} may not create databases")
    elif not (caps.superuser or caps.owns_database):
        problems.append(f"database swap: role {caps.role} does not own database {caps.database}")
    else:
        return Choice("database", f"role {caps.role} may create databases: restore into a new database, "
                                  "then swap the names", problems)
    schema = schema_problems(conn, caps, archive)
    if not schema:
        return Choice("schema", f"role {caps.role} owns the app's schemas: restore into new schemas in one "
                                "transaction, then swap the names", problems)
    problems += [f"schema swap: {p}" for p in schema]
    return Choice("in-place", "pg_restore --clean into the live database in one transaction: the app waits "
                              "for the whole restore (" + "; ".join(problems) + ")", problems)


def schema_problems(conn: psycopg.Connection[Any], caps: Capabilities, archive: Archive | None) -> list[str]:
    """What rules out a schema swap; [] when it is possible. Without the archive, the live
    schemas stand in for the archive's (the worker checks again with the archive)."""
    problems = []
    if not (caps.superuser or caps.may_create_schema):
        problems.append(f"role {caps.role} may not create schemas in {caps.database}")
    names = sorted(archive.schemas() - {LEDGER_SCHEMA}) if archive is not None else None
    rows = conn.execute(
        """SELECT n.nspname, pg_get_userbyid(n.nspowner), pg_has_role(current_user, n.nspowner, 'MEMBER')
           FROM pg_namespace n
           WHERE (%(names)s::text[] IS NULL AND n.nspname <> ALL(%(skip)s) AND n.nspname NOT LIKE 'pg\\_%%')
              OR n.nspname = ANY(%(names)s::text[])""",
        {"names": names, "skip": [LEDGER_SCHEMA, *SYSTEM_SCHEMAS]},
    ).fetchall()
    for name, owner, member in rows:
        if not (caps.superuser or member):
            problems.append(f"schema {name} belongs to {owner}, not to role {caps.role}")
    if archive is None:
        return problems
    if archive.blobs:
        problems.append("the archive holds large objects, which live outside schemas")
    clashing = sorted({e.desc for e in archive.entries if e.desc in GLOBAL_ENTRIES})
    if clashing:
        problems.append(f"the archive holds {', '.join(clashing)} entries, which live outside schemas")
    for name, schema, relocatable in _archive_extensions(conn, archive):
        if not relocatable:
            problems.append(f"extension {name} lives in schema {schema} and cannot be moved (not relocatable)")
        elif not _may_move_extension(conn, name):
            problems.append(f"extension {name} lives in schema {schema}, and role {caps.role} may not move it "
                            "(its objects belong to another role)")
    return problems


def _may_move_extension(conn: psycopg.Connection[Any], name: str) -> bool:
    """Whether this role may move the extension to another schema: tried, and rolled back."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE SCHEMA backout_probe")
            conn.execute(sql.SQL("ALTER EXTENSION {} SET SCHEMA backout_probe").format(sql.Identifier(name)))
        return True
    except psycopg.Error:
        return False


# ---------------------------------------------------------------------------------------------
# the restore


@dataclass
class Restore:
    """One restore of an archive into the database at `url`."""

    url: str = field(repr=False)
    backup: dict[str, Any]
    checkpoint_id: str
    key: str  # short and stable per rollback request: names of staging objects, so a retry finds them
    progress: Progress
    work_dir: Path
    jobs: int | None = None  # pg_restore -j for the database mode; None chooses by size and cores
    storage: StorageSettings = field(default_factory=StorageSettings)  # where stored archives are read from
    source: stream.Source = field(init=False)
    dbname: str = field(init=False)
    superuser: bool = field(init=False)

    def run(self, mode: str, archive_toc: Archive) -> dict[str, Any]:
        """Restore in `mode` (see `choose`), verify, swap; what was done, for the ledger."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}")
        self.source = stream.locate(self.backup, self.storage)
        self.source.check()
        with pgtools.connect(self.url, "the app's database") as conn:
            self.superuser = capabilities(conn).superuser
            self.dbname = pgtools.one(conn.execute("SELECT current_database()"))[0]
        started = time.monotonic()
        # Checkpoints record each table's rows as they are taken; older ones are counted as they stream.
        counted = stream.recorded(self.backup, archive_toc)
        if mode == "database":
            result = self._database(counted, archive_toc)
        else:
            result = self._streaming(mode, archive_toc, counted)
        result.update(mode=mode, seconds=round(time.monotonic() - started, 3))
        return result

    # --- database mode -----------------------------------------------------------------------

    def _database(self, counted: Archive | None, toc: Archive) -> dict[str, Any]:
        new = _name(self.dbname, "_restore_" + self.key)
        admin_url = maintenance_url(self.url)
        new_url = pgtools.with_database(self.url, new)
        jobs = self._jobs()
        temp = self.work_dir / f".restore-{self.key}.dump"
        # A parallel restore needs the archive decompressed into a file: that starts first, and the
        # new database is made and its schema restored while it runs.
        decompression = None
        if jobs > 1:
            self.progress(f"restore: decompressing into {temp} for pg_restore -j{jobs}")
            decompression = stream.Decompression(self.source, self.backup, temp, self.progress)
        try:
            with pgtools.connect(admin_url, "the maintenance database") as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new)))
                _create_like(admin, self.dbname, new)
                swapped = False
                try:
                    if decompression is None:
                        archive = self._load_streaming(new_url, new, counted)
                    elif counted is not None and BlockFinder.works_for(toc):
                        archive = self._load_overlapped(new_url, new, counted, decompression, temp, jobs)
                    else:
                        archive = self._load_parallel(new_url, new, counted, decompression, temp, jobs)
                    self.progress(f"restore: verifying {len(archive.table_data())} tables in {new}")
                    counts = verify_fresh(new_url, archive, max(2, jobs))
                    kept = _unused_database_name(admin, _name(self.dbname, "_before_" + self.checkpoint_id.lower()))
                    # The restore's sessions commit without waiting for the disk: a commit that does
                    # wait puts their last writes on disk now, not during the swap.
                    admin.execute("SELECT txid_current()")
                    self.progress(f"restore: verified; swapping {self.dbname} -> {kept} and {new} -> {self.dbname}")
                    swap = swap_databases(admin, self.dbname, new, kept)
                    swapped = True
                finally:
                    if not swapped:
                        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new)))
        finally:
            if decompression is not None:
                decompression.stop()
            temp.unlink(missing_ok=True)
        self.progress(f"restore: {self.dbname} is the restored copy; the old one is kept as {kept} "
                      f"(the app was cut off for {swap['seconds']:.3f}s)")
        return {"tables": counts, "kept": {"database": kept}, "swap": swap, "jobs": jobs,
                "archive_bytes": self.backup.get("dump_size")}

    def _jobs(self) -> int:
        """pg_restore's jobs: one (streaming) for a small archive or too little disk for a copy."""
        size = self.backup.get("dump_size") or 0
        jobs = self.jobs or (min(os.cpu_count() or 1, 4) if size >= PARALLEL_FROM else 1)
        if jobs > 1:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            needed = int(size * 1.05)
            if pgtools.free_bytes(self.work_dir) < needed:
                self.progress(f"restore: not {human_bytes(needed)} free in {self.work_dir} for a parallel restore; "
                              "streaming with one job instead")
                return 1
        return jobs

    def _restore_argv(self, new_url: str) -> tuple[list[str], dict[str, Any]]:
        conninfo, env = pgtools.child_env(new_url)
        # Nobody sees the new database before the swap, which commits (and so flushes) after it:
        # its sessions need not wait for each commit to reach the disk.
        env["PGOPTIONS"] = " ".join(filter(None, [env.get("PGOPTIONS"), "-c synchronous_commit=off"]))
        return [pgtools.program("pg_restore"), "--exit-on-error", *self._owner_flags(), f"--dbname={conninfo}"], env

    def _load_streaming(self, new_url: str, new: str, counted: Archive | None) -> Archive:
        argv, env = self._restore_argv(new_url)
        self.progress(f"restore: pg_restore into {new}, streaming the archive")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        return self._feed(proc, env, counted)

    def _load_overlapped(self, new_url: str, new: str, counted: Archive, decompression: stream.Decompression,
                         temp: Path, jobs: int) -> Archive:
        """Each table loaded as soon as its rows decompress (see `streamed`); the rows were counted
        when the checkpoint was taken."""
        argv, env = self._restore_argv(new_url)
        decompression.toc.wait()
        if decompression.archive is None:
            decompression.result()  # raises what stopped it before the table of contents was whole
            raise BackoutError(f"the archive {self.source.name} ends inside its table of contents")
        self.progress(f"restore: schema into {new} while the archive decompresses")
        self._run_restore([*argv, "--section=pre-data", str(temp)], env)
        self.progress(f"restore: {len(counted.table_data())} tables into {new} as they decompress, {jobs} at a time")
        streamed.Load(decompression, temp, argv, env, jobs, self.progress,
                      lambda: _report_size(new_url, self.progress)).run(decompression.archive)
        return counted

    def _load_parallel(self, new_url: str, new: str, counted: Archive | None,
                       decompression: stream.Decompression, temp: Path, jobs: int) -> Archive:
        argv, env = self._restore_argv(new_url)
        decompression.toc.wait()
        if decompression.error is None:
            # The schema needs only the table of contents: it is restored while the rest decompresses.
            self.progress(f"restore: schema into {new} while the archive decompresses")
            self._run_restore([*argv, "--section=pre-data", str(temp)], env)
        decompression.result()
        self.progress(f"restore: pg_restore -j{jobs} into {new}")
        proc = subprocess.Popen([*argv, f"--jobs={jobs}", "--section=data", "--section=post-data", str(temp)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None  # Popen's pipes exist: PIPE was asked for
        errors = pgtools.Drain(proc.stderr)
        # Rows the checkpoint did not record are counted from the file while pg_restore runs.
        counting = None if counted else _Background(lambda: scan_file(str(temp)))
        _wait_reporting(proc, new_url, self.progress)
        if proc.returncode != 0:
            raise BackoutError(f"pg_restore failed (exit status {proc.returncode}): "
                               f"{errors.last_error(pgtools.secrets_of(env))}")
        if counting is not None:
            return counting.result()
        assert counted is not None
        return counted

    def _run_restore(self, argv: list[str], env: dict[str, Any]) -> None:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        assert proc.stderr is not None  # Popen's pipes exist: PIPE was asked for
        errors = pgtools.Drain(proc.stderr)
        if proc.wait() != 0:
            raise BackoutError(f"pg_restore failed (exit status {proc.returncode}): "
                               f"{errors.last_error(pgtools.secrets_of(env))}")

    def _feed(self, proc: subprocess.Popen, env: dict[str, Any], counted: Archive | None) -> Archive:
        return feed(proc, env, self.source, self.backup, self.progress, counted)

    def _owner_flags(self) -> list[str]:
        # Only a superuser can give objects to other roles; anyone else restores them as their own.
        return [] if self.superuser else ["--no-owner"]

    # --- schema and in-place modes: one transaction through psql ------------------------------

    def _streaming(self, mode: str, toc: Archive, counted: Archive | None) -> dict[str, Any]:
        with pgtools.connect(self.url, "the app's database") as conn:
            plan = _SchemaPlan.make(conn, toc, self.key, self.checkpoint_id, self.superuser) if mode == "schema" else None
        appname = f"backout-restore-{self.key}"
        conninfo, env = pgtools.child_env(self.url, {"PGAPPNAME": appname})
        with tempfile.TemporaryDirectory(prefix="backout-restore-") as tmp:
            prelude, postlude, use_list = Path(tmp, "prelude.sql"), Path(tmp, "postlude.sql"), Path(tmp, "list")
            prelude.write_text(plan.prelude() if plan else "")
            restore_argv = [pgtools.program("pg_restore"), "--file=-", *self._owner_flags()]
            if plan:
                use_list.write_text("".join(f"{e.dump_id};\n" for e in toc.entries if e.desc != "SCHEMA"))
                restore_argv.append(f"--use-list={use_list}")
            else:
                restore_argv += ["--clean", "--if-exists"]
            psql_argv = [pgtools.program("psql"), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                         "--single-transaction", f"--file={prelude}", "--file=-", f"--file={postlude}",
                         f"--dbname={conninfo}"]
            where = "new schemas" if plan else "the live database (in place)"
            self.progress(f"restore: pg_restore into {where}, one transaction")
            restore = subprocess.Popen(restore_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
            psql = subprocess.Popen(psql_argv, stdin=restore.stdout, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env)
            assert restore.stdin and restore.stdout and restore.stderr and psql.stderr  # Popen's pipes exist: PIPE was asked for
            restore.stdout.close()
            restore_errors, psql_errors = pgtools.Drain(restore.stderr), pgtools.Drain(psql.stderr)
            # In place, the restore drops the live tables: sessions holding them are ended.
            watcher = BlockerWatcher(self.url, appname, grace=BLOCKER_GRACE) if plan is None else None
            archive = None
            try:
                try:
                    archive = stream.pump(self.source, self.backup, restore.stdin.write, self.progress, counted=counted)
                    # psql reads the postlude only after pg_restore's whole output: write it now that
                    # the archive's row counts are known.
                    postlude.write_text(verify_sql(archive, plan.restored_names if plan else {})
                                        + (plan.postlude() if plan else ""))
                    restore.stdin.close()
                except BrokenPipeError:
                    pass
                restore_status, psql_status = restore.wait(), psql.wait()
            except BaseException:
                pgtools.stop(restore)
                pgtools.stop(psql)
                raise
            finally:
                if watcher is not None:
                    watcher.stop()
            secrets = pgtools.secrets_of(env)
            if psql_status != 0:
                raise BackoutError(f"the restore was rolled back, the database is as it was: "
                                   f"{psql_errors.last_error(secrets)}")
            if restore_status != 0 or archive is None:
                raise BackoutError(f"pg_restore failed (exit status {restore_status}), the database is as it "
                                   f"was: {restore_errors.last_error(secrets)}")
        counts = archive.row_counts() or {}
        result: dict[str, Any] = {"tables": counts, "ended_sessions": watcher.ended if watcher else 0,
                        "archive_bytes": self.backup.get("dump_size")}
        if plan is None:
            self.progress(f"restore: restored in place and verified, {len(counts)} tables")
            return result
        self.progress(f"restore: verified in new schemas ({', '.join(plan.staging.values())}); swapping")
        swap = swap_schemas(self.url, plan, self.key)
        self.progress(f"restore: swapped; the old schemas are kept as {', '.join(swap['kept'].values())} "
                      f"(the app waited {swap['seconds']:.3f}s)")
        result.update(kept={"schemas": swap["kept"]}, swap=swap)
        return result


def feed(proc: subprocess.Popen, env: dict[str, Any], source: stream.Source, backup: dict[str, Any], progress: Progress,
         counted: Archive | None = None) -> Archive:
    """Stream the archive into a pg_restore reading its stdin; the archive with its rows (as
    `counted` already, or as scanned on the way)."""
    assert proc.stdin is not None and proc.stderr is not None  # Popen's pipes exist: PIPE was asked for
    errors = pgtools.Drain(proc.stderr)
    try:
        archive = stream.pump(source, backup, proc.stdin.write, progress, counted=counted)
        proc.stdin.close()
    except BrokenPipeError:
        archive = None
    except BaseException:
        pgtools.stop(proc)
        raise
    status = proc.wait()
    if status != 0 or archive is None:
        raise BackoutError(f"pg_restore failed (exit status {status}): {errors.last_error(pgtools.secrets_of(env))}")
    return archive


def request_key(request_id: str) -> str:
    """Eight hex digits, the same for every run of one request."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# schema mode


@dataclass
class _SchemaPlan:
    schemas: list[str]  # the archive's schemas, in a stable order
    live: set[str]  # those that exist in the live database now
    staging: dict[str, str]  # schema -> where the restored one waits
    aside: dict[str, str]  # schema -> where the live one waits during the restore
    kept: dict[str, str]  # schema -> the live one's name after the swap
    create: dict[str, str]  # schema -> the SQL that makes its empty stand-in
    extensions: list[tuple[str, str]]  # (extension, schema) of the archive's that live in a live schema

    @property
    def restored_names(self) -> dict[str, str]:
        return {s: s for s in self.schemas}

    @classmethod
    def make(cls, conn: psycopg.Connection[Any], toc: Archive, key: str, checkpoint_id: str, superuser: bool) -> _SchemaPlan:
        schemas = sorted(toc.schemas() - {LEDGER_SCHEMA})
        live = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [schemas])}
        taken = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        owners = {e.tag: e.owner for e in toc.entries if e.desc == "SCHEMA"}
        create = {}
        for s in schemas:
            statements = [f"CREATE SCHEMA {pgtools.quoted(s)};"]
            if s in owners:  # the archive's own: its owner (when we may give it) and ACL entries apply
                if (owner := owners[s]) and superuser:
                    statements.append(f"ALTER SCHEMA {pgtools.quoted(s)} OWNER TO {pgtools.quoted(owner)};")
            elif s in live:  # `public`, which pg_dump does not create: as the live one is
                statements += _copy_schema_owner_and_acl(conn, s)
            create[s] = "\n".join(statements)
        kept = {}
        for s in schemas:
            if s in live:
                kept[s] = _unused(taken, _name(s, "_before_" + checkpoint_id.lower()))
                taken.add(kept[s])
        extensions = [(name, schema) for name, schema, _ in _archive_extensions(conn, toc) if schema in live]
        return cls(schemas=schemas, live=live, staging={s: _name(s, "_restore_" + key) for s in schemas},
                   aside={s: _name(s, "_live_" + key) for s in schemas if s in live}, kept=kept,
                   create=create, extensions=extensions)

    def prelude(self) -> str:
        q = pgtools.quoted
        lines = [f"DROP SCHEMA IF EXISTS {q(self.staging[s])} CASCADE;" for s in self.schemas]
        lines += [f"ALTER SCHEMA {q(s)} RENAME TO {q(self.aside[s])};" for s in self.schemas if s in self.live]
        lines += [self.create[s] for s in self.schemas]
        # The archive's CREATE EXTENSION IF NOT EXISTS finds them installed; move them in beside the
        # restored objects so that those bind to them.
        lines += [f"ALTER EXTENSION {q(e)} SET SCHEMA {q(s)};" for e, s in self.extensions]
        return "\n".join(lines) + "\n"

    def postlude(self) -> str:
        q = pgtools.quoted
        lines = [f"ALTER SCHEMA {q(s)} RENAME TO {q(self.staging[s])};" for s in self.schemas]
        lines += [f"ALTER SCHEMA {q(self.aside[s])} RENAME TO {q(s)};" for s in self.schemas if s in self.live]
        lines += [f"ALTER EXTENSION {q(e)} SET SCHEMA {q(s)};" for e, s in self.extensions]
        return "\n".join(lines) + "\n"


def swap_schemas(url: str, plan: _SchemaPlan, key: str) -> dict[str, Any]:
    """Live schemas -> kept names and restored -> live names, in one transaction, after taking the
    live tables' locks (sessions holding them past BLOCKER_GRACE are ended). Returns the names
    kept and how long the app's queries waited on it."""
    appname = f"backout-swap-{key}"
    conn = pgtools.connect(url, "the app's database", autocommit=False)
    watcher = None
    try:
        conn.execute("SELECT set_config('application_name', %s, false)", [appname])
        live = sorted(plan.live)
        tables = [r[0] for r in conn.execute(
            """SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1""", [live])]
        conn.commit()
        watcher = BlockerWatcher(url, appname, grace=BLOCKER_GRACE)
        started = time.monotonic()
        conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        if tables:
            conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        q = sql.Identifier
        for s in live:
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(q(s), q(plan.kept[s])))
        for s in plan.schemas:
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(q(plan.staging[s]), q(s)))
        for extension, schema in plan.extensions:
            conn.execute(sql.SQL("ALTER EXTENSION {} SET SCHEMA {}").format(q(extension), q(schema)))
        conn.commit()
        finished = time.monotonic()
    except psycopg.errors.LockNotAvailable:
        conn.rollback()
        raise BackoutError("the swap could not take the live tables' locks within "
                           f"{SWAP_LOCK_TIMEOUT}; nothing was swapped, the restored copy waits in "
                           f"{', '.join(plan.staging.values())}") from None
    finally:
        if watcher is not None:
            watcher.stop()
        conn.close()
    return {"kept": {s: plan.kept[s] for s in live}, "seconds": round(finished - started, 4),
            "lock_wait_seconds": round(locked - started, 4), "ended_sessions": watcher.ended if watcher else 0}


# ---------------------------------------------------------------------------------------------
# database mode


def swap_databases(admin: psycopg.Connection[Any], old: str, new: str, kept: str) -> dict[str, Any]:
    """old -> kept and new -> old, with connections to old ended and refused meanwhile; returns
    how long the database was unavailable to the app."""
    q = sql.Identifier
    started = time.monotonic()
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(q(old)))
    renamed = False
    ended = 0
    try:
        for _ in range(100):
            try:
                ended += sum(1 for (ok,) in admin.execute(
                    "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", [old]) if ok)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise BackoutError(f"cannot end the sessions connected to {old}: {exc.diag.message_primary}") from None
            try:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(q(old), q(kept)))
                renamed = True
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.01)
        if not renamed:
            raise BackoutError(f"sessions kept connecting to {old}; nothing was swapped")
        admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(q(new), q(old)))
        finished = time.monotonic()
    except BaseException:
        if renamed:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(q(kept), q(old)))
            renamed = False
        raise
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(q(kept if renamed else old)))
    return {"seconds": round(finished - started, 4), "ended_sessions": ended}


def _create_like(admin: psycopg.Connection[Any], old: str, new: str) -> None:
    """An empty database with the live one's owner, encoding, locale, limit, settings and grants."""
    oid, owner, encoding, collate, ctype, provider, icu, limit, member = pgtools.one(admin.execute(
        """SELECT d.oid, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
                  d.datlocprovider, d.daticulocale, d.datconnlimit, pg_has_role(current_user, d.datdba, 'MEMBER')
           FROM pg_database d WHERE d.datname = %s""", [old]))
    options = [sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} CONNECTION LIMIT {}").format(
        sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype), sql.Literal(limit))]
    if provider == "i":
        options.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu)))
    if member:
        options.append(sql.SQL("OWNER {}").format(sql.Identifier(owner)))
    admin.execute(sql.SQL("CREATE DATABASE {} WITH ").format(sql.Identifier(new)) + sql.SQL(" ").join(options))
    for (settings,) in admin.execute(
            "SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = %s AND setrole = 0", [oid]).fetchall():
        for setting in settings or []:
            name, _, value = setting.partition("=")
            values = [v.strip().strip('"') for v in value.split(",")] if name in _LIST_SETTINGS else [value]
            admin.execute(sql.SQL("ALTER DATABASE {} SET {} TO {}").format(
                sql.Identifier(new), sql.Identifier(name), sql.SQL(", ").join(map(sql.Literal, values))))
    for grantee, privilege, grantable in admin.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,
                      a.is_grantable
               FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s AND a.grantee <> d.datdba""",
            [old]).fetchall():
        admin.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(privilege), sql.Identifier(new), sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))


_LIST_SETTINGS = ("search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries")


def maintenance_url(url: str) -> str:
    """A database to run CREATE/ALTER DATABASE from: `postgres`, else `template1`."""
    for name in ("postgres", "template1"):
        candidate = pgtools.with_database(url, name)
        try:
            with psycopg.connect(candidate, connect_timeout=10):
                return candidate
        except psycopg.OperationalError:
            continue
    raise BackoutError("cannot connect to the postgres or template1 database of the server, which a swap of "
                       "databases is made from")


def _unused_database_name(admin: psycopg.Connection[Any], wanted: str) -> str:
    taken = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    return _unused(taken, wanted)


def _wait_reporting(proc: subprocess.Popen, url: str, progress: Progress) -> None:
    """Wait for pg_restore -j, saying every few seconds how much the new database holds."""
    while True:
        try:
            proc.wait(PROGRESS_EVERY)
            return
        except subprocess.TimeoutExpired:
            _report_size(url, progress)


def _report_size(url: str, progress: Progress) -> None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            size = pgtools.one(conn.execute("SELECT pg_database_size(current_database())"))[0]
        progress(f"restore: {human_bytes(size)} restored so far")
    except psycopg.Error:
        pass


# ---------------------------------------------------------------------------------------------
# verification


def verify_sql(archive: Archive, names: dict[str, str]) -> str:
    """A DO block that fails the transaction unless every table the archive holds data for exists
    with the archive's row count. `names` maps archive schemas to where they are now."""
    counts = archive.row_counts()
    if counts is None:
        raise BackoutError("the archive's rows could not be counted (not written by backout's pg_dump?)")
    lines = ["DO $backout_verify$", "DECLARE n bigint;", "BEGIN"]
    for entry in archive.table_data():
        table = f"{pgtools.quoted(names.get(entry.namespace or '', entry.namespace or ''))}.{pgtools.quoted(entry.tag)}"
        expected = counts[entry.qualified]
        label = entry.qualified.replace("'", "''")
        lines.append(f"  SELECT count(*) INTO n FROM {table};")
        lines.append(f"  IF n <> {expected} THEN RAISE EXCEPTION 'verification failed: % has % rows, the archive %', "
                     f"'{label}', n, {expected}; END IF;")
    lines += ["END", "$backout_verify$;", ""]
    return "\n".join(lines)


def verify_counts(url: str, archive: Archive, names: dict[str, str], workers: int = 2) -> dict[str, int]:
    """Every table the archive holds data for, counted in the copy at `url`; BackoutError naming
    the first that is missing or has another row count than the archive."""
    expected = archive.row_counts()
    if expected is None:
        raise BackoutError("the archive's rows could not be counted (not written by backout's pg_dump?)")
    entries = archive.table_data()

    def count(part: list) -> dict[str, int]:
        found = {}
        with pgtools.connect(url, "the restored database") as conn:
            for entry in part:
                schema = names.get(entry.namespace or "", entry.namespace or "")
                try:
                    found[entry.qualified] = pgtools.one(conn.execute(
                        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(entry.tag))
                    ))[0]
                except psycopg.errors.UndefinedTable:
                    raise BackoutError(f"verification failed: table {entry.qualified} is missing from the restored copy") from None
        return found

    parts = [entries[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        found = {k: v for part in pool.map(count, parts) for k, v in part.items()}
    for name, rows in expected.items():
        if found.get(name) != rows:
            raise BackoutError(f"verification failed: {name} has {found.get(name)} rows, the archive {rows}")
    return found


def verify_fresh(url: str, archive: Archive, workers: int = 2) -> dict[str, int]:
    """`verify_counts` for a database that only the restore has written to: its statistics already
    say how many rows each table took and holds (pg_restore's sessions report them as they end),
    so the tables need not be read again. Counts them when the statistics do not agree (or are
    off, or late)."""
    expected = archive.row_counts()
    if expected is None:
        raise BackoutError("the archive's rows could not be counted (not written by backout's pg_dump?)")
    deadline = time.monotonic() + STATS_WAIT
    with pgtools.connect(url, "the restored database") as conn:
        while True:
            found = {f"{schema}.{table}": (inserted, live) for schema, table, inserted, live in conn.execute(
                "SELECT schemaname, relname, n_tup_ins, n_live_tup FROM pg_stat_user_tables").fetchall()}
            if all(found.get(name) == (rows, rows) for name, rows in expected.items()):
                return dict(expected)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
            conn.execute("SELECT pg_stat_clear_snapshot()")
    return verify_counts(url, archive, {}, workers)


class _Background(threading.Thread):
    """A function run on a thread; `result()` waits for it and returns or raises what it did."""

    def __init__(self, fn: Callable[[], Archive]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.value: Archive | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self.error = exc

    def result(self) -> Archive:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class BlockerWatcher:
    """While a restore or swap waits on a lock, end the sessions holding it once they have kept it
    for `grace` seconds: the app's in-flight transactions, which the restore is about to make
    pointless anyway. The waiting session is found by its application_name."""

    def __init__(self, url: str, appname: str, grace: float) -> None:
        self.url = url
        self.appname = appname
        self.grace = grace
        self.ended = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backout-blockers")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error:
            return
        waiting_since: float | None = None
        with conn:
            while not self._stop.wait(0.05):
                try:
                    blockers = conn.execute(
                        """SELECT DISTINCT b.pid FROM pg_stat_activity w, unnest(pg_blocking_pids(w.pid)) AS b(pid)
                           WHERE w.application_name = %s AND w.wait_event_type = 'Lock'""",
                        [self.appname]).fetchall()
                    if not blockers:
                        waiting_since = None
                        continue
                    waiting_since = waiting_since or time.monotonic()
                    if time.monotonic() - waiting_since >= self.grace:
                        for (pid,) in blockers:
                            if pgtools.one(conn.execute("SELECT pg_terminate_backend(%s)", [pid]))[0]:
                                self.ended += 1
                except psycopg.Error:
                    continue


# ---------------------------------------------------------------------------------------------
# helpers


_WITH_SCHEMA = re.compile(r'WITH SCHEMA ("(?:[^"]|"")+"|[^\s;]+)', re.I)


def _archive_extensions(conn: psycopg.Connection[Any], toc: Archive) -> list[tuple[str, str, bool]]:
    """(name, schema it lives in now, relocatable) of the archive's extensions installed here, for
    those installed in one of the archive's schemas."""
    wanted = {}
    for entry in toc.entries:
        if entry.desc == "EXTENSION":
            found = _WITH_SCHEMA.search(entry.defn or "")
            if found:
                schema = found[1]
                wanted[entry.tag] = schema[1:-1].replace('""', '"') if schema.startswith('"') else schema
    if not wanted:
        return []
    rows = conn.execute(
        "SELECT e.extname, n.nspname, e.extrelocatable FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = ANY(%s)", [list(wanted)]).fetchall()
    return [(name, schema, relocatable) for name, schema, relocatable in rows if schema == wanted[name]]


def _copy_schema_owner_and_acl(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """The statements that give a new schema the live one's owner, comment and grants (for
    `public`, which pg_dump leaves to the database to create)."""
    owner, member, comment = pgtools.one(conn.execute(
        "SELECT pg_get_userbyid(nspowner), pg_has_role(current_user, nspowner, 'MEMBER'),"
        " obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", [schema]))
    q = pgtools.quoted
    statements = [f"ALTER SCHEMA {q(schema)} OWNER TO {q(owner)};"] if member else []
    if comment is not None:
        statements.append(f"COMMENT ON SCHEMA {q(schema)} IS {_literal(comment)};")
    for grantee, privilege, grantable in conn.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,
                      a.is_grantable
               FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = %s AND a.grantee <> n.nspowner""",
            [schema]).fetchall():
        statements.append(f"GRANT {privilege} ON SCHEMA {q(schema)} TO {q(grantee) if grantee else 'PUBLIC'}"
                          + (" WITH GRANT OPTION;" if grantable else ";"))
    return statements


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _name(base: str, suffix: str) -> str:
    """base + suffix within PostgreSQL's 63-byte identifiers (the suffix is kept whole)."""
    room = 63 - len(suffix.encode())
    trimmed = base.encode()[:room].decode("utf-8", "ignore")
    return trimmed + suffix


def _unused(taken: set[str], wanted: str) -> str:
    if wanted not in taken:
        return wanted
    n = 2
    while _name(wanted, f"_{n}") in taken:
        n += 1
    return _name(wanted, f"_{n}")

