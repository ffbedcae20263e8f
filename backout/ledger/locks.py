"""PostgreSQL advisory locks: one rollback per app at a time, one release phase per release, and a
lock held by whoever is taking a checkpoint (so that a checkpoint left 'running' by a killed
process can be told from one still being taken)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.rows import tuple_row

from backout.errors import BackoutError, first_line
from backout.redact import mask_url


def lock_key(name: str) -> int:
    """The 64-bit advisory-lock key of a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def app_lock_key(app: str) -> int:
    """The 64-bit advisory-lock key of an app."""
    return lock_key(f"backout app {app}")


def checkpoint_lock_key(checkpoint_id: str) -> int:
    """The key the process taking a checkpoint holds until the checkpoint is finished."""
    return lock_key(f"backout checkpoint {checkpoint_id}")


@contextmanager
def release_lock(conn: psycopg.Connection[Any], app: str, version: int) -> Iterator[None]:
    """Hold, on `conn`, the lock of one release's release phase while the block runs, waiting
    for another holder (a second release phase of the same release) to finish first. Dropped by
    PostgreSQL if this process dies."""
    key = lock_key(f"backout release {app} v{version}")
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def taker_alive(conn: psycopg.Connection[Any], checkpoint_id: str) -> bool:
    """Whether a process still holds the checkpoint's lock (it is still taking the checkpoint)."""
    key = checkpoint_lock_key(checkpoint_id)
    if not _try_lock(conn, key):
        return True
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return False


# While app_lock holds an app's lock: the extra connections holding it in other databases (a
# promoted rollback database the ledger moved to), closed (so released) when app_lock lets go.
_carried: dict[str, list[psycopg.Connection[Any]]] = {}


def carry_app_lock(app: str, url: str) -> None:
    """Also hold the app's lock in the database at `url` for as long as app_lock holds it here:
    taken before the ledger moves there, so that no worker reading the new ledger can start the
    same rollback while this one finishes it. BackoutError when someone there holds it already."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackoutError(f"cannot connect to {mask_url(url)} to hold {app}'s lock there: {first_line(exc)}") from None
    if not _try_lock(conn, app_lock_key(app)):
        conn.close()
        raise BackoutError(f"another process holds the rollback lock of {app} in {mask_url(url)}")
    _carried.setdefault(app, []).append(conn)


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
            held = _try_lock(conn, key)
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
            if held:
                for other in _carried.pop(app, []):
                    other.close()
            if held and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def _try_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    row = conn.cursor(row_factory=tuple_row).execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])
