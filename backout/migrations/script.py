"""Running a saved SQL script the way the migration tools run theirs.

The tools hand a whole migration file to the server as one query string. PostgreSQL runs such a
multi-statement string as one implicit transaction, even with no BEGIN in it, unless the script
controls transactions itself. Knowing that is what lets a failed non-transactional down script
leave the state table telling the truth.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import psycopg
from psycopg.pq import TransactionStatus

from backout.errors import BackoutError

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK", "START", "END", "ABORT", "SAVEPOINT", "RELEASE"}


@dataclass(frozen=True)
class Statement:
    text: str  # as written, comments included
    code: str  # comments blanked out, for looking at what the statement does

    @property
    def keyword(self) -> str:
        return self.code.split(None, 1)[0].upper()


def statements(sql: str) -> list[Statement]:
    """The statements of a script, split at semicolons outside quotes, dollar quotes and comments.

    Parts that hold only comments and whitespace are dropped.
    """
    found: list[Statement] = []
    code: list[str] = []
    start = i = 0
    n = len(sql)

    def finish(end: int) -> None:
        text = "".join(code).strip()
        if text:
            found.append(Statement(sql[start:end].strip(), text))
        code.clear()

    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            code.append(" ")
        elif sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
            code.append(" ")
        elif c == "'":
            end = _quoted_end(sql, i, "'", backslashes=_escape_string(sql, i))
            code.append(sql[i:end])
            i = end
        elif c == '"':
            end = _quoted_end(sql, i, '"', backslashes=False)
            code.append(sql[i:end])
            i = end
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not _in_word(sql, i):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
            code.append(sql[i:end])
            i = end
        elif c == ";":
            finish(i)
            i += 1
            start = i
        else:
            code.append(c)
            i += 1
    finish(n)
    return found


def is_blank(sql: str | None) -> bool:
    """True when a script holds no statement at all (nothing but comments and whitespace)."""
    return sql is None or not statements(sql)


def controls_transactions(sql: str) -> bool:
    """True when the script itself begins, commits or rolls back transactions."""
    return any(s.keyword in _TRANSACTION_CONTROL for s in statements(sql))


def execute(conn: psycopg.Connection[Any], sql: str) -> None:
    """Send the whole script as one query string (simple query protocol, no parameters)."""
    if not is_blank(sql):
        conn.execute(sql)  # without parameters psycopg leaves `%` alone and allows several statements


@contextmanager
def autocommit(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The connection in autocommit mode for the block, as it was after."""
    was = conn.autocommit
    if not was:
        conn.autocommit = True
    try:
        yield conn
    finally:
        if not was:
            conn.autocommit = False


def require_idle(conn: psycopg.Connection[Any]) -> None:
    """Down migrations commit step by step, so they cannot run inside someone else's transaction."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise BackoutError(
            "down migrations need a database connection with no transaction open "
            "(each step commits on its own); commit or roll back first"
        )


def _block_comment_end(sql: str, i: int) -> int:
    depth, j = 0, i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(sql)


def _quoted_end(sql: str, i: int, quote: str, backslashes: bool) -> int:
    j = i + 1
    while j < len(sql):
        if backslashes and sql[j] == "\\":
            j += 2
        elif sql[j] == quote:
            if sql.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(sql)


def _escape_string(sql: str, i: int) -> bool:
    """An E'...' string, where backslash escapes the quote."""
    return i > 0 and sql[i - 1] in "eE" and not _in_word(sql, i - 1)


def _in_word(sql: str, i: int) -> bool:
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")
