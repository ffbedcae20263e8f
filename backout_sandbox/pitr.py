"""A private PostgreSQL cluster that can give back any database as it was at any moment.

Heroku Postgres standard plans restore a database "as of" a time from a base backup plus the
archived write-ahead log; the sandbox does the same for real. The cluster archives every WAL
segment (basic_archive) and keeps physical base backups (pg_basebackup). `restore_to` copies the
newest base backup that ended before the target time into a throwaway data directory, replays the
archive up to the target with `recovery_target_time`, and copies the one database it needs out of
that throwaway server into a new database of the main cluster.

Layout under `root`: data/ (the cluster), archive/ (WAL segments), base/<stamp>/ (base backups,
each with backup.json), restores/<id>/ (throwaway recovery clusters), postgres.log, cluster.json
(the port), .lock (one process drives a cluster at a time).

PostgreSQL refuses to run as root, so when we are root the server processes run as the `postgres`
OS user and the directories under root belong to it.

Like most throwaway test databases it runs without fsync (and takes base backups without it):
everything survives a crash or kill of its processes, since the data sits in the kernel's page
cache, but not a crash of the machine itself; after one, delete the directory. fsyncs are what
made every checkpoint and base backup slow on a machine busy with other tests.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backout_sandbox.core.errors import SandboxError

log = logging.getLogger(__name__)

SERVER_OS_USER = "postgres"
SUPERUSER = "postgres"
# Small segments: every restore switches to a fresh segment so that its target is archived, and a
# 1 MB segment costs a sixteenth of the default's disk and copy time.
WAL_SEGMENT_MB = 1
# WAL written since the newest base backup beyond which a new one is taken, so replay stays short.
BASE_BACKUP_EVERY_BYTES = 32 * 1024 * 1024
KEEP_RECENT_BACKUPS = 2
START_TIMEOUT = 60
RECOVERY_TIMEOUT = 600
ARCHIVE_TIMEOUT = 60

_HBA = """\
# backout sandbox: trust on loopback and on the private socket directory only
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


def server_bindir() -> Path:
    """Where initdb, pg_ctl and the matching client tools live: next to `initdb` on PATH, else the
    newest /usr/lib/postgresql/N/bin (Debian keeps server binaries off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not versions:
        raise SandboxError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql "
                           "(scripts/setup) or put its bin directory on PATH")
    return max(versions, key=lambda bindir: int(bindir.parent.name))


class PitrCluster:
    """A point-in-time-recoverable PostgreSQL cluster on 127.0.0.1, kept under `root`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root).absolute()
        self.data = self.root / "data"
        self.archive = self.root / "archive"
        self.base_backups = self.root / "base"
        self.restores = self.root / "restores"
        self.port: int | None = port
        self._requested_port = port
        self._bin = server_bindir()
        self._server_user = _server_user()
        self._lock_fd: int | None = None
        self._running = False
        self._backup_lock = threading.Lock()  # held while a base backup is copied or pruned
        self._refresh_lock = threading.Lock()  # one base backup at a time
        self._refresher: threading.Thread | None = None
        self._active_restores: set[Path] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Creates the cluster on first use, starts it, and makes sure a base backup exists.
        Calling it on a running cluster does nothing; a server left running by a crashed earlier
        process is shut down first, and a stale postmaster.pid is removed."""
        if self._running and self._postmaster_pid(self.data) is not None:
            return
        started = time.monotonic()
        self._acquire_lock()
        self._wait_for_refresh()
        try:
            self._prepare_root()
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            self._stop_leftovers(self.data)
            self._remove_stale_work()
            self.port = self._choose_port()
            self._pg_ctl_start(self.data, self.root / "postgres.log", self.port)
            self._running = True
            atexit.register(self.stop)
            self._refresh_base_backup_if_due()
            log.info("PITR cluster in %s up on port %d in %.2fs", self.root, self.port, time.monotonic() - started)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the cluster and any recovery cluster still running. Does nothing when another
        process is driving this cluster."""
        if self._lock_fd is None and not self._try_lock():
            return
        self._wait_for_refresh()
        for datadir in list(self._active_restores):
            self._stop_leftovers(datadir, immediate=True)
        if self.data.exists() and self._postmaster_pid(self.data) is not None:
            try:
                self._run([self._tool("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w",
                           "-t", str(START_TIMEOUT)], as_server=True, what="pg_ctl stop")
            except SandboxError as exc:
                log.warning("%s; killing the server's processes", exc)
        self._stop_leftovers(self.data)
        self._running = False
        atexit.unregister(self.stop)
        self._release_lock()

    # -- URLs and databases ------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """The URL of database `dbname` in this cluster."""
        if self.port is None:
            raise SandboxError(f"the PITR cluster in {self.root} has no port yet; start() it first")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def admin_url(self) -> str:
        return self.url("postgres")

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its URL; ValueError if the name is taken."""
        self._require_running()
        _check_db_name(name)
        with self._connect("postgres") as conn:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except pg_errors.DuplicateDatabase:
                raise ValueError(f"database {name!r} already exists in the sandbox cluster; choose another name") from None
        return self.url(name)

    # -- point-in-time recovery --------------------------------------------------------------

    def earliest_recoverable(self) -> datetime:
        """The end of the first base backup (UTC): no earlier moment can be restored."""
        backups = self._backups()
        if not backups:
            raise SandboxError(f"the PITR cluster in {self.root} has no base backup yet; start() it first")
        return backups[0][0]

    def restore_to(self, source_db: str, when: datetime, new_db: str) -> str:
        """Creates `new_db` holding `source_db`'s content as of `when` (transactions committed at
        or before `when`) and returns its URL. ValueError, with nothing created, when `when` is
        naive, before earliest_recoverable(), or in the future, when `new_db` exists, or when
        `source_db` did not exist at `when`."""
        when = self._check_restore(source_db, when, new_db)
        laps = [("", time.monotonic())]
        self._archive_past(when)
        laps.append(("archiving", time.monotonic()))
        work = self.restores / uuid.uuid4().hex[:12]
        work.mkdir()
        self._own(work)
        sockets = Path(tempfile.mkdtemp(prefix="backout-pitr-", dir="/tmp"))
        self._own(sockets)
        self._active_restores.add(work / "data")
        try:
            with self._backup_lock:  # so that the backup is not pruned while it is copied
                backup_end, _, backup = [b for b in self._backups() if b[0] <= when][-1]
                self._run(["cp", "-a", "--reflink=auto", str(backup / "data"), str(work / "data")], as_server=True,
                          what="copying the base backup")
            laps.append(("copying the base backup", time.monotonic()))
            self._recover(work, sockets, when)
            laps.append(("replaying WAL", time.monotonic()))
            self._copy_database(sockets, source_db, when, new_db)
            laps.append(("dump and restore", time.monotonic()))
        finally:
            self._stop_leftovers(work / "data", immediate=True)
            self._active_restores.discard(work / "data")
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(sockets, ignore_errors=True)
        laps.append(("clean-up", time.monotonic()))
        log.info("restored %s as of %s into %s in %.2fs (%s; base backup ended %s)", source_db, when.isoformat(),
                 new_db, laps[-1][1] - laps[0][1],
                 ", ".join(f"{name} {end - begin:.2f}s" for (_, begin), (name, end) in zip(laps, laps[1:])),
                 backup_end.isoformat())
        self._refresh_in_background()
        return self.url(new_db)

    def _check_restore(self, source_db: str, when: datetime, new_db: str) -> datetime:
        """The restore time in UTC, once the request is known to be possible."""
        self._require_running()
        _check_db_name(source_db)
        _check_db_name(new_db)
        if not isinstance(when, datetime) or when.utcoffset() is None:
            raise ValueError(f"restore time must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), got {when!r}")
        when = when.astimezone(timezone.utc)
        earliest = self.earliest_recoverable()
        if when < earliest:
            raise ValueError(f"cannot restore to {when.isoformat()}: the earliest recoverable time is "
                             f"{earliest.isoformat()}; choose a time at or after it")
        with self._connect("postgres") as conn:
            now = _clock(conn)
            if when > now:
                raise ValueError(f"cannot restore to {when.isoformat()}: it is in the future (the cluster's "
                                 f"clock says {now.isoformat()}); choose a time at or before now")
            if _database_exists(conn, new_db):
                raise ValueError(f"database {new_db!r} already exists in the sandbox cluster; choose another name")
        return when

    def _archive_past(self, when: datetime) -> None:
        """Makes sure the archive holds a commit later than `when`: recovery stops at the first
        commit after its target and fails if it reaches the end of the WAL without seeing one."""
        with self._connect("postgres") as conn:
            while _clock(conn) <= when:
                time.sleep(0.001)
            with conn.transaction():
                # An assigned transaction id makes the commit write a timestamped commit record.
                conn.execute("SELECT pg_current_xact_id()")
            segment = _value(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())"))
            conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + ARCHIVE_TIMEOUT
            while not (self.archive / segment).exists():
                if time.monotonic() > deadline:
                    failed = conn.execute("SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
                    raise SandboxError(f"WAL segment {segment} was not archived within {ARCHIVE_TIMEOUT}s "
                                       f"(last failure: {failed}); see {self.root / 'postgres.log'}")
                time.sleep(0.01)

    def _recover(self, work: Path, sockets: Path, when: datetime) -> None:
        """Starts the copy of a base backup in `work`/data so that it replays the archive up to
        `when` and then promotes itself. It listens only on a socket in `sockets`, never on TCP."""
        datadir = work / "data"
        restore_command = f"cp {shlex.quote(str(self.archive)).replace('%', '%%')}/%f %p"
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(sockets),
            "archive_mode": "off",  # its new timeline must never reach the main archive
            "restore_command": restore_command,
            "recovery_target_time": when.isoformat(sep=" "),
            "recovery_target_action": "promote",
        }
        with open(datadir / "postgresql.auto.conf", "a") as conf:
            conf.write("".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items()))
        (datadir / "recovery.signal").touch()
        self._own(datadir / "recovery.signal")
        logfile = work / "postgres.log"
        self._pg_ctl_start(datadir, logfile, self._port(), timeout=RECOVERY_TIMEOUT)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            try:
                with psycopg.connect(host=str(sockets), port=self._port(), user=SUPERUSER, dbname="postgres",
                                     autocommit=True, connect_timeout=5) as conn:
                    while _value(conn.execute("SELECT pg_is_in_recovery()")):
                        if time.monotonic() > deadline:
                            raise SandboxError(f"point-in-time recovery to {when.isoformat()} did not finish within "
                                               f"{RECOVERY_TIMEOUT}s:\n{_tail(logfile)}")
                        time.sleep(0.02)
                    return
            except psycopg.OperationalError:
                if self._postmaster_pid(datadir) is None or time.monotonic() > deadline:
                    raise SandboxError(f"point-in-time recovery to {when.isoformat()} failed:\n{_tail(logfile)}") from None
                time.sleep(0.05)

    def _copy_database(self, sockets: Path, source_db: str, when: datetime, new_db: str) -> None:
        """Copies `source_db` from the recovered throwaway server into a new `new_db` of the main
        cluster with the same encoding, locale and owner."""
        recovered: dict[str, Any] = {"host": str(sockets), "port": self._port(), "user": SUPERUSER}
        with psycopg.connect(**recovered, dbname="postgres", autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale,"
                " pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (source_db,)).fetchone()
            if row is None:
                names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")]
                raise ValueError(f"database {source_db!r} did not exist at {when.isoformat()}; the databases then "
                                 f"were: {', '.join(names)}")
        encoding, collate, ctype, provider, icu_locale, owner = row
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}").format(
            sql.Identifier(new_db), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype), sql.Identifier(owner))
        if provider == "i":
            create += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale))
        with self._connect("postgres") as conn:
            try:
                conn.execute(create)
            except pg_errors.DuplicateDatabase:
                raise ValueError(f"database {new_db!r} already exists in the sandbox cluster; choose another name") from None
        try:
            self._dump_restore(make_conninfo(**recovered, dbname=source_db),
                               make_conninfo(host="127.0.0.1", port=self._port(), user=SUPERUSER, dbname=new_db))
        except BaseException:
            with self._connect("postgres") as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new_db)))
            raise

    def _dump_restore(self, source: str, target: str) -> None:
        """pg_dump piped into pg_restore: no intermediate file, and the two run on two cores."""
        with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
            dump = subprocess.Popen([self._tool("pg_dump"), "--format=custom", "--compress=0", "--no-password",
                                     "--dbname", source], stdout=subprocess.PIPE, stderr=dump_err, env=self._env())
            restore = subprocess.Popen([self._tool("pg_restore"), "--exit-on-error", "--no-password", "--dbname", target],
                                       stdin=dump.stdout, stderr=restore_err, env=self._env())
            assert dump.stdout is not None
            dump.stdout.close()
            restore_code, dump_code = restore.wait(), dump.wait()
            for name, code, err in (("pg_dump", dump_code, dump_err), ("pg_restore", restore_code, restore_err)):
                if code != 0:
                    err.seek(0)
                    raise SandboxError(f"{name} failed (exit {code}) while copying the recovered database: "
                                       f"{err.read().decode(errors='replace').strip()[-2000:]}")

    # -- base backups ------------------------------------------------------------------------

    def _backups(self) -> list[tuple[datetime, str, Path]]:
        """Complete base backups as (end time, WAL position at the end, directory), oldest first."""
        found = []
        for info in self.base_backups.glob("*/backup.json"):
            meta = json.loads(info.read_text())
            found.append((datetime.fromisoformat(meta["end"]), meta["lsn"], info.parent))
        return sorted(found)

    def _refresh_in_background(self) -> None:
        """Refreshes the base backup off the caller's clock; stop() waits for it."""
        if self._refresher is None or not self._refresher.is_alive():
            self._refresher = threading.Thread(target=self._refresh_logging_failure, name="pitr-base-backup", daemon=True)
            self._refresher.start()

    def _wait_for_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.join()

    def _refresh_logging_failure(self) -> None:
        try:
            self._refresh_base_backup_if_due()
        except Exception:
            log.exception("refreshing the base backup of the PITR cluster in %s failed; restores replay more WAL", self.root)

    def _refresh_base_backup_if_due(self) -> None:
        """Takes a base backup when there is none, or when the WAL written since the newest one has
        grown past BASE_BACKUP_EVERY_BYTES. Keeps the first (it fixes earliest_recoverable) and
        the newest few; a restore between them replays from an older one, only more slowly."""
        with self._refresh_lock:
            backups = self._backups()
            if backups:
                with self._connect("postgres") as conn:
                    since = _value(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                                         (backups[-1][1],)))
                if since < BASE_BACKUP_EVERY_BYTES:
                    return
            self._take_base_backup()
            with self._backup_lock:
                for _, _, old in self._backups()[1:-KEEP_RECENT_BACKUPS]:
                    # Renamed first, so that a crash half-way through leaves no half-deleted backup.
                    doomed = old.rename(old.with_name(old.name + ".partial"))
                    shutil.rmtree(doomed, ignore_errors=True)

    def _take_base_backup(self) -> None:
        started = time.monotonic()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        partial = self.base_backups / f"{stamp}.partial"
        partial.mkdir()
        self._own(partial)
        self._run([self._tool("pg_basebackup"), "-D", str(partial / "data"), "-h", "127.0.0.1",
                   "-p", str(self._port()), "-U", SUPERUSER, "--no-password", "-X", "stream",
                   "--checkpoint=fast", "--no-sync"], as_server=True, what="pg_basebackup", timeout=RECOVERY_TIMEOUT)
        # Every commit stamped after this moment lies after the backup's end in the WAL, so
        # recovery from this backup can stop at any time from here on.
        with self._connect("postgres") as conn:
            end = _clock(conn)
            lsn = _value(conn.execute("SELECT pg_current_wal_lsn()::text"))
        (partial / "backup.json").write_text(json.dumps({"end": end.isoformat(), "lsn": lsn}))
        partial.rename(self.base_backups / stamp)
        log.info("base backup %s taken in %.2fs", stamp, time.monotonic() - started)

    # -- set-up ------------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.archive, self.base_backups, self.restores):
            directory.mkdir(mode=0o700, exist_ok=True)
            self._own(directory)
        if self._server_user is not None:
            reachable = subprocess.run(["test", "-w", str(self.root), "-a", "-x", str(self.root)], env=self._env(),
                                       **self._as_server_kwargs())
            if reachable.returncode != 0:
                raise SandboxError(
                    f"the {SERVER_OS_USER} OS user (PostgreSQL will not run as root) cannot reach {self.root}: a parent "
                    f"directory is closed to it (pytest's tmp_path is 0700, for one); put the cluster in a directory "
                    f"it can traverse, such as tempfile.mkdtemp() itself")

    def _initdb(self) -> None:
        staging = self.root / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        self._run([self._tool("initdb"), "-D", str(staging), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                   "--locale=C.UTF-8", f"--wal-segsize={WAL_SEGMENT_MB}", "--no-sync"], as_server=True, what="initdb")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_library": "basic_archive",
            "basic_archive.archive_directory": str(self.archive),
            "timezone": "UTC",
            "log_timezone": "UTC",
            "fsync": "off",
        }
        with open(staging / "postgresql.conf", "a") as conf:
            conf.write("\n# backout sandbox: archive every WAL segment for point-in-time recovery\n")
            conf.write("".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items()))
        (staging / "pg_hba.conf").write_text(_HBA)
        self._own(staging / "pg_hba.conf")
        staging.rename(self.data)

    def _remove_stale_work(self) -> None:
        """Recovery clusters and half-taken base backups a crashed earlier process left behind."""
        for work in self.restores.iterdir():
            self._stop_leftovers(work / "data", immediate=True)
            shutil.rmtree(work, ignore_errors=True)
        for partial in self.base_backups.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)

    def _choose_port(self) -> int:
        state_file = self.root / "cluster.json"
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
        port: int | None
        if self._requested_port is not None:
            port = self._requested_port
            if not _port_free(port):
                raise SandboxError(f"port {port} on 127.0.0.1 is in use; pass another port or free it")
        else:
            # Keep the port across restarts so that URLs handed out earlier stay valid.
            port = state.get("port")
            if port is None or not _port_free(port):
                if port is not None:
                    log.warning("port %d of the PITR cluster in %s is taken; moving to another", port, self.root)
                port = _free_port()
        state_file.write_text(json.dumps({**state, "port": port}))
        return port

    # -- processes ---------------------------------------------------------------------------

    def _pg_ctl_start(self, datadir: Path, logfile: Path, port: int, timeout: int = START_TIMEOUT) -> None:
        try:
            self._run([self._tool("pg_ctl"), "start", "-D", str(datadir), "-l", str(logfile), "-w", "-t", str(timeout),
                       "-o", f"-p {port}"], as_server=True, what="pg_ctl start", timeout=timeout + 10)
        except SandboxError as exc:
            raise SandboxError(f"{exc}\n{_tail(logfile)}") from None

    def _postmaster_pid(self, datadir: Path) -> int | None:
        """The pid of the live postmaster serving `datadir`, if there is one."""
        try:
            pid = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid in self._processes_in(datadir) else None

    def _processes_in(self, datadir: Path) -> list[int]:
        """Server processes working in `datadir`: a postmaster and its children run the postgres
        binary with the data directory as their working directory."""
        target, server = os.path.realpath(datadir), os.path.realpath(self._tool("postgres"))
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.readlink(f"/proc/{entry.name}/cwd") == target and os.readlink(f"/proc/{entry.name}/exe") == server:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def _stop_leftovers(self, datadir: Path, immediate: bool = False) -> None:
        """Stops every server process on `datadir`: a fast shutdown (or an immediate one, for a
        throwaway recovery cluster), then SIGKILL for whatever is left. Removes a postmaster.pid
        whose pid now belongs to another process, because postgres refuses to start over it."""
        postmaster = self._postmaster_pid(datadir)
        if postmaster is not None:
            if not immediate:
                log.warning("stopping a PostgreSQL server (pid %d) left running on %s", postmaster, datadir)
            # Through the postmaster, not SIGKILL, so that it releases its System V shared memory.
            _signal(postmaster, signal.SIGQUIT if immediate else signal.SIGINT)
            _wait_until(lambda: not self._processes_in(datadir), START_TIMEOUT)
        for pid in self._processes_in(datadir):
            _signal(pid, signal.SIGKILL)
        if not _wait_until(lambda: not self._processes_in(datadir), START_TIMEOUT):
            raise SandboxError(f"PostgreSQL processes on {datadir} did not exit: {self._processes_in(datadir)}")
        pidfile = datadir / "postmaster.pid"
        try:
            recorded = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if _alive(recorded):
            pidfile.unlink()

    def _run(self, argv: list[str], *, as_server: bool, what: str, timeout: float = START_TIMEOUT) -> str:
        try:
            done = subprocess.run(argv, env=self._env(), cwd=self.root, capture_output=True, text=True,
                                  timeout=timeout, **(self._as_server_kwargs() if as_server else {}))
        except subprocess.TimeoutExpired:
            raise SandboxError(f"{what} did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            raise SandboxError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout

    def _as_server_kwargs(self) -> dict[str, Any]:
        if self._server_user is None:
            return {}
        return {"user": self._server_user.pw_uid, "group": self._server_user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        # A clean environment: no inherited PG* variables redirecting the tools, no secrets.
        return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.root), "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def _own(self, path: Path) -> None:
        if self._server_user is not None:
            os.chown(path, self._server_user.pw_uid, self._server_user.pw_gid)

    def _tool(self, name: str) -> str:
        return str(self._bin / name)

    # -- helpers -----------------------------------------------------------------------------

    def _port(self) -> int:
        if self.port is None:
            raise SandboxError(f"the PITR cluster in {self.root} is not started; call start() first")
        return self.port

    def _require_running(self) -> None:
        if not self._running:
            raise SandboxError(f"the PITR cluster in {self.root} is not started; call start() first")

    def _connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self._port(), user=SUPERUSER, dbname=dbname,
                               autocommit=True, connect_timeout=10)

    def _acquire_lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._try_lock():
            holder = (self.root / ".lock").read_text().strip() or "unknown"
            raise SandboxError(f"the PITR cluster in {self.root} is in use by another process (pid {holder}); "
                               f"stop that one or use another directory")

    def _try_lock(self) -> bool:
        if not self.root.exists():
            return False
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as when we are root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise SandboxError(f"running as root, the sandbox needs an OS user {SERVER_OS_USER!r} to run PostgreSQL "
                           f"(it refuses to run as root): install postgresql, or run as a normal user") from None


def _check_db_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name.encode()) > 63 or "\0" in name:
        raise ValueError(f"database name {name!r} is not valid: use 1 to 63 bytes, no NUL character")


def _database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _value(cursor: psycopg.Cursor[Any]) -> Any:
    """The one value a query that always answers one row returned."""
    row = cursor.fetchone()
    assert row is not None, "the query answers exactly one row"
    return row[0]


def _clock(conn: psycopg.Connection) -> datetime:
    return _value(conn.execute("SELECT clock_timestamp()")).astimezone(timezone.utc)


def _conf_value(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
