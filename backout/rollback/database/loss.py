"""What a database rollback discards: every write since the restore point, estimated from what
the database can tell.

Two measures, both read from the live database:

- WAL written since the checkpoint's recorded WAL position (`pg_wal_lsn_diff`): exact, but for
  the whole server (other databases on it count too) and in bytes, not rows. Zero means nothing
  was written since, so nothing is lost.
- Rows changed: `pg_stat_user_tables` counts the rows each table had inserted, updated and deleted
  since its statistics began (`pg_stat_database.stats_reset`, or the server's start when they
  were never reset). The checkpoint did not record those counters, so the share since the
  checkpoint is estimated by assuming writes came at an even rate over that period (prorated by
  time); when the statistics began after the checkpoint, the counts are all since it and are a
  lower bound. The ledger's own schema is left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from backout.rollback.database import pgtools

LEDGER_SCHEMA = "backout"
TOP_TABLES = 10


def estimate(conn: psycopg.Connection[Any], since: str, wal_lsn: str | None) -> dict[str, Any]:
    cur = conn.cursor(row_factory=tuple_row)
    now, wal_bytes, stats_reset, server_start = pgtools.one(cur.execute(
        """SELECT now(),
                  CASE WHEN %(lsn)s::pg_lsn IS NULL OR pg_current_wal_lsn() < %(lsn)s::pg_lsn THEN NULL
                       ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), %(lsn)s::pg_lsn)::bigint END,
                  (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                  pg_postmaster_start_time()""",
        {"lsn": wal_lsn}))
    tables = cur.execute(
        """SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del
           FROM pg_stat_user_tables WHERE schemaname <> %s ORDER BY 2 DESC, 1""", [LEDGER_SCHEMA]).fetchall()
    checkpoint_time = datetime.fromisoformat(since)
    counted_from = stats_reset or server_start
    seconds = max(0.0, (now - checkpoint_time).total_seconds())
    if counted_from >= checkpoint_time:
        share, how = 1.0, "all counted since the checkpoint (the statistics began after it): a lower bound"
    else:
        share = seconds / max(1.0, (now - counted_from).total_seconds())
        how = (f"prorated: {seconds:.0f}s since the checkpoint of {(now - counted_from).total_seconds():.0f}s "
               f"of statistics (since {counted_from.isoformat()}), assuming an even write rate")
    changed = sum(n for _, n in tables)
    return {
        "since": since,
        "seconds_since": round(seconds, 1),
        "wal_bytes_since": wal_bytes,
        "nothing_written_since": wal_bytes == 0,
        "rows_changed_estimate": round(changed * share),
        "tables": [{"table": name, "rows_changed_estimate": round(n * share)} for name, n in tables[:TOP_TABLES] if n],
        "method": ("rows inserted+updated+deleted per pg_stat_user_tables, " + how
                   + "; WAL bytes since the checkpoint's WAL position (exact, whole server)"),
    }
