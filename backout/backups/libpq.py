"""Running PostgreSQL's client programs against a URL without putting its password on a command line.

A command line is visible to every user of the machine (`ps`) and often ends up in logs; the
environment of a child process is not. So the URL is passed, without its password, as `--dbname`,
and the password as PGPASSWORD in the child's environment.

A release phase starts pg_dump before it has imported a database driver (see
`backout.backups.pg_dump.Dump`), so a URL is taken apart here with the standard library; only a
key=value connection string needs psycopg's parser.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Mapping
from urllib.parse import parse_qsl, unquote

from backout.errors import BackoutError, BadInput
from backout.redact import mask_url

_URI_SCHEMES = ("postgres", "postgresql")


def client_args(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The connection string without the password, and the child environment that carries it."""
    env = dict(os.environ if environ is None else environ)
    params = _uri_params(url)
    if params is None:
        return _conninfo_args(url, env)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return " ".join(f"{key}={_quoted(value)}" for key, value in params.items()), env


def _uri_params(url: str) -> dict[str, str] | None:
    """A postgres:// URI's parameters by libpq's rules (several hosts, [IPv6], percent-decoding,
    query parameters); None for a key=value string, which psycopg's parser reads."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _URI_SCHEMES:
        return None
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    params: dict[str, str] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    hosts, ports = [], []
    for item in hostlist.split(",") if hostlist else []:
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                return None
            port = after[1:]
        else:
            host, _, port = item.partition(":")
        hosts.append(unquote(host))
        ports.append(port)
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if path:
        params["dbname"] = unquote(path)
    try:
        # libpq reads "+" as itself, not as a space.
        for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query)):
            params[key] = value
    except ValueError:
        return None
    return params


def _quoted(value: str) -> str:
    # libpq's key=value quoting: single quotes when needed, backslash before ' and \.
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conninfo_args(url: str, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg raises ProgrammingError for a malformed URL
        raise BadInput(f"cannot read the database URL {mask_url(url)}: {exc}") from None
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def database_name(url: str) -> str:
    """The database name in a URL (libpq's rules: the user name when none is given)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return str(params.get("dbname") or params.get("user") or "")


def program(name: str) -> str:
    """The path of a PostgreSQL client program (pg_dump, pg_restore, psql).

    On Debian and Ubuntu, /usr/bin/pg_dump is pg_wrapper, a Perl script that picks a version and
    runs it: about 0.15 s of every run here. The newest installed version is run directly instead
    (pg_dump and pg_restore read and write every older server's and archive's format)."""
    found = shutil.which(name)
    if not found:
        raise BackoutError(f"{name} is not installed or not on PATH; install the PostgreSQL client programs")
    if os.path.basename(os.path.realpath(found)) == "pg_wrapper":
        installed = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
        if installed:
            return max(installed, key=lambda path: _version(path.split("/")[4]))
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())
