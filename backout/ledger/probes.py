"""Probe samples: every probe the health monitor made while watching a release, for the web page's
chart (latency and outcome over time). Health events record what the probes meant; samples are the
raw measurements, passing ones included, kept for SAMPLE_DAYS.
"""

from __future__ import annotations

from typing import Any, Sequence, cast

from backout.defaults import DAY
from backout.ledger.records import LedgerConnection, ProbeSampleRow
from backout.ledger.rows import plain
from backout.ledger.schema import SCHEMA

SAMPLE_DAYS = 14


def record_probe_samples(conn: LedgerConnection, samples: Sequence[dict[str, Any]]) -> None:
    """Write samples (`app`, `release_version`, `url`, `at` as epoch seconds, `outcome`, `status`,
    `elapsed` in seconds, `counted`) in one round-trip."""
    if not samples:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {SCHEMA}.probe_samples (app, release_version, url, at, outcome, status, elapsed, counted)
                VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, %s, %s)""",
            [(s["app"], s["release_version"], s["url"], s["at"], s["outcome"], s.get("status"), s.get("elapsed"),
              s.get("counted", True)) for s in samples])


def probe_samples(conn: LedgerConnection, app: str, limit: int = 5000) -> list[ProbeSampleRow]:
    """An app's newest `limit` samples, oldest first."""
    rows = conn.execute(
        f"""SELECT * FROM (SELECT app, release_version, url, at, outcome, status, elapsed, counted
                           FROM {SCHEMA}.probe_samples WHERE app = %s ORDER BY at DESC, id DESC LIMIT %s) AS newest
            ORDER BY at""", (app, limit)).fetchall()
    return [cast(ProbeSampleRow, plain(r)) for r in rows]


def prune_probe_samples(conn: LedgerConnection, days: float = SAMPLE_DAYS) -> int:
    """Delete samples older than `days`; returns how many."""
    return conn.execute(
        f"DELETE FROM {SCHEMA}.probe_samples WHERE at < clock_timestamp() - make_interval(secs => %s)",
        (days * DAY,)).rowcount
