"""Reading a `pg_dump` checkpoint's archive (`<id>.dump.zst`) for a restore, wherever it is kept.

`locate` gives the archive as a source: a file in BACKOUT_BACKUP_DIR (`LocalArchive`) or an object
in BACKOUT_STORAGE_URL (`storage.archives.StoredArchive`, read with parallel ranged GETs).
This is the one reader of the archives `backout.backups.pg_dump` writes (the format's parser is
`backout.backups.archive`): it streams an archive through zstd's stream reader, the fastest way here
(a restore reads the whole archive, so that time adds to the restore's), and checks zstd's checksum,
that no bytes follow the end, and the size pg_dump wrote (zstd alone says nothing about an archive
cut short).
Streamed, every chunk also goes through an archive `Scanner`, which counts each table's rows for
the verification after the restore.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Protocol

import zstandard

from backout.backups.archive import Archive, BlockFinder, Scanner
from backout.errors import BackoutError
from backout.output import human_bytes
from backout.storage.config import StorageSettings

CHUNK = 1 << 20
PROGRESS_EVERY = 5.0

Progress = Callable[[str], None]


class Source(Protocol):
    """Where an archive's compressed bytes are read from."""

    @property
    def name(self) -> str: ...

    def check(self) -> None: ...

    def open(self) -> BinaryIO: ...


@dataclass(frozen=True)
class LocalArchive:
    """An archive file in BACKOUT_BACKUP_DIR."""

    path: Path
    size: int | None

    @property
    def name(self) -> str:
        return str(self.path)

    def check(self) -> None:
        """BackoutError unless the file is here with the size recorded when it was written."""
        if not self.path.is_file():
            raise BackoutError(f"the checkpoint's backup file {self.path} is not on this machine (BACKOUT_BACKUP_DIR "
                               "of the process that took it); run the worker where the backups are kept")
        size = self.path.stat().st_size
        if self.size is not None and size != self.size:
            raise BackoutError(f"the backup file {self.path} is {size} bytes, but {self.size} were written: "
                               "it was changed or cut short since")

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


def locate(backup: dict[str, Any], storage: StorageSettings) -> Source:
    """The archive a checkpoint's backup record names: an object in storage when it was uploaded,
    else a file."""
    if backup.get("storage") == "s3":
        from backout.storage.archives import StoredArchive
        from backout.storage.client import make_client

        return StoredArchive.of(make_client(storage), backup)
    return LocalArchive(Path(backup.get("path") or ""), backup.get("size"))


def as_source(where: "Source | str | os.PathLike") -> Source:
    """A source for an archive given as a source or as a local file's path."""
    return LocalArchive(Path(where), None) if isinstance(where, (str, os.PathLike)) else where


def chunks(where: "Source | str | os.PathLike", dump_size: int | None) -> Iterator[bytes]:
    """The archive's decompressed bytes; raises BackoutError if it is corrupt or shorter than recorded."""
    source = as_source(where)
    total = 0
    try:
        with source.open() as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK)
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                yield chunk
    except zstandard.ZstdError as exc:
        raise BackoutError(f"backup {source.name} is corrupt: {exc}") from None
    if dump_size is not None and total != dump_size:
        raise BackoutError(f"backup {source.name} holds {total} bytes of archive, but pg_dump wrote {dump_size}: "
                           "it is truncated or damaged")


def read_toc(where: "Source | str | os.PathLike") -> Archive:
    """The archive's table of contents, reading only as far as it goes."""
    source = as_source(where)
    scanner = Scanner()
    with source.open() as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK)
        try:
            while scanner.in_toc:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                scanner.feed(chunk)
        except zstandard.ZstdError as exc:
            raise BackoutError(f"backup {source.name} is corrupt: {exc}") from None
    if scanner.in_toc:
        raise BackoutError(f"backup {source.name} ends inside its table of contents")
    return scanner.archive


def recorded(backup: dict[str, Any], toc: Archive) -> Archive | None:
    """The archive's table of contents with the row counts its checkpoint recorded (None for a
    checkpoint that recorded none: its rows are then counted from the archive as it streams)."""
    rows = backup.get("rows")
    return toc.with_rows(rows) if isinstance(rows, dict) else None


def pump(source: "Source | str | os.PathLike", backup: dict[str, Any], write: Callable[[bytes], object], progress: Progress,
         what: str = "restore", counted: Archive | None = None) -> Archive:
    """Decompress the archive into `write`, scanning it on the way unless its rows were `counted`
    already; progress lines carry the bytes."""
    scanner = Scanner()
    total = backup.get("dump_size")
    seen = 0
    next_report = time.monotonic() + PROGRESS_EVERY
    for chunk in chunks(source, total):
        if counted is None:
            scanner.feed(chunk)
        write(chunk)
        seen += len(chunk)
        if time.monotonic() >= next_report:
            share = f" ({100 * seen // total}%)" if total else ""
            progress(f"{what}: {human_bytes(seen)} of {human_bytes(total or seen)} read{share}")
            next_report = time.monotonic() + PROGRESS_EVERY
    archive = scanner.finish() if counted is None else counted
    progress(f"{what}: {human_bytes(seen)} of archive read, {len(archive.table_data())} tables")
    return archive


class Decompression(threading.Thread):
    """Decompresses the archive into `dest` (mode 0600) on a thread, for pg_restore to read while
    the restore prepares and loads meanwhile: `toc` is set once the archive's header and table of
    contents are in the file (all that `pg_restore --section=pre-data` reads; `archive` then holds
    them), `block_start` says where a table's data block begins as soon as it is written, and
    `wait_for` waits for the bytes up to an offset. `result()` waits for the end and returns the
    bytes written, or raises what went wrong."""

    def __init__(self, source: "Source | str | os.PathLike", backup: dict[str, Any], dest: Path, progress: Progress) -> None:
        super().__init__(daemon=True)
        self.source, self.dest, self.progress = as_source(source), dest, progress
        self.total: int | None = backup.get("dump_size")
        self.toc = threading.Event()
        self.cancelled = threading.Event()
        self.archive: Archive | None = None
        self.blocks: BlockFinder | None = None
        self.written = 0
        self.finished = False
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self.start()

    def run(self) -> None:
        scanner = Scanner()
        next_report = time.monotonic() + PROGRESS_EVERY
        try:
            fd = os.open(self.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with self.source.open() as raw, open(fd, "wb", buffering=0) as out:
                for chunk in zstandard.ZstdDecompressor().read_to_iter(raw, read_size=CHUNK, write_size=4 * CHUNK):
                    if self.cancelled.is_set():
                        break
                    view = memoryview(chunk)
                    done = 0
                    while done < len(chunk):
                        done += out.write(view[done:]) or 0
                    if scanner.in_toc:
                        scanner.feed(chunk)
                        if not scanner.in_toc:
                            self.archive = scanner.archive
                            self.blocks = BlockFinder.for_archive(self.archive)
                            self.toc.set()
                    if self.blocks is not None:
                        self.blocks.feed(chunk, self.written)
                    with self._changed:
                        self.written += len(chunk)
                        self._changed.notify_all()
                    if time.monotonic() >= next_report:
                        self.progress(f"decompress: {human_bytes(self.written)} of "
                                      f"{human_bytes(self.total or self.written)} written")
                        next_report = time.monotonic() + PROGRESS_EVERY
        except zstandard.ZstdError as exc:
            self.error = BackoutError(f"backup {self.source.name} is corrupt: {exc}")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self.error = exc
        finally:
            with self._changed:
                self.finished = True
                self._changed.notify_all()
            self.toc.set()  # wakes a waiter, which then finds the error or the file

    def wait_for(self, offset: int) -> tuple[int, bool]:
        """Wait until the file holds the bytes before `offset`, or the decompression has ended
        (then fewer may be there); the bytes written, and whether that is all."""
        with self._changed:
            while self.written < offset and not self.finished:
                self._changed.wait()
            return self.written, self.finished

    def block_start(self, dump_id: int, wait: bool = True) -> int | None:
        """Where the data block of entry `dump_id` begins, once written; None when the decompression
        ended without it (an error, or an archive cut short), or, unless waiting, is not there yet."""
        with self._changed:
            while True:
                found = self.blocks.starts.get(dump_id) if self.blocks is not None else None
                if found is not None or self.finished or not wait:
                    return found
                self._changed.wait()

    def result(self) -> int:
        self.join()
        if self.error is not None:
            raise self.error
        if self.total is not None and self.written != self.total:
            raise BackoutError(f"backup {self.source.name} holds {self.written} bytes of archive, but pg_dump wrote "
                               f"{self.total}: it is truncated or damaged")
        self.progress(f"decompress: done, {human_bytes(self.written)} written")
        return self.written

    def stop(self) -> None:
        self.cancelled.set()
        self.join()
