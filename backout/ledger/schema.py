"""The ledger's tables: the schema `backout`, its versioned upgrades, connections and row ids."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from backout.errors import BackoutError, first_line
from backout.ledger.records import LedgerConnection
from backout.redact import mask_url

SCHEMA = "backout"

# Advisory-lock keys. The schema key is a fixed 64-bit number; app keys are derived from the name.
SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"backout ledger schema").digest()[:8], "big", signed=True)

# Each entry upgrades the schema by one version; entries are only ever appended.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE backout.checkpoints (
        id text PRIMARY KEY,
        app text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('deploy', 'safety')),
        status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'complete', 'failed')),
        release_version integer,
        release_id text,
        slug_id text,
        slug_commit text,
        previous_release_version integer,
        backup_strategy text NOT NULL,
        migration_tool text NOT NULL,
        request_id text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        completed_at timestamptz,
        wal_lsn pg_lsn,
        config_fingerprint text,
        backup jsonb,
        database jsonb,
        migrations_before jsonb,
        migrations_after jsonb,
        down_scripts jsonb,
        irreversible jsonb,
        reversible boolean GENERATED ALWAYS AS (coalesce(jsonb_array_length(irreversible), 0) = 0) STORED,
        error text,
        verified_healthy_at timestamptz
    );
    CREATE INDEX checkpoints_app_created ON backout.checkpoints (app, created_at DESC);
    CREATE INDEX checkpoints_app_release ON backout.checkpoints (app, release_version);

    CREATE TABLE backout.requests (
        id text PRIMARY KEY,
        app text NOT NULL,
        kind text NOT NULL DEFAULT 'heroku',
        target text NOT NULL,
        db text NOT NULL,
        dry_run boolean NOT NULL DEFAULT false,
        requested_by text NOT NULL,
        status text NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'refused')),
        plan jsonb,
        params jsonb,
        result jsonb,
        error text,
        job_id text,
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX requests_app_created ON backout.requests (app, created_at DESC);
    CREATE INDEX requests_status ON backout.requests (status);

    CREATE TABLE backout.steps (
        id bigserial PRIMARY KEY,
        request_id text NOT NULL REFERENCES backout.requests (id) ON DELETE CASCADE,
        step text NOT NULL,
        status text NOT NULL CHECK (status IN ('started', 'done', 'failed', 'skipped')),
        detail jsonb,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX steps_request ON backout.steps (request_id, id);

    CREATE TABLE backout.health_events (
        id text PRIMARY KEY,
        app text NOT NULL,
        release_version integer,
        kind text NOT NULL,
        verdict text,
        reason text,
        detail jsonb,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX health_events_app_at ON backout.health_events (app, at DESC);
    """,
    # Probe samples, for the web page's chart (see backout.ledger.probes).
    """
    CREATE TABLE backout.probe_samples (
        id bigserial PRIMARY KEY,
        app text NOT NULL,
        release_version integer,
        url text NOT NULL,
        at timestamptz NOT NULL,
        outcome text NOT NULL CHECK (outcome IN ('pass', 'fail', 'error')),
        status integer,
        elapsed real,
        counted boolean NOT NULL DEFAULT true
    );
    CREATE INDEX probe_samples_app_at ON backout.probe_samples (app, at DESC);
    """,
    # Durable checkpoints (issue 14): the uploads a checkpoint recorded, its last restore drill,
    # and the pruning of its archive by BACKOUT_KEEP.
    """
    ALTER TABLE backout.checkpoints
        ADD COLUMN files jsonb,
        ADD COLUMN drilled_at timestamptz,
        ADD COLUMN drill jsonb,
        ADD COLUMN pruned_at timestamptz,
        ADD COLUMN pruned jsonb;
    """,
    # The compatibility verdict of the release's pending migrations (backout.verdict).
    "ALTER TABLE backout.checkpoints ADD COLUMN verdict jsonb",
    # The ledger's identity, which names its queues (apps sharing a Redis keep to their own jobs);
    # a copy of the ledger (a promoted database) keeps it, as the oldest row. And 'abandoned':
    # a checkpoint whose process was killed before it finished.
    """
    CREATE TABLE backout.identity (
        id text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    INSERT INTO backout.identity (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
    ALTER TABLE backout.checkpoints DROP CONSTRAINT checkpoints_status_check;
    ALTER TABLE backout.checkpoints ADD CONSTRAINT checkpoints_status_check
        CHECK (status IN ('running', 'complete', 'failed', 'abandoned'));
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

CHECKPOINT_FIELDS = {
    "status": "text", "wal_lsn": "pg_lsn", "config_fingerprint": "text", "backup": "jsonb",
    "database": "jsonb", "migrations_before": "jsonb", "migrations_after": "jsonb",
    "down_scripts": "jsonb", "irreversible": "jsonb", "completed_at": "timestamptz", "error": "text",
    "verified_healthy_at": "timestamptz", "release_id": "text", "slug_id": "text", "slug_commit": "text",
    "previous_release_version": "integer", "request_id": "text", "files": "jsonb", "drilled_at": "timestamptz",
    "drill": "jsonb", "pruned_at": "timestamptz", "pruned": "jsonb", "verdict": "jsonb",
}
REQUEST_FIELDS = {
    "status": "text", "plan": "jsonb", "params": "jsonb", "result": "jsonb", "error": "text",
    "started_at": "timestamptz", "finished_at": "timestamptz", "job_id": "text", "attempts": "integer",
}




_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id = (0, 0)


def new_id(prefix: str) -> str:
    """`prefix_` and a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32.

    Ids sort by creation time; within one millisecond in one process the random part counts up,
    so ids made in sequence still sort in order.
    """
    global _last_id
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            ms, rand = last_ms, (last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id = (ms, rand)
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"




def connect(url: str) -> LedgerConnection:
    """An autocommit connection with dict rows, the session in UTC, the ledger schema current."""
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackoutError(f"cannot connect to the ledger database {mask_url(url)}: {first_line(exc)}") from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ledger_id(conn: psycopg.Connection[Any]) -> str:
    """The ledger's identity: the same for every connection to it and for a copy made of it."""
    row = conn.execute(f"SELECT id FROM {SCHEMA}.identity ORDER BY created_at, id LIMIT 1").fetchone()
    assert row is not None, "the schema's upgrades insert the identity"
    return str(row["id"] if isinstance(row, dict) else row[0])


def ensure_schema(conn: LedgerConnection) -> None:
    """Create or upgrade the ledger's tables. Cheap when they are current (one query, no lock)."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # A transaction-scoped advisory lock: released by COMMIT/ROLLBACK even if this process dies.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL)"
        )
        row = conn.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
        current = row["version"] if row else 0
        if current > SCHEMA_VERSION:
            raise BackoutError(
                f"the ledger schema is version {current}, newer than this backout understands "
                f"({SCHEMA_VERSION}); upgrade backout"
            )
        for script in _MIGRATIONS[current:]:
            conn.execute(script)
        if row:
            conn.execute(f"UPDATE {SCHEMA}.schema_version SET version = %s", (SCHEMA_VERSION,))
        else:
            conn.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))


def _schema_version(conn: LedgerConnection) -> int | None:
    row = conn.execute("SELECT to_regclass(%s) AS t", (f"{SCHEMA}.schema_version",)).fetchone()
    if row is None or row["t"] is None:
        return None
    row = conn.execute(f"SELECT version FROM {SCHEMA}.schema_version").fetchone()
    if row and row["version"] > SCHEMA_VERSION:
        raise BackoutError(
            f"the ledger schema is version {row['version']}, newer than this backout understands "
            f"({SCHEMA_VERSION}); upgrade backout"
        )
    return row["version"] if row else None
