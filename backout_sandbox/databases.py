"""The real PostgreSQL databases behind `heroku-postgresql` add-ons.

Essential, mini and basic plans get a database on the shared server (`postgres_url`); standard,
premium, private and shield plans get one in the sandbox's own point-in-time-recoverable cluster
(`PitrCluster`, started on first use), because only those plans can be rolled back to a past
time on Heroku. Every database has a login role of its own with a random password, so its URL
looks like Heroku's (`postgres://user:password@host:port/db`) and the password really has to be
kept out of command lines. A database rolled back to a past time keeps the login role of the one
it came from, since its tables belong to that role.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from backout_sandbox.core.errors import SandboxError
from backout_sandbox.pitr import PitrCluster

PITR_TIERS = ("standard", "premium", "private", "shield")


def is_pitr_plan(plan: str) -> bool:
    return plan.split("-")[0] in PITR_TIERS


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password (PGPASSWORD):
    what a child process such as pg_dump gets, so the password never shows in its command line."""
    parts = urlsplit(url)
    env = {}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = quote(unquote(parts.username or ""), safe="") + "@" + (parts.hostname or "")
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    return url, env


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


class Databases:
    """Creates, rolls back and drops add-on databases. A record (a dict kept in the add-on's state)
    says where each database lives: {"cluster", "name", "role", "url"}."""

    def __init__(self, server_url: str, pitr_state: dict[str, Any], work_dir: Path,
                 save: Callable[[], None]) -> None:
        self.server_url = server_url
        self._pitr_state = pitr_state  # part of the sandbox state: {"root": the cluster's directory}
        self._work_dir = work_dir
        self._save = save
        self._pitr: PitrCluster | None = None
        self._pitr_lock = threading.Lock()

    # -- clusters -------------------------------------------------------------------------------

    def pitr_cluster(self) -> PitrCluster:
        """The sandbox's PitrCluster, started on first use, on the same port and directory as before a restart."""
        with self._pitr_lock:
            if self._pitr is None:
                root = self._pitr_state.get("root")
                if not root:
                    root = self._pitr_root()
                    self._pitr_state["root"] = root
                    self._save()
                # The cluster keeps its own port across restarts, so add-on URLs stay valid.
                cluster = PitrCluster(Path(root))
                cluster.start()
                self._pitr = cluster
            return self._pitr

    def _pitr_root(self) -> str:
        if os.geteuid() == 0:
            # PostgreSQL runs as the postgres user then, which must be able to reach the directory;
            # a test's tmp_path is closed to it, a directory of its own under /tmp is not.
            return tempfile.mkdtemp(prefix="backout-sandbox-pitr-")
        path = self._work_dir / "pitr"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def earliest_recoverable(self) -> datetime:
        return self.pitr_cluster().earliest_recoverable()

    def admin_url(self, cluster: str) -> str:
        return self.server_url if cluster == "shared" else self.pitr_cluster().admin_url()

    # -- databases ------------------------------------------------------------------------------

    def create(self, pitr: bool) -> dict[str, str]:
        cluster = "pitr" if pitr else "shared"
        name = f"backout_sandbox_{uuid.uuid4().hex[:16]}"
        password = secrets.token_urlsafe(24)
        admin = self.admin_url(cluster)
        with connect(admin) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
            except BaseException:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                raise
        return {"cluster": cluster, "name": name, "role": name, "password": password,
                "url": _url(admin, name, name, password)}

    def rollback(self, source: dict[str, str], when: datetime) -> dict[str, str]:
        """A new database holding `source`'s content as of `when`. ValueError when `when` is out of range."""
        if source["cluster"] != "pitr":
            raise ValueError("the source database is not on a plan that supports rollback")
        name = f"backout_sandbox_{uuid.uuid4().hex[:16]}"
        self.pitr_cluster().restore_to(source["name"], when, name)
        admin = self.admin_url("pitr")
        return {"cluster": "pitr", "name": name, "role": source["role"], "password": source["password"],
                "url": _url(admin, name, source["role"], source["password"])}

    def drop(self, record: dict[str, str]) -> None:
        admin = self.admin_url(record["cluster"])
        with connect(admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(record["name"])))
            # A rolled-back database shares its source's role: the role goes with the last of them.
            still_owns = conn.execute("SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                                      "WHERE r.rolname = %s", (record["role"],)).fetchone()
            if not still_owns:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(record["role"])))

    def stats(self, record: dict[str, str]) -> dict[str, Any]:
        """Size, table count and server version, for the Data API's database info."""
        with connect(record["url"]) as conn:
            row = conn.execute(
                "SELECT pg_database_size(current_database()),"
                " (SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')),"
                " current_setting('server_version')").fetchone()
            assert row is not None, "a SELECT without FROM answers one row"
            size, tables, version = row
        return {"bytes": size, "tables": tables, "version": version}

    def stop(self, remove_pitr: bool = False) -> None:
        with self._pitr_lock:
            if self._pitr is not None:
                self._pitr.stop()
                self._pitr = None
        if remove_pitr and self._pitr_state.get("root"):
            shutil.rmtree(self._pitr_state["root"], ignore_errors=True)


def _url(admin_url: str, dbname: str, user: str, password: str) -> str:
    parts = urlsplit(admin_url)
    if not parts.hostname:
        raise SandboxError("the sandbox's PostgreSQL URL has no host; expected postgresql://USER@HOST:PORT/DB")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(("postgres", netloc, "/" + quote(dbname, safe=""), parts.query, ""))
