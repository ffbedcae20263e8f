"""The `pg_dump` backup strategy: a custom-format dump compressed with multi-threaded zstd.

pg_dump's own compression is single-threaded gzip and most of its run time. Here pg_dump writes
its custom format uncompressed (`-Fc -Z0`) to a pipe and the stream is compressed with zstd on
every core into `<dir>/<checkpoint id>.dump.zst`. The archive is written under a temporary name,
fsynced, renamed when complete and readable by its owner only.

It is verified in the same single pass that writes it, not by reading it back: the sha256 is taken
of the bytes as they are written, zstd writes its own checksum, and the archive's header and table
of contents are parsed from the stream as pg_dump writes them (what `pg_restore --list` reads). A
second pass cost about a fifth of the checkpoint's time and told nothing more; restore drills
prove restorability end to end.

A release phase starts the dump first thing (`start_early`), before it imports a database driver,
reads the ledger or judges the migrations: that work, about a third of a second here, then runs
while pg_dump reads the catalogs and streams, and the compressed output waits in memory until the
checkpoint's row exists and names the file or the object it goes to. A release phase that takes no
checkpoint after all (nothing pending on a rollback, a refusal) stops the dump; nothing reached a
disk or a bucket.

The archive is read back by `backout.rollback.database.stream`, the one reader restores, drills and
tests use. It was written to a pipe, so its table of contents has no data offsets: pg_restore reads
it sequentially from a pipe, or from a decompressed file (in parallel too).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Protocol, cast

import zstandard

from backout.backups.archive import Archive, Scanner
from backout.backups.libpq import Drain, client_args, database_name, program, secrets_of, stop
from backout.backups.row_counts import SnapshotCounter
from backout.errors import BackoutError
from backout.output import human_bytes
from backout.redact import mask_url
from backout.storage.config import StorageSettings

if TYPE_CHECKING:
    from backout.backups import Backup, BackupContext
    from backout.settings import Settings

SUFFIX = ".dump.zst"
# An archive being written is `.<name>.<pid>.tmp` beside where it goes.
_TEMP_SUFFIX = ".tmp"
# Level 3 with one worker per core beats pg_dump -Fc's gzip on both time and size for text and
# jsonb (bench/checkpoint_bench.py measures it). The target is the plain pipe a user would type,
# `pg_dump -Fc -Z0 | zstd -T2 -3`, at no larger size: a lower level writes a larger archive, a
# higher one costs more time than it saves space.
ZSTD_LEVEL = 3
# 1 MiB reads from a pipe grown to 1 MiB (Linux's default limit): a dump started early runs while
# the release phase imports, and the pump thread waits for the interpreter once per read, so
# fewer, larger reads keep pg_dump going. Peak memory stays well within bench/checkpoint_bench.py's
# target (3 MB more than with 256 KiB).
CHUNK = 1 << 20
PROGRESS_EVERY = 10.0
# Compressed output held in memory while the checkpoint's destination is not known yet; past it
# pg_dump waits. 16 MiB is about 50 MB of a database: what a release phase dumps before its ledger
# row exists (a third of a second), or before boto3 is imported for an upload. More adds to the
# peak memory of a checkpoint to storage (bench/storage_checkpoint_bench.py, target 200 MB).
SPOOL_LIMIT = 16 << 20
LEDGER_SCHEMA = "backout"

Progress = Callable[[str], None]


def take(ctx: "BackupContext") -> "Backup":
    """The strategy's entry point: dump the app's database into object storage when
    BACKOUT_STORAGE_URL is set, else into the backup directory."""
    if ctx.storage is not None and ctx.storage.archives is not None:
        return dump_to_storage(ctx.database_url, ctx.storage, ctx.app, ctx.checkpoint_id, progress=ctx.progress,
                               started=ctx.dump)
    return dump(ctx.database_url, Path(ctx.backup_dir) / f"{ctx.checkpoint_id}{SUFFIX}", progress=ctx.progress,
                started=ctx.dump)


def start_early(settings: "Settings") -> "Dump | None":
    """The dump of the checkpoint a release phase is about to take, started now; None when these
    settings take no pg_dump checkpoint, or when it cannot start (the checkpoint then starts its
    own and reports why it cannot). The caller stops it when no checkpoint uses it."""
    from backout.backups import check_restorable

    if settings.backup != "pg_dump" or not settings.database_url:
        return None
    try:
        check_restorable(settings)  # refused later, in order, with the fix named
        return Dump(settings.database_url)
    except Exception:  # noqa: BLE001 - the checkpoint's own dump says what is wrong, in order
        return None


def dump(database_url: str, path: Path, progress: Progress | None = None, level: int = ZSTD_LEVEL,
         started: "Dump | None" = None) -> "Backup":
    """Dump `database_url` (without the ledger's schema) into `path`, verify it, and describe it.

    Returns {"path", "size", "sha256", "format", "compression", "level", "dump_size", "entries",
    "rows", "seconds"}: `rows` is "schema.table" -> rows for every table the archive holds data
    of (null when one of them could not be counted), what a restore verifies its copy against.
    On any failure nothing is left at `path` or under a temporary name, and a BackoutError says
    what went wrong in one line.
    """
    say = progress or (lambda message: None)
    path = Path(path).absolute()
    if path.exists():
        raise BackoutError(f"backup file {path} already exists; refusing to overwrite it")
    _make_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}")
    began = time.monotonic()
    say(f"backup: pg_dump of {mask_url(database_url)} into {path}")
    try:
        sha256, size, dump_size, toc, counts = _write_file(started or Dump(database_url, level), temp, say)
        entries = len(toc.listed_entries())
        rows = recorded_rows(toc, counts)
        os.rename(temp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _remove(temp)
        raise
    seconds = round(time.monotonic() - began, 3)
    say(f"backup: complete and verified, {entries} archive entries, {human_bytes(size)} in {seconds:.1f}s")
    return {
        "path": str(path), "size": size, "sha256": sha256, "format": "custom", "compression": "zstd",
        "level": level, "dump_size": dump_size, "entries": entries, "rows": rows, "seconds": seconds,
        "database": database_name(database_url),
    }


def _write_file(running: "Dump", temp: Path, say: Progress) -> tuple[str, int, int, Archive, dict[str, int]]:
    """The dump written into the file `temp` (mode 0600, fsynced): the sha256 and size written, and
    what `Dump.finish` returns."""
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except BaseException:
        running.stop()
        raise
    try:
        out = _HashingWriter(fd)
        dump_size, toc, counts = running.finish(out, say)
        os.fsync(fd)
    except OSError as exc:
        raise _disk_error(exc, temp) from None
    finally:
        os.close(fd)
    return out.digest.hexdigest(), out.size, dump_size, toc, counts


def dump_to_storage(database_url: str, storage: StorageSettings, app: str, checkpoint_id: str,
                    progress: Progress | None = None, level: int = ZSTD_LEVEL,
                    started: "Dump | None" = None) -> "Backup":
    """Dump `database_url` straight into object storage: pg_dump | zstd | a multipart upload, with no
    local copy and memory bounded whatever the size. The archive is checked on the way (pg_dump's
    exit status, the whole table of contents parsed, every table's rows counted in pg_dump's own
    snapshot, Content-MD5 on every part, the object's size after the upload); any failure aborts
    the upload, so nothing is left under the key. Returns the description the checkpoint records."""
    # Imported here: boto3 alone takes longer to import than a small database takes to dump, and
    # most release phases write to local disk.
    from backout.storage.archives import archive_key
    from backout.storage.client import make_client
    from backout.storage.upload import MultipartUpload

    say = progress or (lambda message: None)
    where = storage.archives
    assert where is not None
    began = time.monotonic()
    running = started or Dump(database_url, level)
    try:
        client = make_client(storage)
        key = archive_key(where, app, checkpoint_id)
        say(f"backup: pg_dump of {mask_url(database_url)} into s3://{where.bucket}/{key}")
        metadata = {"backout-checkpoint": checkpoint_id, "backout-app": app, "backout-format": "pg_dump-custom+zstd"}
        upload = MultipartUpload(client, where.bucket, key, sse=storage.sse, content_type="application/zstd",
                                 metadata=metadata)
    except BaseException:
        running.stop()
        raise
    with upload:
        dump_size, toc, counts = running.finish(upload, say)
        stored = upload.complete()
    entries = len(toc.listed_entries())
    seconds = round(time.monotonic() - began, 3)
    say(f"backup: uploaded and checked, {entries} archive entries, {human_bytes(stored['size'])} "
        f"in {seconds:.1f}s")
    return {
        "storage": "s3", "url": f"s3://{where.bucket}/{key}", "bucket": where.bucket, "key": key,
        "etag": stored["etag"], "version_id": stored["version_id"], "encryption": stored["encryption"],
        "parts": stored["parts"], "size": stored["size"], "sha256": stored["sha256"], "format": "custom",
        "compression": "zstd", "level": level, "dump_size": dump_size, "entries": entries,
        "rows": recorded_rows(toc, counts), "seconds": seconds, "database": database_name(database_url),
    }


def partial_files(backup_dir: Path, checkpoint_id: str) -> list[Path]:
    """The temporary files a dump of that checkpoint left behind (its process was killed)."""
    return sorted(Path(backup_dir).glob(f".{checkpoint_id}{SUFFIX}.*{_TEMP_SUFFIX}"))


def recorded_rows(toc: Archive, counts: dict[str, int]) -> dict[str, int] | None:
    """The row count of every table the archive holds data of, or None if one was not counted
    (a restore then counts the archive's rows itself)."""
    tables = [e.qualified for e in toc.table_data()]
    return {name: counts[name] for name in tables} if all(name in counts for name in tables) else None


def pg_dump_command(database_url: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    """pg_dump's argv (no password in it) and its environment (PGPASSWORD), ledger excluded."""
    conninfo, env = client_args(database_url)
    argv = [
        program("pg_dump"), "--format=custom", "--compress=0", f"--exclude-schema={LEDGER_SCHEMA}",
        # A table locked by someone else fails the dump in a while instead of hanging the release.
        "--lock-wait-timeout=120s", *extra, f"--dbname={conninfo}",
    ]
    return argv, env


# ---------------------------------------------------------------------------------------------


class Dump:
    """A pg_dump under way: `pg_dump -Fc -Z0` in a snapshot whose rows a SnapshotCounter counts
    meanwhile, its output compressed with zstd on a thread as it comes, the table of contents parsed
    on the way. The compressed bytes wait in memory until `finish` names where they go."""

    def __init__(self, database_url: str, level: int = ZSTD_LEVEL) -> None:
        self.level = level
        self.counter = SnapshotCounter(database_url)
        argv, self.env = pg_dump_command(database_url, f"--snapshot={self.counter.snapshot}")
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        except BaseException:
            self.counter.close()
            raise
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.errors = Drain(self.proc.stderr)
        _grow_pipe(self.proc.stdout.fileno())
        self.toc = Scanner()
        self.dump_size = 0
        self.spool = _Spool()
        self.say: Progress = lambda message: None
        self.failure: BaseException | None = None
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def finish(self, out: "_Sink", say: Progress) -> tuple[int, Archive, dict[str, int]]:
        """Send the archive into `out` and wait for the end: the bytes pg_dump wrote, the table of
        contents, and each table's rows. Raises BackoutError when the dump failed (stopped)."""
        self.say = say
        try:
            self.spool.attach(out)
            self.pump.join()
            if self.failure is not None:
                raise self.failure
            status = self.proc.wait()
            self.errors.join()
            if status != 0:
                message = self.errors.last_error(secrets_of(self.env))
                raise BackoutError(f"pg_dump failed (exit status {status}): {message}")
            counts = self.counter.finish()
        except BaseException:
            self.stop()
            raise
        if self.toc.in_toc:
            raise BackoutError("pg_dump's output ends inside the archive's table of contents")
        return self.dump_size, self.toc.archive, counts

    def stop(self) -> None:
        """Stop it and drop what it wrote (nothing of it reached `out` unless finish was called)."""
        stop(self.proc)
        self.spool.close()
        self.pump.join()
        self.counter.close()

    def _pump(self) -> None:
        try:
            compressor = zstandard.ZstdCompressor(level=self.level, threads=-1, write_checksum=True)
            # zstandard needs only `write` and `flush` of its destination, not a whole file object.
            with compressor.stream_writer(cast(IO[bytes], self.spool), closefd=False, write_size=CHUNK) as writer:
                assert self.proc.stdout is not None
                source = self.proc.stdout.fileno()
                next_report = time.monotonic() + PROGRESS_EVERY
                while True:
                    chunk = os.read(source, CHUNK)
                    if not chunk:
                        break
                    writer.write(chunk)
                    self.dump_size += len(chunk)
                    if self.toc.in_toc:
                        self.toc.feed(chunk)
                    if time.monotonic() >= next_report:
                        self.say(f"backup: {human_bytes(self.dump_size)} dumped, {human_bytes(self.spool.size)} written")
                        next_report = time.monotonic() + PROGRESS_EVERY
        except BaseException as exc:  # noqa: BLE001 - raised to the caller by finish()
            self.failure = exc


class _Spool:
    """What the compressor writes to: memory (up to SPOOL_LIMIT, then the writer waits) until the
    real sink is attached, then the sink itself, in order."""

    def __init__(self) -> None:
        self.size = 0
        self._held: deque[bytes] = deque()
        self._held_size = 0
        self._sink: "_Sink | None" = None
        self._closed = False
        self._changed = threading.Condition()

    def write(self, data: bytes) -> int:
        with self._changed:
            while self._sink is None and self._held_size >= SPOOL_LIMIT and not self._closed:
                self._changed.wait()
            if self._closed:
                raise BackoutError("the dump was stopped")
            sink = self._sink
            if sink is None:
                self._held.append(bytes(data))
                self._held_size += len(data)
        if sink is not None:
            sink.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def attach(self, sink: "_Sink") -> None:
        with self._changed:
            while self._held:
                sink.write(self._held.popleft())
            self._held_size = 0
            self._sink = sink
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._held.clear()
            self._changed.notify_all()


class _Sink(Protocol):
    """Where the compressed archive goes: a file (`_HashingWriter`) or a multipart upload."""

    size: int
    digest: "hashlib._Hash"

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """The file the compressor writes to: counts and hashes what it writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _disk_error(exc: OSError, temp: Path) -> BackoutError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackoutError(f"no space left for the backup in {temp.parent} (BACKOUT_BACKUP_DIR); "
                            "free some space or point BACKOUT_BACKUP_DIR at a larger disk")
    if exc.errno == errno.EFBIG:
        return BackoutError(f"the backup is larger than this process may write in {temp.parent} "
                            "(file size limit); raise the limit or choose another BACKOUT_BACKUP_DIR")
    return BackoutError(f"cannot write the backup in {temp.parent}: {exc.strerror or exc}")


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BackoutError(f"cannot create the backup directory {directory} (BACKOUT_BACKUP_DIR): "
                           f"{exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackoutError(f"cannot write in the backup directory {directory} (BACKOUT_BACKUP_DIR)")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _grow_pipe(fd: int) -> None:
    # A 1 MiB pipe instead of 64 KiB: fewer, larger reads from pg_dump. Linux only, best effort.
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:
        pass


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

