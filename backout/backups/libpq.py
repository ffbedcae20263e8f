"""Running PostgreSQL's client programs against a URL without putting its password on a command line.

A command line is visible to every user of the machine (`ps`) and often ends up in logs; the
environment of a child process is not. So the URL is split into a password-free connection string,
passed as `--dbname`, and PGPASSWORD in the child's environment.
"""

from __future__ import annotations

import os
from typing import Mapping

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backout.errors import BadInput
from backout.redact import mask_url


def client_args(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The connection string without the password, and the child environment that carries it."""
    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg raises ProgrammingError for a malformed URL
        raise BadInput(f"cannot read the database URL {mask_url(url)}: {exc}") from None
    password = params.pop("password", None)
    env = dict(os.environ if environ is None else environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def database_name(url: str) -> str:
    """The database name in a URL (libpq's rules: the user name when none is given)."""
    params = conninfo_to_dict(url)
    return str(params.get("dbname") or params.get("user") or "")
