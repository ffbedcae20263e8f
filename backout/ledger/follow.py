"""A ledger connection that follows the ledger when a promotion moves it to another database.

With the ledger in the app's database (the default), a point-in-time restore copies the ledger
into the rollback database and promotes that database: from then on the ledger the app uses is
the copy. A job that goes on writing through its connection to the old database would leave its
record there, where nobody looks. `FollowingConnection` is the job's connection: `follow(url)`
moves it, and every ledger call made through it afterwards reads and writes the new ledger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backout.ledger.records import LedgerConnection
from backout.ledger.schema import connect

if TYPE_CHECKING:
    # To the type checker it is the connection it stands for, plus `follow`.
    _Base = LedgerConnection
else:
    _Base = object


class FollowingConnection(_Base):
    """A ledger connection (psycopg's, by delegation) that `follow` can point at another ledger."""

    def __init__(self, conn: LedgerConnection) -> None:  # noqa: D107 - no super(): it delegates
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> FollowingConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def follow(self, url: str) -> None:
        """From now on, the ledger at `url`."""
        old, self._conn = self._conn, connect(url)
        old.close()
