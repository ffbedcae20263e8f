"""Reading pg_dump custom-format archives as they stream: the TOC and each table's row count,
however the bytes are cut, from real archives written by the installed pg_dump."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from backout.backups import pg_dump
from backout.backups.archive import BlockFinder, Scanner, row_boundary
from backout.errors import BackoutError
from backout.rollback.database import stream
from backout.storage.config import StorageSettings

pytestmark = pytest.mark.integration


def _archive(url: str, path: Path) -> bytes:
    subprocess.run(["pg_dump", "--format=custom", "--compress=0", "--exclude-schema=backout", "-f", str(path), url],
                   check=True)
    return path.read_bytes()


def _awkward_tables(database: str) -> None:
    """Rows whose lengths put a line-end byte into the chunk headers (10, 266, 2570 bytes), rows
    longer than a read, one-byte rows, an empty table, a table with line ends inside values."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA reporting")
        conn.execute("CREATE TABLE public.sized (v text)")
        # A COPY text row is the value and a line end: lengths 10, 266 and 2570 need 9, 265, 2569.
        for n, times in ((9, 7), (265, 5), (2569, 3), (200_000, 2), (1, 4)):
            conn.execute("INSERT INTO sized SELECT repeat('x', %s) FROM generate_series(1, %s)", [n, times])
        conn.execute("CREATE TABLE public.empty (a int)")
        conn.execute("CREATE TABLE reporting.notes (id int, body text)")
        conn.execute("INSERT INTO reporting.notes SELECT g, E'line one\\nline two\\\\.\\n' FROM generate_series(1, 1000) g")


@pytest.fixture
def awkward(database: str, tmp_path: Path) -> bytes:
    """The awkward tables and a large object."""
    _awkward_tables(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT lo_from_bytea(0, '\\x0a0a0a'::bytea)")
    return _archive(database, tmp_path / "awkward.dump")


@pytest.fixture
def awkward_rows(database: str, tmp_path: Path) -> bytes:
    """The awkward tables alone: every block is rows, as in a backout archive without large objects."""
    _awkward_tables(database)
    return _archive(database, tmp_path / "rows.dump")


def _blocks(data: bytes, start: int) -> tuple[dict[int, int], set[int]]:
    """Walked one chunk at a time, the way pg_restore reads: where each block begins, and where
    each chunk of rows begins."""
    starts, chunks, at = {}, set(), start
    while at < len(data):
        starts[int.from_bytes(data[at + 2:at + 6], "little")] = at
        at += 6
        while True:
            length = int.from_bytes(data[at + 1:at + 5], "little")
            chunks.add(at)
            at += 5 + length
            if not length:
                break
    return starts, chunks


EXPECTED = {"public.sized": 21, "public.empty": 0, "reporting.notes": 1000}


@pytest.mark.parametrize("size", [1, 5, 7, 64, 4096, 1 << 20])
def test_row_counts_do_not_depend_on_how_the_stream_is_cut(awkward: bytes, size: int) -> None:
    scanner = Scanner()
    for start in range(0, len(awkward), size):
        scanner.feed(awkward[start:start + size])
    archive = scanner.finish()
    assert archive.row_counts() == EXPECTED
    assert archive.blobs == 1
    assert archive.schemas() == {"public", "reporting"}
    assert {e.qualified for e in archive.table_data()} == set(EXPECTED)


def test_the_toc_alone_is_read_without_the_data(awkward: bytes, tmp_path: Path) -> None:
    path = tmp_path / "a.dump.zst"
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(awkward))
    toc = stream.read_toc(path)
    assert {e.desc for e in toc.entries} >= {"TABLE", "TABLE DATA", "SCHEMA", "BLOB"}
    assert toc.row_counts() is None  # not read to the end


def test_a_cut_short_or_foreign_stream_is_an_error(awkward: bytes) -> None:
    scanner = Scanner()
    scanner.feed(awkward[: len(awkward) // 2])
    with pytest.raises(BackoutError, match="ends inside"):
        scanner.finish()
    with pytest.raises(BackoutError, match="no PGDMP header"):
        Scanner().feed(b"-- a plain SQL dump\n")
    with pytest.raises(BackoutError, match="ends inside its header"):
        Scanner().finish()


def test_a_checkpoint_archive_streams_with_its_counts_and_refuses_damage(database: str, tmp_path: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 5000) g")
    backup = pg_dump.dump(database, tmp_path / "cp.dump.zst")
    seen = []
    archive = stream.pump(Path(backup["path"]), backup, seen.append, lambda line: None)
    assert archive.row_counts() == {"public.t": 5000}
    assert sum(map(len, seen)) == backup["dump_size"]

    cut = tmp_path / "cut.dump.zst"
    cut.write_bytes(Path(backup["path"]).read_bytes()[:-64])
    with pytest.raises(BackoutError, match="was changed or cut short"):
        stream.locate({**backup, "path": str(cut)}, StorageSettings()).check()
    with pytest.raises(BackoutError, match="truncated or damaged|corrupt"):
        stream.pump(cut, {**backup, "path": str(cut)}, lambda chunk: None, lambda line: None)
    with pytest.raises(BackoutError, match="not on this machine"):
        stream.locate({**backup, "path": str(tmp_path / "gone.dump.zst")}, StorageSettings()).check()


@pytest.mark.parametrize("size", [1, 7, 20, 21, 22, 4096, 1 << 20])
def test_every_data_block_is_found_however_the_stream_is_cut(awkward_rows: bytes, size: int) -> None:
    scanner = Scanner()
    scanner.feed(awkward_rows)
    archive = scanner.finish()
    finder = BlockFinder.for_archive(archive)
    assert finder is not None
    for start in range(0, len(awkward_rows), size):
        finder.feed(awkward_rows[start:start + size], start)
    expected, _ = _blocks(awkward_rows, archive.data_start)
    assert finder.all_found and finder.starts == expected
    assert set(expected) == {e.dump_id for e in archive.table_data()}


def test_blocks_are_not_looked_for_beside_large_objects(awkward: bytes) -> None:
    scanner = Scanner()
    scanner.feed(awkward)
    assert BlockFinder.for_archive(scanner.finish()) is None


def test_a_row_boundary_is_always_a_chunks_start(awkward_rows: bytes) -> None:
    scanner = Scanner()
    scanner.feed(awkward_rows)
    archive = scanner.finish()
    _, chunks = _blocks(awkward_rows, archive.data_start)
    found = set()
    for offset in range(archive.data_start, len(awkward_rows)):
        at = row_boundary(awkward_rows[offset:offset + 4096])
        if at is not None:
            assert offset + at in chunks, offset
            found.add(offset + at)
    # Most are found: all but those after rows too short to be sure of (1-byte rows) and the
    # blocks' first chunks.
    assert len(found) > 0.9 * len(chunks)
