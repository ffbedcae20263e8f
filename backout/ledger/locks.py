"""One rollback per app at a time: a PostgreSQL advisory lock per app."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import psycopg

from backout.errors import BackoutError, first_line
from backout.redact import mask_url


def app_lock_key(app: str) -> int:
    """The 64-bit advisory-lock key of an app."""
    return int.from_bytes(hashlib.sha256(f"backout app {app}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def app_lock(url: str, app: str, wait: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold the app's advisory lock on a connection of its own while the block runs.

    Yields True when held. Yields False, without waiting, when `wait` is False and another session
    holds it, or after `timeout` seconds of waiting. The lock is a session lock, so it goes away if
    this process dies and the connection closes.
    """
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackoutError(f"cannot connect to the ledger database {mask_url(url)}: {first_line(exc)}") from None
    key = app_lock_key(app)
    try:
        if not wait:
            held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        elif timeout is not None:
            conn.execute(f"SET lock_timeout = {max(1, int(timeout * 1000))}")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                held = True
            except psycopg.errors.LockNotAvailable:
                held = False
            conn.execute("SET lock_timeout = 0")
        else:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            held = True
        try:
            yield held
        finally:
            if held and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def _writer_key(checkpoint_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"backout checkpoint {checkpoint_id}".encode()).digest()[:8], "big", signed=True)


def hold_checkpoint(conn: psycopg.Connection, checkpoint_id: str) -> None:
    """Mark, for as long as this session lives, that it is writing the checkpoint: a process killed
    mid-checkpoint loses its session, so its leftovers can be told from work still under way."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_writer_key(checkpoint_id),))


def release_checkpoint(conn: psycopg.Connection, checkpoint_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (_writer_key(checkpoint_id),))


def checkpoint_being_written(conn: psycopg.Connection, checkpoint_id: str) -> bool:
    """Whether another live session holds the checkpoint (see hold_checkpoint)."""
    key = _writer_key(checkpoint_id)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    got = row[0] if isinstance(row, tuple) else next(iter(row.values()))
    if got:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return not got
