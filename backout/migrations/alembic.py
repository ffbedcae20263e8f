"""Alembic: revision files in the script directory's `versions/`, state in `alembic_version`
(the current heads).

The saved down "script" of a revision is its whole revision file. Undoing runs Alembic's own
downgrade on those files: they are written into a temporary script directory with an env.py of
ours that uses the given connection (each revision in its own transaction, as PostgreSQL allows
DDL in one), plus a stub for the target revision when the target's own file was not saved, and
`alembic downgrade <target>` moves alembic_version there. Alembic and SQLAlchemy are the app's
dependencies, imported only for that: reading the revisions parses their files instead.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import psycopg

from backout.errors import BackoutError, BadInput, first_line
from backout.migrations import script
from backout.redact import redact
from backout.migrations.base import (
    DownMigrationError,
    DownPath,
    MigrationAdapter,
    MigrationSQL,
    Progress,
    SavedMigration,
    missing_path,
    oldest_first,
    read_file,
    undone,
    walk_down,
)

_ENV_PY = '''\
"""Written by backout: run the saved revisions on the connection backout lends."""
from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    transaction_per_migration=True,
    on_version_apply=[context.config.attributes["on_version_apply"]],
)
with context.begin_transaction():
    context.run_migrations()
'''

_STUB = '''\
"""Written by backout: the revision the downgrade stops at, whose own file was not saved."""
revision = {revision!r}
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''

_OFFLINE_ENV_PY = '''\
"""Written by backout: Alembic's offline mode (--sql), for PostgreSQL, without a database."""
from alembic import context

context.configure(dialect_name="postgresql", literal_binds=True, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
'''

# Run in a child process with the app's root as its working directory, as `alembic upgrade --sql`
# would be: revision files may import the app's modules. One revision at a time, each way, so
# that one that needs a live database (offline mode cannot run its queries) spoils only itself.
_OFFLINE = '''
import io, json, sys
from alembic import command
from alembic.config import Config
found = {}
for revision, parent in json.loads(sys.argv[2]):
    found[revision] = {}
    for direction, span in (("up", (parent or "base") + ":" + revision), ("down", revision + ":" + (parent or "base"))):
        out = io.StringIO()
        config = Config(output_buffer=out)
        config.set_main_option("script_location", sys.argv[1])
        try:
            (command.upgrade if direction == "up" else command.downgrade)(config, span, sql=True)
            found[revision][direction] = out.getvalue()
        except Exception as exc:
            found[revision][direction + "_error"] = type(exc).__name__ + ": " + str(exc).strip().split("\\n")[0]
print(sys.argv[3] + json.dumps(found))
'''
_OFFLINE_MARKER = "BACKOUT-ALEMBIC-SQL:"
_OFFLINE_TIMEOUT = 300


class AlembicAdapter(MigrationAdapter):
    tool = "alembic"
    default_path = "alembic.ini"
    state_table = "alembic_version"
    state_columns = ("version_num",)

    @classmethod
    def conventional_path(cls) -> Path:
        return Path("alembic.ini") if Path("alembic.ini").is_file() else Path("alembic")

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The heads in alembic_version (Alembic records nothing else), sorted."""
        if self.state_table_columns(conn) is None:
            return []
        return sorted(v for (v,) in self._query(conn, "SELECT version_num FROM alembic_version"))

    def available(self) -> list[SavedMigration]:
        """The revision files, oldest first, read without importing them (nor Alembic: that
        import alone costs the release phase half a second)."""
        found = []
        for path in self._revision_files():
            source = read_file(path)
            revision, parents, message = revision_header(source, path)
            down, reason = downgrade_source(source)
            found.append(SavedMigration(
                tool=self.tool, id=revision, name=message or path.stem, down=down, transactional=True,
                reversible=down is not None, files={path.name: source}, parents=parents,
                irreversible_reason=reason,
            ))
        return oldest_first(found)

    def pending(self, conn: psycopg.Connection[Any]) -> list[SavedMigration]:
        """The revisions that are neither a current head nor below one; none when a head is not in
        the code (the database is ahead of it, and `alembic upgrade` refuses to run)."""
        available = self.available()
        if not set(self.applied(conn)) <= {m.id for m in available}:
            return []
        reached = self._reached(conn, available)
        return [m for m in available if m.id not in reached]

    def applied_history(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The heads and every revision below them, oldest first (the revision files tell what is
        below; without them, the heads alone)."""
        try:
            available = self.available()
        except BackoutError:
            return self.applied(conn)
        reached = self._reached(conn, available)
        known = [m.id for m in available if m.id in reached]
        return known + sorted(reached - set(known))

    def down_path(self, conn: psycopg.Connection[Any], saved: Mapping[str, SavedMigration],
                  target: Sequence[str]) -> DownPath:
        return walk_down(self.applied(conn), saved, target)

    def _reached(self, conn: psycopg.Connection[Any], available: list[SavedMigration]) -> set[str]:
        parents = {m.id: m.parents for m in available}
        reached: set[str] = set()
        stack = list(self.applied(conn))
        while stack:
            revision = stack.pop()
            if revision not in reached:
                reached.add(revision)
                stack.extend(parents.get(revision, []))
        return reached

    def migration_sql(self, conn: psycopg.Connection[Any] | None, migrations: list[SavedMigration]) -> dict[str, MigrationSQL]:
        """Alembic's offline SQL (`alembic upgrade/downgrade A:B --sql`) of each revision, written
        by Alembic in a child process from the saved revision files."""
        if not migrations:
            return {}
        steps = [[m.id, m.parents[0] if m.parents else None] for m in oldest_first(migrations)]
        with tempfile.TemporaryDirectory(prefix="backout-alembic-sql-") as tmp:
            root = Path(tmp)
            write_script_directory(root, migrations, None)
            (root / "env.py").write_text(_OFFLINE_ENV_PY)
            for parent in {p for m in migrations for p in m.parents} - {m.id for m in migrations}:
                (root / "versions" / f"backout_target_{parent}.py").write_text(_STUB.format(revision=parent))
            found, problem = _run_offline(root, steps, self._app_root())
        sql = {}
        for m in migrations:
            answer = found.get(m.id, {})
            opaque = tuple(f"its {'upgrade' if d == 'up' else 'downgrade'}() cannot be written as SQL offline "
                           f"(alembic --sql): {answer[d + '_error']}" for d in ("up",) if d + "_error" in answer)
            if problem:
                opaque = (problem,)
            sql[m.id] = MigrationSQL(up=answer.get("up", ""), down=answer.get("down"), opaque=opaque)
        return sql

    def _app_root(self) -> Path:
        """Where `alembic` is run from: the ini's directory."""
        return self.path.parent

    def _state_problems(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        heads = set(self.applied(conn))
        plan = {m.id for m in migrations}
        below = {p for m in migrations for p in m.parents}
        expected = plan - below
        problems = []
        for head in sorted(heads - expected):
            if head in plan:
                problems.append(f"alembic_version is at {head}, below the newest saved revision (downgraded by hand?)")
            else:
                problems.append(f"alembic_version has {head}, which no saved revision file holds"
                                " (migrated by hand since the checkpoint?)")
        problems += [f"{e} is not a head in alembic_version (downgraded by hand?)" for e in sorted(expected - heads)]
        targets = _targets(migrations)
        if len(targets) > 1:
            problems.append(f"the saved revisions start from several revisions ({', '.join(sorted(targets))});"
                            " alembic downgrade goes to one")
        return problems

    def run_down(
        self, conn: psycopg.Connection[Any], migrations: list[SavedMigration], progress: Progress | None = None
    ) -> list[str]:
        say = progress or (lambda message: None)
        script.require_idle(conn)
        self.refuse_if_impossible(conn, migrations)
        if not migrations:
            return []
        from alembic import command
        from alembic.config import Config

        target = next(iter(_targets(migrations)), None)
        ran: list[str] = []

        def applied_step(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
            ran.append(step.up_revision_id)
            say(f"undid alembic revision {step.up_revision_id}")

        with tempfile.TemporaryDirectory(prefix="backout-alembic-") as tmp:
            write_script_directory(Path(tmp), migrations, target)
            config = Config()
            config.set_main_option("script_location", tmp)
            config.attributes["on_version_apply"] = applied_step
            say(f"running alembic downgrade to {target or 'base'} ({len(migrations)} revisions)")
            with lent_to_sqlalchemy(conn) as connection:
                config.attributes["connection"] = connection
                try:
                    command.downgrade(config, target or "base")
                except Exception as exc:
                    failed = next((m.id for m in reversed(oldest_first(migrations)) if m.id not in ran), "?")
                    raise DownMigrationError(ran, failed, first_line(exc)) from exc
        say(undone(ran))
        return ran

    def _revision_files(self) -> list[Path]:
        """The .py files in the version locations, as Alembic's ScriptDirectory lists them."""
        locations, recursive = self._version_locations()
        files: dict[Path, None] = {}
        for location in locations:
            candidates = location.rglob("*.py") if recursive else location.glob("*.py")
            for path in sorted(candidates):
                if path.is_file() and not path.name.startswith((".#", "__init__")):
                    files.setdefault(path.resolve())
        return list(files)

    def _version_locations(self) -> tuple[list[Path], bool]:
        path = self.path
        if path.is_dir() and (path / "alembic.ini").is_file() and not (path / "env.py").is_file():
            path = path / "alembic.ini"
        if path.is_dir():
            return [path / "versions"], False
        if not path.is_file():
            raise missing_path(self.tool, path, "alembic.ini or the Alembic script directory")
        ini = configparser.ConfigParser(defaults={"here": str(path.parent)})
        ini.read(path)
        location = ini.get("alembic", "script_location", fallback=None)
        if not location:
            raise BadInput(f"{path} has no script_location in its [alembic] section")
        if ":" in location and not Path(location).is_absolute():
            raise BadInput(f"{path} names its script directory as a package resource ({location});"
                           " set BACKOUT_MIGRATIONS_PATH to that directory")
        listed = ini.get("alembic", "version_locations", fallback=None)
        if listed:
            separator = ini.get("alembic", "path_separator", fallback=None) or ini.get(
                "alembic", "version_path_separator", fallback=None)
            if separator is None:  # Alembic's legacy splitting
                names = re.split(r", *|(?: +)", listed)
            else:
                names = listed.split(_SEPARATORS.get(separator, separator))
            locations = [_beside(path, name.strip()) for name in names if name.strip()]
        else:
            locations = [_beside(path, location) / "versions"]
        return locations, ini.getboolean("alembic", "recursive_version_locations", fallback=False)


def _run_offline(root: Path, steps: list[list[str | None]], cwd: Path) -> tuple[dict[str, Any], str | None]:
    """Alembic's offline SQL of each (revision, parent) step, or {} and why it could not be had."""
    try:
        done = subprocess.run([sys.executable, "-c", _OFFLINE, str(root), json.dumps(steps), _OFFLINE_MARKER], cwd=cwd,
                              env=dict(os.environ), capture_output=True, text=True, timeout=_OFFLINE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"Alembic could not write its SQL offline: {exc}"
    for line in done.stdout.splitlines():
        if line.startswith(_OFFLINE_MARKER):
            return json.loads(line[len(_OFFLINE_MARKER):]), None
    tail = " | ".join(done.stderr.strip().splitlines()[-2:])
    return {}, f"Alembic could not write its SQL offline (exit {done.returncode}: {redact(tail)})"


def revision_header(source: str, path: Path) -> tuple[str, list[str], str]:
    """(revision, down revisions, message) from a revision file's module-level assignments and
    the first paragraph of its docstring."""
    tree = ast.parse(source)
    values = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise BackoutError(f"{path}: {target.id} is not a plain string, so backout cannot read it") from None
    if not isinstance(values.get("revision"), str):
        raise BackoutError(f"{path} is in the Alembic versions directory but sets no revision id")
    docstring = ast.get_docstring(tree) or ""
    return values["revision"], _as_list(values.get("down_revision")), docstring.split("\n\n")[0].strip()


def downgrade_source(source: str) -> tuple[str | None, str | None]:
    """The source of the revision's downgrade(), or None and why it cannot undo anything."""
    functions = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    down, up = functions.get("downgrade"), functions.get("upgrade")
    if down is None:
        return None, "its revision file has no downgrade()"
    body = [s for s in down.body if not _is_filler(s)]
    if body and isinstance(body[0], ast.Raise):
        return None, "its downgrade() raises"
    if not body and up is not None and any(not _is_filler(s) for s in up.body):
        return None, "its downgrade() does nothing, while its upgrade() does something"
    return ast.get_source_segment(source, down), None


def write_script_directory(root: Path, migrations: list[SavedMigration], target: str | None) -> None:
    """An Alembic script directory holding the saved revision files and our env.py."""
    versions = root / "versions"
    versions.mkdir()
    (root / "env.py").write_text(_ENV_PY)
    for m in migrations:
        for name, text in m.files.items():
            (versions / Path(name).name).write_text(text)
    if target is not None and target not in {m.id for m in migrations}:
        (versions / f"backout_target_{target}.py").write_text(_STUB.format(revision=target))


@contextmanager
def lent_to_sqlalchemy(conn: psycopg.Connection[Any]) -> Iterator[Any]:
    """A SQLAlchemy connection over the caller's psycopg connection, which stays open after.

    The engine's pool holds that one connection and is never disposed of (disposing would close
    it); returning the connection to the pool only rolls back whatever is left open.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    was = conn.autocommit
    conn.autocommit = False  # SQLAlchemy's transactions are the DB-API's implicit ones
    # No hstore lookup: it would register adapters on the caller's connection.
    engine = create_engine("postgresql+psycopg://", creator=lambda: conn, poolclass=StaticPool,
                           use_native_hstore=False)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        conn.autocommit = was


_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep}


def _beside(ini: Path, location: str) -> Path:
    """A location from alembic.ini. Alembic reads relative ones from the working directory,
    which is the ini's directory when run as documented; prefer that, wherever backout runs."""
    given = Path(location)
    if given.is_absolute() or not (ini.parent / given).exists():
        return given.absolute()
    return ini.parent / given


def _targets(migrations: list[SavedMigration]) -> set[str]:
    """The revisions the saved ones sit on: what the downgrade goes back to (none means base)."""
    plan = {m.id for m in migrations}
    return {p for m in migrations for p in m.parents if p not in plan}


def _is_filler(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    )


def _as_list(value: str | tuple[str, ...] | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
