"""Keeping the ledger current when the app's database is replaced under it.

The ledger (schema `backout`) lives in the app's database unless BACKOUT_DATABASE_URL says
otherwise. A pg_dump checkpoint leaves it out, but a Heroku backup holds the whole database, ledger
included, and a point-in-time rollback is a whole database as it was: restoring either would
rewind the ledger that records the restore. So:

- around a Data API restore, the ledger is read out first (`snapshot`) and merged back after
  (`merge`): its rows replace the rewound ones, while rows others wrote into the restored ledger
  meanwhile are kept (a clashing serial id is moved, never overwritten);
- before a rollback database is promoted, the current ledger is copied into it (`replace_into`),
  with ledger writes held (`writes_held`) from the copy until the promotion.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from backout import ledger
from backout.rollback.database import pgtools

SCHEMA = ledger.SCHEMA


@dataclass
class Table:
    name: str
    columns: list[str]  # stored columns (generated ones are computed again)
    key: list[str]  # primary key columns
    serial: str | None  # the sequence behind a one-column key, if any
    rows: int = 0
    data: IO[bytes] = field(default=None, repr=False)  # type: ignore[arg-type]  # set by snapshot() before any use


@dataclass
class Snapshot:
    tables: list[Table]  # referenced tables before the tables that reference them

    def close(self) -> None:
        for table in self.tables:
            table.data.close()

    def rows(self) -> dict[str, int]:
        return {t.name: t.rows for t in self.tables}


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """Every ledger table's rows (binary COPY into spooled temporary files), in one snapshot: a
    repeatable-read transaction of its own, or the caller's while it holds writes."""
    tables = _tables(conn)
    held = conn.info.transaction_status != TransactionStatus.IDLE
    with conn.transaction():
        if not held:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in tables:
            table.data = tempfile.SpooledTemporaryFile(max_size=16 << 20)
            with conn.cursor().copy(sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(
                    sql.Identifier(SCHEMA, table.name), sql.SQL(", ").join(map(sql.Identifier, table.columns)))) as copy:
                for block in copy:
                    table.data.write(block)
            table.rows = _one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, table.name)))
    return Snapshot(tables)


def merge(url: str, snap: Snapshot) -> dict[str, int]:
    """Put the snapshot's rows back into the ledger at `url` (created or upgraded first): they
    replace rows with the same key; other rows stay. Returns the rows merged per table."""
    with ledger.connect(url) as conn:
        merged = {}
        with conn.transaction():
            for table in snap.tables:
                merged[table.name] = _merge_table(conn, table)
        return merged


def replace_into(url: str, snap: Snapshot) -> dict[str, int]:
    """Make the ledger at `url` exactly the snapshot: its own rows (a rewound ledger) go first."""
    with pgtools.connect(url, "the rolled-back database") as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    return merge(url, snap)


@contextmanager
def writes_held(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Other sessions may read the ledger but not write it while the block runs (the caller must
    not write it either, from another connection)."""
    names = [t.name for t in _tables(conn)]
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
            sql.SQL(", ").join(sql.Identifier(SCHEMA, n) for n in names)))
        yield


def _merge_table(conn: psycopg.Connection[Any], table: Table) -> int:
    temp = f"backout_merge_{table.name}"
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    target = sql.Identifier(SCHEMA, table.name)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
        sql.Identifier(temp), columns, target))
    table.data.seek(0)
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier(temp), columns)) as copy:
        while block := table.data.read(1 << 20):
            copy.write(block)
    if not table.key:
        return 0  # a table without a key (the schema version) is the ledger's own business
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    if table.serial:
        # Rows written into the restored ledger meanwhile may hold ids the snapshot uses: move them.
        seq = sql.Literal(table.serial)
        column = sql.Identifier(table.key[0])
        conn.execute(sql.SQL("SELECT setval({}, greatest((SELECT max({c}) FROM {t}), (SELECT max({c}) FROM {tmp}), 1))").format(
            seq, c=column, t=target, tmp=sql.Identifier(temp)))
        differs = sql.SQL(" OR ").join(
            sql.SQL("t.{c} IS DISTINCT FROM s.{c}").format(c=sql.Identifier(c)) for c in table.columns)
        conn.execute(sql.SQL("UPDATE {t} t SET {c} = nextval({seq}) FROM {tmp} s WHERE t.{c} = s.{c} AND ({differs})").format(
            t=target, c=column, seq=seq, tmp=sql.Identifier(temp), differs=differs))
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in table.columns if c not in table.key)
    conflict = sql.SQL("DO UPDATE SET {}").format(updates) if table.columns != table.key else sql.SQL("DO NOTHING")
    cur = conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT ({key}) {conflict}").format(
        t=target, cols=columns, tmp=sql.Identifier(temp), key=key, conflict=conflict))
    if table.serial:
        conn.execute(sql.SQL("SELECT setval({}, greatest((SELECT max({c}) FROM {t}), 1))").format(
            sql.Literal(table.serial), c=sql.Identifier(table.key[0]), t=target))
    return cur.rowcount


def _tables(conn: psycopg.Connection[Any]) -> list[Table]:
    rows = conn.cursor(row_factory=tuple_row).execute(
        """SELECT c.oid, c.relname,
                  array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                        AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum),
                  array(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a
                        ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                        WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY a.attnum),
                  array(SELECT DISTINCT r.confrelid FROM pg_constraint r WHERE r.conrelid = c.oid
                        AND r.contype = 'f' AND r.confrelid <> c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname""",
        [SCHEMA]).fetchall()
    by_oid = {oid: (name, columns, key, refs) for oid, name, columns, key, refs in rows}
    ordered: list[Table] = []
    placed: set[int] = set()
    while len(placed) < len(by_oid):
        ready = [oid for oid, (_, _, _, refs) in by_oid.items()
                 if oid not in placed and all(r in placed or r not in by_oid for r in refs)]
        if not ready:
            raise RuntimeError("the ledger's tables reference each other in a circle")
        for oid in ready:
            name, columns, key, _ = by_oid[oid]
            serial = None
            if len(key) == 1:
                serial = _one(conn, "SELECT pg_get_serial_sequence(%s, %s)", [f"{SCHEMA}.{name}", key[0]])
            ordered.append(Table(name, list(columns), list(key), serial))
            placed.add(oid)
    return ordered


def _one(conn: psycopg.Connection[Any], query: str | sql.Composed, params: list[Any] | None = None) -> Any:
    # Ledger connections return dict rows; these queries want the one value.
    return pgtools.one(conn.cursor(row_factory=tuple_row).execute(query, params))[0]
