"""Each table's row count in the very snapshot pg_dump dumps, taken while it dumps.

A restore verifies the copy it made against these counts before the app sees it. Counting the
archive's rows instead means walking every row's chunk header in Python (pg_dump writes one chunk
per row): about as long as the dump itself on small rows. Here the server counts, in C, in a
transaction whose snapshot pg_dump imports (`pg_dump --snapshot`), on its own connection while
pg_dump runs: exact for the archive, and off the dump's critical path.

The transaction is held by a `psql` child rather than a psycopg connection: psql answers in
milliseconds, so pg_dump starts before the release phase has imported a database driver (which
takes longer here than dumping a small database).
"""

from __future__ import annotations

import json
import subprocess
import threading

from backout.backups.libpq import client_args, program
from backout.errors import BackoutError
from backout.redact import mask_url, redact

# What pg_dump leaves out or holds no rows of: the catalogs, and backout's own ledger schema.
SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "backout")

_EXPORT = b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n"
# One query per ordinary table, run by psql's \gexec; each prints a JSON pair, so that any table
# name (quotes, newlines) reads back exactly.
_COUNT = (
    "SELECT format('SELECT json_build_array(%L, count(*)) FROM ONLY %I.%I', n.nspname || '.' || c.relname, "
    "n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND n.nspname <> ALL('{"
    + ",".join(SKIPPED_SCHEMAS) + "}'::text[]) "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \\gexec\n"
)


class SnapshotCounter:
    """Exports a snapshot (`.snapshot`, for pg_dump's --snapshot), counts every ordinary table's
    rows in it meanwhile, and keeps the snapshot until `finish()` returns the counts."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        conninfo, env = client_args(database_url)
        env["PGCONNECT_TIMEOUT"] = "10"
        self._secrets = [env["PGPASSWORD"]] if env.get("PGPASSWORD") else []
        self.proc = subprocess.Popen(
            [program("psql"), "--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set=ON_ERROR_STOP=1",
             f"--dbname={conninfo}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._errors: list[bytes] = []
        self._drain = threading.Thread(target=self._read_errors, daemon=True)
        self._drain.start()
        try:
            self.proc.stdin.write(_EXPORT)
            self.proc.stdin.flush()
            line = self.proc.stdout.readline().strip()
        except BrokenPipeError:
            line = b""
        if not line:
            self.close()
            # The dump cannot start without it: said as pg_dump's own failure would be.
            raise BackoutError(f"pg_dump failed: cannot connect to {mask_url(database_url)}: {self._error()}")
        self.snapshot = line.decode()
        # Counted while pg_dump dumps; the transaction stays open until finish() ends it.
        self.proc.stdin.write(_COUNT.encode())
        self.proc.stdin.flush()

    def finish(self) -> dict[str, int]:
        """The counts, once pg_dump no longer needs the snapshot; the transaction is ended."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(b"COMMIT;\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        output = self.proc.stdout.read()
        status = self.proc.wait()
        self._drain.join()
        if status != 0:
            raise BackoutError(f"counting the rows of the dump's snapshot failed: {self._error()}")
        counts: dict[str, int] = {}
        for line in output.splitlines():
            name, rows = json.loads(line)
            counts[name] = int(rows)
        return counts

    def close(self) -> None:
        """End it without counts (the dump failed or was not wanted)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except BrokenPipeError:
                pass
        self._drain.join()

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._errors.append(line)
        self.proc.stderr.close()

    def _error(self) -> str:
        self._drain.join(5)
        lines = [line.decode("utf-8", "replace").strip() for line in self._errors if line.strip()]
        chosen = next((line for line in lines if "error:" in line.lower()), lines[-1] if lines else "no answer")
        for prefix in ("psql: error: ", "psql:<stdin>:", "ERROR:  "):
            if chosen.startswith(prefix):
                chosen = chosen[len(prefix):].strip()
        return redact(chosen, self._secrets)
