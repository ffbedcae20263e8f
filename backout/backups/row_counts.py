"""Each table's row count in the very snapshot pg_dump dumps, taken while it dumps.

A restore verifies the copy it made against these counts before the app sees it. Counting the
archive's rows instead means walking every row's chunk header in Python (pg_dump writes one chunk
per row): about as long as the dump itself on small rows. Here the server counts, in C, in a
transaction whose snapshot pg_dump imports (`pg_dump --snapshot`), on its own connection while
pg_dump runs: exact for the archive, and off the dump's critical path.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from backout.errors import BackoutError, first_line
from backout.redact import mask_url

# What pg_dump leaves out or holds no rows of: the catalogs, and backout's own ledger schema.
SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "backout")


class SnapshotCounter(threading.Thread):
    """Exports a snapshot (`.snapshot`, for pg_dump's --snapshot), counts every ordinary table's
    rows in it on a thread, and keeps the snapshot until `finish()` returns the counts."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        try:
            self.conn = psycopg.connect(database_url, connect_timeout=10)
        except psycopg.OperationalError as exc:
            # The dump cannot start without it: said as pg_dump's own failure would be.
            raise BackoutError(f"pg_dump failed: cannot connect to {mask_url(database_url)}: {first_line(exc)}") from None
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.snapshot: str = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            tables = self.conn.execute(
                """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND n.nspname <> ALL(%s)
                     AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'""",
                [list(SKIPPED_SCHEMAS)]).fetchall()
            for schema, table in tables:
                row = self.conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))).fetchone()
                self.counts[f"{schema}.{table}"] = row[0] if row else 0
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by finish()
            self.error = exc

    def finish(self) -> dict[str, int]:
        """The counts, once pg_dump no longer needs the snapshot; the transaction is ended."""
        self.join()
        self.close()
        if self.error is not None:
            if isinstance(self.error, psycopg.Error):
                raise BackoutError(f"counting the rows of the dump's snapshot failed: {first_line(self.error)}")
            raise self.error
        return self.counts

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass
