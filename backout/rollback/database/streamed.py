"""A parallel restore that loads the tables while the archive is still decompressing.

`pg_restore -j` needs the whole archive in a file before it starts, so a bare restore first waits
for the decompression, and it loads each table's rows in one session however large the table. Here
each table's rows go to a `pg_restore` of their own as soon as the table's data block begins: the
child reads the archive's header and table of contents, then that one block, from a pipe fed from
the file the archive is decompressing into (small tables already decompressed go to one child
together, blocks one after the other). Up to `jobs` children run at once, tables first, in the
archive's order. A place that falls free takes over the second half of the rows still to load of
the largest table (cut at a row boundary, each half a block of its own), so one large table does
not keep the other places idle, or else builds indexes and keys of tables whose rows are in (as
`pg_restore -j` interleaves them; those of small tables together, like the tables). What is left (the other indexes and keys, foreign
keys, sequences' values, grants...) goes to one `pg_restore -j` at the end, which reads only the
table of contents.
"""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backout.backups.archive import (BLOCK_TERMINATOR, SECTION_POST_DATA, SECTION_PRE_DATA, Archive, TocEntry,
                                     block_header, row_boundary)
from backout.errors import BackoutError
from backout.output import human_bytes
from backout.rollback.database import pgtools
from backout.rollback.database.stream import PROGRESS_EVERY, Decompression

# Post-data entries that touch only their own table, and so may run beside other tables' loads.
_OWN_TABLE = frozenset({"INDEX", "CONSTRAINT"})
# Rows are fed a step at a time, so that a place that falls idle can take over the rest of a table.
STEP = 1 << 20
# A table whose rows still to feed are at least this many bytes is shared with an idle place.
SPLIT_FROM = 16 << 20
# How many bytes from the middle of those rows on a row boundary is looked for.
_WINDOW = 1 << 16
# Small tables already decompressed go to one pg_restore together, up to this many bytes of rows
# and tables (their indexes and keys too): a child and its connection cost about 20 ms, more than a
# small table's rows.
BATCH_BYTES = 4 << 20
BATCH_TABLES = 64

Progress = Callable[[str], None]


@dataclass
class _Task:
    label: str
    entries: list[TocEntry]
    rows: bool = False  # it loads the entries' rows (consecutive blocks), fed through its stdin
    start: int | None = None  # where its rows begin, when not at the block's start (a split's second part)
    end: int | None = None  # where its rows end, when not at the last block's end (a split's first part)
    position: int = 0  # how far its rows are fed, or about to be
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def table(self) -> TocEntry | None:
        """The one table whose rows it loads (a task of several tables is not split)."""
        return self.entries[0] if self.rows and len(self.entries) == 1 else None


class Load:
    """One streamed restore of the archive decompressing into `temp`, by `argv` (pg_restore with
    its connection and owner flags) into the new database, `jobs` at a time."""

    def __init__(self, decompression: Decompression, temp: Path, argv: list[str], env: dict[str, str],
                 jobs: int, progress: Progress, report: Callable[[], None]) -> None:
        self.decompression, self.temp, self.argv, self.env = decompression, temp, argv, env
        self.jobs, self.progress, self.report = jobs, progress, report
        self.running: dict[subprocess.Popen, tuple[_Task, pgtools.Drain]] = {}
        self.ended: queue.Queue[subprocess.Popen] = queue.Queue()
        self.lists = Path(tempfile.mkdtemp(prefix="backout-lists-"))
        self.started = 0
        self.loads = 0  # pg_restore children that loaded rows
        self.following: dict[int, int | None] = {}  # a block's dump id -> the next block's, in the archive

    def run(self, archive: Archive) -> None:
        """Load every table and build what depends on them; BackoutError naming the first failure."""
        try:
            self._run(archive)
        except BaseException:
            for proc in self.running:
                pgtools.stop(proc)
            raise
        finally:
            for path in self.lists.iterdir():
                path.unlink()
            self.lists.rmdir()

    def _run(self, archive: Archive) -> None:
        by_id = {e.dump_id: e for e in archive.entries}
        blocks = [e.dump_id for e in archive.entries if e.has_block]
        self.following = dict(zip(blocks, [*blocks[1:], None]))
        # An index waits for the rows of the table it is on (pg_restore repoints its dependency on
        # the table to the table's data the same way).
        rows_of = {d: e.dump_id for e in archive.entries if e.has_block for d in e.dependencies}
        tables = deque(e for e in archive.entries if e.has_block)
        early = [e for e in archive.entries if e.section == SECTION_POST_DATA and e.desc in _OWN_TABLE]
        loading: dict[int, int] = {}  # table data's dump id -> its parts still loading
        loaded: set[int] = set()
        built: set[int] = set()

        def ready(entry: TocEntry) -> bool:
            needs = [rows_of[d] for d in entry.dependencies if d in rows_of]
            return bool(needs) and all(n in loaded for n in needs) and all(
                d in rows_of or d in built or d not in by_id or by_id[d].section == SECTION_PRE_DATA
                for d in entry.dependencies)

        while tables or self.running:
            while len(self.running) < self.jobs:
                task: _Task | None
                # Rows first: the indexes of the table that loads last are what the restore ends with.
                if tables:
                    task = self._batch(tables)
                elif (task := self._split()) is None and (now := [e for e in early if ready(e)]):
                    # Those on small tables are built together, as small tables load together.
                    share: list[TocEntry] = []
                    weight = 0
                    for entry in now:
                        weight += sum(self._block_size(rows_of[d]) for d in entry.dependencies if d in rows_of)
                        if share and (weight > BATCH_BYTES or len(share) == BATCH_TABLES):
                            break
                        share.append(entry)
                        early.remove(entry)
                    task = _Task(f"{share[0].desc.lower()} {share[0].tag}" +
                                 (f" and {len(share) - 1} more" if len(share) > 1 else ""), share)
                if task is None:
                    break
                if task.rows:
                    self.loads += 1
                    for table in task.entries:
                        loading[table.dump_id] = loading.get(table.dump_id, 0) + 1
                self._start(task)
            done = self._wait_one()
            if done.rows:
                for table in done.entries:
                    loading[table.dump_id] -= 1
                    if not loading[table.dump_id]:
                        loaded.add(table.dump_id)
            else:
                built.update(e.dump_id for e in done.entries)
        self.decompression.result()
        self.progress(f"restore: rows of {len(loaded)} tables loaded by {self.loads} pg_restore sessions")
        rest = [e for e in archive.listed_entries()
                if e.section != SECTION_PRE_DATA and not e.has_block and e.dump_id not in built]
        if rest:
            self._start(_Task("the rest", rest), [f"--jobs={self.jobs}"])
            self._wait_one()

    def _batch(self, tables: deque[TocEntry]) -> _Task:
        """The next table, with the small ones after it whose rows are all decompressed already."""
        batch = [tables.popleft()]
        start = self.decompression.block_start(batch[0].dump_id, wait=False)
        end = self._block_end(batch[0].dump_id)
        while tables and len(batch) < BATCH_TABLES and start is not None and end is not None and \
                end - start < BATCH_BYTES:
            following = self._block_end(tables[0].dump_id)
            if following is None or following - start > BATCH_BYTES:
                break
            batch.append(tables.popleft())
            end = following
        label = f"rows of {batch[0].qualified}" + (f" and {len(batch) - 1} more tables" if len(batch) > 1 else "")
        return _Task(label, batch, rows=True)

    def _split(self) -> _Task | None:
        """A second part for the running table load with the most rows still to feed, when that is
        worth a place: it takes the rows after a row boundary half-way, where the first part stops."""
        best: tuple[int, _Task, int] | None = None
        for task, _ in self.running.values():
            if task.table is None:
                continue
            # Measured from where its rows begin until its feeding has begun.
            begin = task.start if task.start is not None else \
                self.decompression.block_start(task.table.dump_id, wait=False)
            end = task.end if task.end is not None else self._block_end(task.table.dump_id)
            if begin is None or end is None:
                continue
            left = end - max(task.position, begin)
            if left >= SPLIT_FROM and (best is None or left > best[0]):
                best = (left, task, end)
        if best is None:
            return None
        left, task, end = best
        middle = end - left // 2
        with open(self.temp, "rb") as source:
            found = row_boundary(os.pread(source.fileno(), _WINDOW, middle))
        if found is None:
            return None
        boundary = middle + found
        table = task.table
        assert table is not None  # only table loads were looked at
        with task.lock:
            if task.position >= boundary or boundary >= end:
                return None
            inherited = task.end  # a part of a part ends where its first part did
            task.end = boundary
        self.progress(f"restore: {table.qualified}: the last {human_bytes(end - boundary)} of its rows "
                      "load beside the rest")
        return _Task(f"rows of {table.qualified} (from byte {boundary})", [table], rows=True, start=boundary,
                     end=inherited)

    def _block_size(self, dump_id: int) -> int:
        """The bytes of a loaded table's block."""
        start = self.decompression.block_start(dump_id, wait=False)
        return (self._block_end(dump_id) or 0) - (start or 0)

    def _block_end(self, dump_id: int) -> int | None:
        """Where a block ends, once known: the next block's start, or the archive's end."""
        following = self.following[dump_id]
        if following is not None:
            return self.decompression.block_start(following, wait=False)
        written, whole = self.decompression.wait_for(0)
        return written if whole else None

    def _start(self, task: _Task, flags: list[str] | None = None) -> None:
        self.started += 1
        listing = self.lists / f"{self.started}.list"
        listing.write_text("".join(f"{e.dump_id};\n" for e in task.entries))
        argv = [*self.argv, f"--use-list={listing}", *(flags or [])]
        if not task.rows:
            argv.append(str(self.temp))
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if task.rows else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
        assert proc.stderr is not None  # Popen's pipes exist: PIPE was asked for
        self.running[proc] = (task, pgtools.Drain(proc.stderr))
        threading.Thread(target=self._watch, args=(proc, task), daemon=True).start()

    def _watch(self, proc: subprocess.Popen, task: _Task) -> None:
        try:
            if task.rows:
                assert proc.stdin is not None  # Popen's pipes exist: PIPE was asked for
                with proc.stdin:
                    self._feed(proc.stdin.fileno(), task)
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit status says why
        finally:
            proc.wait()
            self.ended.put(proc)

    def _feed(self, pipe: int, task: _Task) -> None:
        """The archive's header and table of contents, then the task's rows as they are written:
        its tables' blocks, or the part of one table's block it loads, as a block of its own."""
        decompression, first, last = self.decompression, task.entries[0], task.entries[-1]
        archive = decompression.archive
        assert archive is not None  # the tables are known from it
        with open(self.temp, "rb") as source:
            _send(pipe, source.fileno(), 0, archive.data_start)
            if task.start is None:
                position = decompression.block_start(first.dump_id)
                if position is None:
                    return  # cut short: pg_restore fails reading, and the decompression's error is raised
            else:
                _write(pipe, block_header(first.dump_id))
                position = task.start
            while True:
                written, whole = decompression.wait_for(position + 1)
                with task.lock:
                    end = task.end if task.end is not None else self._block_end(last.dump_id)
                    limit = min(written, position + STEP, written if end is None else end)
                    task.position = limit
                if position < limit:
                    _send(pipe, source.fileno(), position, limit - position)
                    position = limit
                if end is not None and position >= end:
                    if task.end is not None:
                        _write(pipe, BLOCK_TERMINATOR)  # the rest of the block is another part's
                    return
                if whole and position >= written:
                    return

    def _wait_one(self) -> _Task:
        while True:
            try:
                proc = self.ended.get(timeout=PROGRESS_EVERY)
                break
            except queue.Empty:
                self.report()
        task, errors = self.running.pop(proc)
        if proc.returncode != 0:
            if self.decompression.finished and self.decompression.error is not None:
                raise self.decompression.error
            raise BackoutError(f"pg_restore failed restoring {task.label} (exit status {proc.returncode}): "
                               f"{errors.last_error(pgtools.secrets_of(self.env))}")
        return task


def _write(pipe: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(pipe, view):]


def _send(pipe: int, source: int, offset: int, count: int) -> None:
    while count > 0:
        sent = os.sendfile(pipe, source, offset, count)
        if sent == 0:
            raise BackoutError("the decompressed archive ended early")
        offset += sent
        count -= sent
