"""PostgreSQL's client programs and connections, the way a restore uses them.

Passwords reach child processes through PGPASSWORD, never their command lines; a child's stderr
is drained on a thread so a chatty child never blocks; its last error line is what a failure
reports, with secrets masked.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Drain, program, secrets_of and stop are read from here too (a restore's tools in one place).
from backout.backups.libpq import Drain, client_args, program, secrets_of, stop  # noqa: F401
from backout.errors import BackoutError
from backout.redact import mask_url


def connect(url: str, what: str = "the database", autocommit: bool = True,
            variable: str | None = None) -> psycopg.Connection[Any]:
    """A connection, or one clear line saying why not (the URL shown without its password, and the
    setting it came from when given)."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        named = f" ({variable})" if variable else ""
        raise BackoutError(f"cannot connect to {what} {mask_url(url)}{named}: {first}") from None


def one(cursor: psycopg.Cursor[Any]) -> Any:
    """The row a query that always answers one (an aggregate, a function call, a known row) returned."""
    row = cursor.fetchone()
    assert row is not None, "the query answers exactly one row"
    return row


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path="/" + quote(dbname, safe="")))
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def same_database(a: str | None, b: str | None) -> bool:
    """Whether two URLs name the same database on the same server (credentials aside)."""
    if not a or not b:
        return False
    return _where(a) == _where(b)


def _where(url: str) -> tuple[str, str, str]:
    params = conninfo_to_dict(url)
    return (str(params.get("host") or "localhost"), str(params.get("port") or "5432"),
            str(params.get("dbname") or params.get("user") or ""))


def quoted(name: str) -> str:
    """An identifier quoted for SQL text that psql runs (psycopg's quoting, without a connection)."""
    return '"' + name.replace('"', '""') + '"'


def child_env(url: str, extra: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """A password-free connection string for --dbname, and the environment carrying the password."""
    conninfo, env = client_args(url)
    env.update(extra or {})
    return conninfo, env


def free_bytes(directory: str | os.PathLike) -> int:
    usage = shutil.disk_usage(directory)
    return usage.free
