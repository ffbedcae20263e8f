"""Reading a pg_dump custom-format archive as it streams by: its table of contents, and how many
rows each table's data holds.

A restore verifies itself against the archive, not against the copy it made: the row counts come
from the archive's data blocks, counted while the bytes stream to pg_restore, or, for a parallel
restore, from the decompressed copy while pg_restore reads it, so they cost no time of their own.

The format (PostgreSQL's src/bin/pg_dump/pg_backup_archiver.c and pg_backup_custom.c): a header,
the TOC entries, then one block per entry with data: a type byte, the entry's dump id, then chunks
(a length, then that many bytes) up to a zero length. An integer is a sign byte and `intSize`
little-endian bytes. backout's archives are written uncompressed (`-Z0`), so a table's chunks are
its rows in COPY text format, one line each, and then pg_dump's end-of-data marker `\\.` and two
empty lines; a compressed archive is read for its TOC only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from backout.errors import BackoutError

MAGIC = b"PGDMP"
_HEADER = struct.Struct("<BI")  # a chunk's length: sign byte, 4 little-endian bytes
_SMALL = 64  # chunks up to this size are read whole
# Chunk lengths below 64 KiB whose little-endian bytes hold a line end (0x0A).
# Written out (its low byte or its second byte is 0x0A) rather than searched for: a release phase imports this.
_NEWLINE_LENGTHS = frozenset([0x0A + (k << 8) for k in range(256)] + [0x0A00 + j for j in range(256)])
BLK_DATA = 1
BLK_BLOBS = 3
# Archive versions this reader knows (PostgreSQL 12 to 17 write 1.14 to 1.16).
K_VERS_1_14 = (1, 14)
K_VERS_1_15 = (1, 15)
K_VERS_1_16 = (1, 16)
OLDEST = (1, 12)
END_OF_COPY = b"\\.\n\n\n"  # what pg_dump writes after a table's rows
# Entries pg_restore applies to the session or only with --create: not listed, not restored.
SESSION_ENTRIES = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"})
# An entry's section (pg_backup.h's teSection).
SECTION_PRE_DATA, SECTION_POST_DATA = 2, 4
# An entry's data state in the TOC: it has no data block (pg_backup_custom.c's K_OFFSET_NO_DATA).
_NO_DATA = 3


@dataclass
class TocEntry:
    dump_id: int
    tag: str
    desc: str
    namespace: str | None
    owner: str | None
    defn: str | None
    section: int = SECTION_PRE_DATA
    dependencies: tuple[int, ...] = ()
    has_block: bool = False  # a data block follows the TOC for it (table rows, large objects)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.tag}" if self.namespace else self.tag


@dataclass
class Archive:
    """What the scanner found: the header facts, the TOC, and per-entry row counts."""

    version: tuple[int, int, int] = (0, 0, 0)
    compressed: bool = False
    database: str | None = None
    server_version: str | None = None
    entries: list[TocEntry] = field(default_factory=list)
    rows: dict[int, int] = field(default_factory=dict)  # dump id -> rows in its data block
    uncounted: set[int] = field(default_factory=set)  # data blocks not in COPY text format
    blobs: int = 0
    complete: bool = False  # every byte seen and the last block ended where it should
    int_size: int = 4
    data_start: int = 0  # offset of the first data block: the header and TOC are the bytes before it

    def listed_entries(self) -> list[TocEntry]:
        """The entries `pg_restore --list` lists: all but the session settings and the database's own."""
        return [e for e in self.entries if e.desc not in SESSION_ENTRIES]

    def table_data(self) -> list[TocEntry]:
        return [e for e in self.entries if e.desc == "TABLE DATA"]

    def schemas(self) -> set[str]:
        """The schemas the archive puts objects in (the ones it creates, and the ones its objects live in)."""
        found = {e.namespace for e in self.entries if e.namespace}
        found |= {e.tag for e in self.entries if e.desc == "SCHEMA"}
        return found

    def with_rows(self, rows: dict[str, int]) -> "Archive | None":
        """This table of contents with the row counts recorded when the archive was written
        ("schema.table" -> rows), or None unless every table with data has one."""
        data = self.table_data()
        if self.compressed or any(e.qualified not in rows for e in data):
            return None
        return Archive(version=self.version, database=self.database, server_version=self.server_version,
                       entries=list(self.entries), rows={e.dump_id: rows[e.qualified] for e in data},
                       blobs=self.blobs, complete=True, int_size=self.int_size, data_start=self.data_start)

    def row_counts(self) -> dict[str, int] | None:
        """"schema.table" -> rows, for every table with data; None when rows could not be counted."""
        if self.compressed or not self.complete or self.uncounted:
            return None
        return {e.qualified: self.rows.get(e.dump_id, 0) for e in self.table_data()}


class _NeedMore(Exception):
    """The bytes seen so far end inside the structure being read."""


class Scanner:
    """Feed it the archive's bytes in order (`feed`), then `finish()`; read `.archive`.

    The header and TOC are parsed once they have arrived whole; after that each data block's
    chunks are walked and the line ends inside them counted, without keeping the data.
    """

    def __init__(self) -> None:
        self.archive = Archive()
        self._buf = bytearray()
        self._pos = 0  # offset of the first unread byte in _buf
        self._in_toc = True
        self._int_size = 4
        self._block: int | None = None  # dump id of the table data block being walked
        self._blobs = False  # inside a block of large objects
        self._blob_open = False  # inside one large object's chunks
        self._chunk_left = 0  # bytes of the current chunk still to come
        self._marker = False  # the last chunk of the table data block was pg_dump's end-of-data marker

    @property
    def in_toc(self) -> bool:
        """True until the header and the whole table of contents have been read."""
        return self._in_toc

    def feed(self, data: bytes | bytearray) -> None:
        start = 0
        if self._chunk_left:
            # Most of the stream is the body of chunks: count it in the caller's buffer, uncopied.
            start = min(self._chunk_left, len(data))
            self._count(data, 0, start)
            self._chunk_left -= start
            if start == len(data):
                return
        self._buf += data[start:] if start else data
        try:
            if self._in_toc:
                self._pos = 0
                self._read_head_and_toc()
                self._in_toc = False
            self._read_blocks()
        except _NeedMore:
            pass
        if not self._in_toc and self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def finish(self) -> Archive:
        """Check that the stream ended between blocks, and return what was found."""
        if self._in_toc:
            raise BackoutError("the archive ends inside its header or table of contents")
        if self._chunk_left or self._buf or self._block is not None or self._blobs:
            raise BackoutError("the archive ends inside a data block")
        self.archive.complete = True
        return self.archive

    # --- primitives (raise _NeedMore when the bytes are not all there yet) ---------------------

    def _byte(self) -> int:
        if self._pos >= len(self._buf):
            raise _NeedMore
        value = self._buf[self._pos]
        self._pos += 1
        return value

    def _int(self) -> int:
        end = self._pos + 1 + self._int_size
        if end > len(self._buf):
            raise _NeedMore
        sign = self._buf[self._pos]
        value = int.from_bytes(self._buf[self._pos + 1:end], "little")
        self._pos = end
        return -value if sign else value

    def _str(self) -> str | None:
        length = self._int()
        if length < 0:
            return None
        end = self._pos + length
        if end > len(self._buf):
            raise _NeedMore
        text = self._buf[self._pos:end].decode("utf-8", "replace")
        self._pos = end
        return text

    # --- structure ---------------------------------------------------------------------------

    def _read_head_and_toc(self) -> None:
        if len(self._buf) < 5:
            raise _NeedMore
        if bytes(self._buf[:5]) != MAGIC:
            raise BackoutError("not a pg_dump custom-format archive (no PGDMP header)")
        self._pos = 5
        version = (self._byte(), self._byte(), self._byte())
        if not OLDEST <= version[:2] <= K_VERS_1_16:
            raise BackoutError(f"archive version {version[0]}.{version[1]} is not one this backout reads "
                               "(PostgreSQL 12 to 17 write 1.14 to 1.16)")
        self._int_size = self._byte()
        offset_size = self._byte()
        if self._byte() != 1:
            raise BackoutError("the archive is not in pg_dump's custom format")
        compressed = (self._byte() if version[:2] >= K_VERS_1_15 else self._int()) != 0
        for _ in range(7):  # the creation time
            self._int()
        database = self._str()
        server_version = self._str()
        self._str()  # pg_dump's version
        entries = []
        for _ in range(self._int()):
            dump_id = self._int()
            self._int()  # whether it had data
            self._str()  # table oid
            self._str()  # oid
            tag = self._str() or ""
            desc = self._str() or ""
            section = self._int()
            defn = self._str()
            self._str()  # drop statement
            self._str()  # copy statement
            namespace = self._str()
            self._str()  # tablespace
            if version[:2] >= K_VERS_1_14:
                self._str()  # table access method
            if version[:2] >= K_VERS_1_16:
                self._int()  # relkind
            owner = self._str()
            self._str()  # "with oids", always false now
            dependencies = []
            while (dependency := self._str()) is not None:
                dependencies.append(int(dependency))
            data_state = self._byte()
            self._pos += offset_size
            if self._pos > len(self._buf):
                raise _NeedMore
            entries.append(TocEntry(dump_id, tag, desc, namespace, owner, defn, section, tuple(dependencies),
                                    data_state != _NO_DATA))
        self.archive.version = version
        self.archive.compressed = compressed
        self.archive.database = database
        self.archive.server_version = server_version
        self.archive.entries = entries
        self.archive.int_size = self._int_size
        self.archive.data_start = self._pos  # nothing is dropped from _buf before the TOC is whole

    def _read_blocks(self) -> None:
        while self._pos < len(self._buf):
            if self._block is not None and self._int_size == 4:
                self._walk_rows()
                if self._block is not None:
                    return
                continue
            mark = self._pos
            try:
                if self._block is None and not self._blobs:
                    kind = self._byte()
                    dump_id = self._int()
                    if kind == BLK_DATA:
                        self._block = dump_id
                        self._marker = False
                        self.archive.rows.setdefault(dump_id, 0)
                    elif kind == BLK_BLOBS:
                        self._blobs = True
                    else:
                        raise BackoutError(f"the archive has a data block of unknown type {kind}")
                    continue
                if self._blobs and not self._blob_open:
                    if self._int() == 0:
                        self._blobs = False
                    else:
                        self.archive.blobs += 1
                        self._blob_open = True
                    continue
                length = self._int()
                if length and self._block is not None and length <= _SMALL and self._pos + length > len(self._buf):
                    raise _NeedMore  # a small chunk is read whole, so the end-of-data marker is seen whole
            except _NeedMore:
                self._pos = mark
                raise
            if length == 0:
                if self._blobs:
                    self._blob_open = False
                else:
                    self._end_block()
                continue
            self._chunk(length)

    def _walk_rows(self) -> None:
        """The hot loop: a table's chunks with 4-byte integers (every pg_dump today).

        Line ends are counted once over the whole span walked, headers included, at C speed; a
        header byte that happens to be a line end (a length such as 10 or 2570) is taken back out.
        """
        buf, pos, end_of_buf = self._buf, self._pos, len(self._buf)
        span = pos
        spurious = 0
        marker = self._marker
        unpack = _HEADER.unpack_from
        finished = False
        while pos + 5 <= end_of_buf:
            sign, length = unpack(buf, pos)
            if sign:
                raise BackoutError("the archive has a negative chunk length")
            if length in _NEWLINE_LENGTHS or length > 0xFFFF:
                spurious += length.to_bytes(4, "little").count(10)
            if length == 0:
                pos += 5
                finished = True
                break
            end = pos + 5 + length
            if end > end_of_buf:
                if length <= _SMALL:
                    spurious -= length.to_bytes(4, "little").count(10) if length in _NEWLINE_LENGTHS else 0
                    break
                self._chunk_left = end - end_of_buf
                marker = False
                pos = end_of_buf
                break
            marker = length == 5 and buf[pos + 5:end] == END_OF_COPY
            pos = end
        assert self._block is not None, "a data block's lines are counted only inside a block"
        self.archive.rows[self._block] += buf.count(b"\n", span, pos) - spurious
        self._pos = pos
        self._marker = marker
        if finished:
            self._end_block()

    def _chunk(self, length: int) -> None:
        take = min(length, len(self._buf) - self._pos)
        if self._block is not None:
            self._count(self._buf, self._pos, self._pos + take)
            self._marker = take == length == len(END_OF_COPY) and self._buf[self._pos:self._pos + take] == END_OF_COPY
        self._pos += take
        if take < length:
            self._chunk_left = length - take
            raise _NeedMore

    def _count(self, data: bytes | bytearray, start: int, end: int) -> None:
        if self._block is not None and not self._blobs:
            self.archive.rows[self._block] += data.count(b"\n", start, end)
            self._marker = False

    def _end_block(self) -> None:
        assert self._block is not None
        if self._marker:
            self.archive.rows[self._block] -= END_OF_COPY.count(b"\n")
        else:
            self.archive.uncounted.add(self._block)
        self._block = None


def scan_file(path: str) -> Archive:
    """Scan a whole (decompressed) archive file."""
    scanner = Scanner()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            scanner.feed(chunk)
    return scanner.finish()


class BlockFinder:
    """Where each data block of a backout archive begins, found as the decompressed bytes stream by,
    at C speed and without walking the rows (which `Scanner` does, a chunk at a time).

    It works for archives whose every block is a table's rows in COPY text (every backout archive
    without large objects; `works_for` tells). The first block begins right after
    the table of contents; every other one right after the previous one's last two chunks, pg_dump's
    end-of-data marker and the zero length that ends a block. COPY text holds no NUL bytes, so this
    sequence of 21 bytes, ending with the next block's header, cannot occur inside a block's rows.
    """

    def __init__(self, archive: Archive, expected: list[int]) -> None:
        self.starts: dict[int, int] = {}
        self._expected = expected
        self._next = 0
        self._window = bytearray()
        self._window_offset = archive.data_start

    @staticmethod
    def works_for(archive: Archive) -> bool:
        blocks = [e for e in archive.entries if e.has_block]
        return bool(blocks) and not archive.compressed and archive.int_size == 4 and \
            all(e.desc == "TABLE DATA" for e in blocks)

    @classmethod
    def for_archive(cls, archive: Archive) -> "BlockFinder | None":
        if not cls.works_for(archive):
            return None
        return cls(archive, [e.dump_id for e in archive.entries if e.has_block])

    def feed(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """The archive's bytes from stream offset `offset` on (the first call at or before
        `archive.data_start`, then each call where the last one ended)."""
        skip = max(0, self._window_offset + len(self._window) - offset)
        self._window += data[skip:]
        keep = 0
        while self._next < len(self._expected):
            dump_id = self._expected[self._next]
            header = block_header(dump_id)
            if self._next == 0:
                if len(self._window) < len(header):
                    break
                if self._window[:len(header)] != header:
                    raise BackoutError("the archive's first data block is not where its table of contents ends")
                found = 0
            else:
                at = self._window.find(_BLOCK_END + header, keep)
                if at < 0:
                    break
                found = at + len(_BLOCK_END)
            self.starts[dump_id] = self._window_offset + found
            self._next += 1
            keep = found
        # The last bytes may hold the start of a boundary that the next bytes complete.
        drop = max(keep, len(self._window) - (len(_BLOCK_END) + _BLOCK_HEADER_SIZE - 1))
        del self._window[:drop]
        self._window_offset += drop

    @property
    def all_found(self) -> bool:
        return self._next == len(self._expected)


# What ends a block: a chunk of length zero.
BLOCK_TERMINATOR = _HEADER.pack(0, 0)
# The end of a table's data block: the end-of-data marker's chunk, then the terminator.
_BLOCK_END = _HEADER.pack(0, len(END_OF_COPY)) + END_OF_COPY + BLOCK_TERMINATOR
_BLOCK_HEADER_SIZE = 1 + _HEADER.size  # the block type, then the dump id


def block_header(dump_id: int) -> bytes:
    """What begins entry `dump_id`'s data block."""
    return bytes([BLK_DATA]) + _HEADER.pack(0, dump_id)


def row_boundary(data: bytes) -> int | None:
    """The first place in `data` (bytes from inside a table's data block, rows in COPY text, one
    chunk each) where a chunk begins after a whole row, or None if there is none to be sure of.

    Inside a block, a 0x00 byte is always part of a chunk's header (COPY text holds no NUL), and a
    line end (0x0A) either ends a row or is one of a header's length bytes. A line end followed by
    0x00 is therefore a row's end and the next header's sign byte, unless the line end is a length
    byte, which puts that header's sign byte (0x00) one to three bytes before it. So a line end
    with three non-NUL bytes before it and 0x00 after it is certain: no guessing, however the rows
    look."""
    at = data.find(b"\n\x00", 3)
    while at >= 0:
        if 0 not in data[at - 3:at]:
            return at + 1
        at = data.find(b"\n\x00", at + 1)
    return None
