"""Django: state in `django_migrations(id, app, name, applied)`, one row per applied migration.

Where the project's settings are known (DJANGO_SETTINGS_MODULE, or the one manage.py sets) and
Django imports, Django itself answers, in a child process run with the project's Python, in the
project's directory, under its settings (`django_child.py`): the pending migrations are the plan
of `manage.py migrate` for every installed app wherever it lives (django.contrib, pip-installed
apps in site-packages, the project's own), squashed migrations and `replaces` as Django's loader
resolves them; each is saved with its file, its dependencies and the reverse SQL Django writes
(`sqlmigrate --backwards`). A migration is irreversible only when one of its operations has no
reverse at all (RunPython without reverse_code, RunSQL without reverse_sql). Undoing runs
Django's own backwards migrate from the saved files, under the project's settings, so RunPython
reverse code runs too, even when the code that shipped those files is gone.

Without settings or Django, the migrations are read from the files under the project directory
and only `RunSQL(sql, reverse_sql)` operations can be reversed (from their SQL); undoing then runs
the saved SQL and deletes the migration's django_migrations row, as `manage.py migrate` would.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg

from backout.errors import BackoutError, PlanRefused, first_line
from backout.migrations import script
from backout.migrations.base import (
    DownMigrationError,
    MigrationAdapter,
    MigrationSQL,
    Progress,
    SavedMigration,
    expect_rows,
    missing_path,
    read_file,
    undone,
)
from backout.redact import redact

_CHILD = Path(__file__).with_name("django_child.py")
_MARKER = "BACKOUT-DJANGO:"  # the child's answer line (django_child.MARKER)
_PROGRESS = "BACKOUT-DJANGO-PROGRESS:"
_SETTINGS_IN_MANAGE_PY = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")
_SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", "venv", "env", "staticfiles"}
_CHILD_TIMEOUT = 600
_NOT_SQL = "-- THIS OPERATION CANNOT BE WRITTEN AS SQL"  # what Django writes for an operation without SQL
_PYTHON_OPERATION = "a RunPython operation runs Python code, which cannot be judged from SQL"


@dataclass
class _MigrationFile:
    app: str
    name: str
    path: Path
    source: str
    dependencies: list[str] = field(default_factory=list)
    run_before: list[str] = field(default_factory=list)
    atomic: bool = True

    @property
    def id(self) -> str:
        return f"{self.app}.{self.name}"


class DjangoAdapter(MigrationAdapter):
    tool = "django"
    default_path = "."
    state_table = "django_migrations"
    state_columns = ("id", "app", "name", "applied")

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        # The forward SQL Django wrote for each pending migration (by id), for `migration_sql`.
        self._forward: dict[str, str] = {}

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        """`app.name` of each row, in the order Django recorded them."""
        if self.state_table_columns(conn) is None:
            return []
        return [f"{app}.{name}" for app, name in self._query(conn, "SELECT app, name FROM django_migrations ORDER BY id")]

    def settings_module(self) -> str | None:
        """The project's settings: DJANGO_SETTINGS_MODULE, else the one manage.py sets; None when
        neither is known or Django is not importable here (then the files are read instead)."""
        if importlib.util.find_spec("django") is None:
            return None
        if os.environ.get("DJANGO_SETTINGS_MODULE"):
            return os.environ["DJANGO_SETTINGS_MODULE"]
        manage = self.path / "manage.py"
        found = _SETTINGS_IN_MANAGE_PY.search(read_file(manage)) if manage.is_file() else None
        return found[1] if found else None

    def available(self) -> list[SavedMigration]:
        """The migration files under the project directory, oldest first (without Django)."""
        return [_from_file(self.path, f) for f in _in_order(self._migration_files())]

    def pending(self, conn: psycopg.Connection[Any]) -> list[SavedMigration]:
        """What `manage.py migrate` would apply, in its order; read from the files without Django."""
        if self.settings_module() is None:
            return super().pending(conn)
        answer = self._django(conn, {"command": "inspect"})
        self._forward.update({i: d["up"] for i, d in answer["migrations"].items() if d.get("up") is not None})
        return [_from_django(answer["migrations"][i]) for i in answer["plan"]]

    def migration_sql(self, conn: psycopg.Connection[Any] | None, migrations: list[SavedMigration]) -> dict[str, MigrationSQL]:
        """The forward SQL Django writes (as `sqlmigrate` does, from the same child that wrote the
        reverse SQL), else the RunSQL operations of the files; RunPython and what only Django can
        write are opaque."""
        if conn is not None and self.settings_module() is not None and any(m.id not in self._forward
                                                                           for m in migrations):
            self.pending(conn)
        files = {f.id: f for f in self._migration_files()}
        found = {}
        for m in migrations:
            up = self._forward.get(m.id)
            if up is not None:
                opaque = tuple(_PYTHON_OPERATION for line in up.splitlines() if line.strip() == _NOT_SQL)
                found[m.id] = MigrationSQL(up=up, down=m.down, opaque=opaque)
            elif m.id in files:
                sql, opaque = _forward_from_ast(files[m.id])
                found[m.id] = MigrationSQL(up=sql, down=m.down, opaque=opaque)
            else:
                found[m.id] = MigrationSQL(up="", down=m.down, opaque=(f"{m.id} is not among the migration files",))
        return found

    def run_down(
        self, conn: psycopg.Connection[Any], migrations: list[SavedMigration], progress: Progress | None = None
    ) -> list[str]:
        """Django's own backwards migrate of exactly these migrations, from their saved files; from
        the saved SQL when Django cannot be run here."""
        if self.settings_module() is None or not all(m.files for m in migrations):
            python = [m.id for m in migrations if m.down and _runs_python_backwards(m)]
            if python:
                raise PlanRefused(
                    f"{', '.join(python)} run Python to unapply (RunPython), which needs Django and the project's"
                    " settings: set DJANGO_SETTINGS_MODULE, or BACKOUT_MIGRATIONS_PATH to the directory with manage.py")
            return super().run_down(conn, migrations, progress)
        say = progress or (lambda message: None)
        script.require_idle(conn)
        self.refuse_if_impossible(conn, migrations)
        if not migrations:
            return []
        say(f"running django migrate backwards: {len(migrations)} migrations, from their saved files")
        answer = self._django(conn, {
            "command": "down", "undo": [m.id for m in migrations],
            "files": {m.id: m.files for m in migrations},
        }, say)
        ran = answer["undone"]
        if answer["error"]:
            raise DownMigrationError(ran, answer["failed"] or "?", answer["error"])
        say(undone(ran))
        return ran

    def _undo(self, conn: psycopg.Connection[Any], m: SavedMigration) -> None:
        """Without Django: the saved reverse SQL, then the row deleted."""
        app, name = m.id.split(".", 1)

        def record(c: psycopg.Connection[Any]) -> None:
            cur = c.execute("DELETE FROM django_migrations WHERE app = %s AND name = %s", [app, name])
            expect_rows(cur, self.state_table, m.id)

        if m.transactional:
            self._run_sql_step(conn, m, record)
            return
        # A non-atomic migration: Django runs its statements one by one in autocommit mode.
        assert m.down is not None
        steps = script.statements(m.down)
        done = 0
        try:
            with script.autocommit(conn):
                for statement in steps:
                    conn.execute(statement.text)
                    done += 1
        except psycopg.Error as exc:
            raise BackoutError(
                f"{first_line(exc)}; the migration is not atomic, so {done} of its"
                f" {len(steps)} reverse statements had taken effect while django_migrations still lists it"
            ) from exc
        with conn.transaction():
            record(conn)

    def _django(self, conn: psycopg.Connection[Any], request: dict[str, Any], say: Progress | None = None) -> dict[str, Any]:
        """Ask django_child.py, run under the project's settings against `conn`'s database."""
        database = conn.info.dbname
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": self.settings_module() or ""}
        if not _same_database(env.get("DATABASE_URL"), conn):
            env["DATABASE_URL"] = _url_of(conn)
        try:
            child = subprocess.Popen(
                [sys.executable, str(_CHILD)], cwd=self.path, env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BackoutError(f"cannot run Django's migration loader: {exc}") from None
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        child.stdin.write(json.dumps({**request, "database": database}))
        child.stdin.close()
        answer = None
        for line in child.stdout:
            if line.startswith(_PROGRESS) and say is not None:
                say(line[len(_PROGRESS):].strip())
            elif line.startswith(_MARKER):
                answer = json.loads(line[len(_MARKER):])
        errors = child.stderr.read()
        status = child.wait(timeout=_CHILD_TIMEOUT)
        if answer is None:
            tail = " | ".join(errors.strip().splitlines()[-3:]) or "no output"
            raise BackoutError(f"Django's migration loader failed under {env['DJANGO_SETTINGS_MODULE']} "
                               f"(exit {status}): {redact(tail)}")
        if answer["database"] != database:
            raise BackoutError(f"the project's settings ({env['DJANGO_SETTINGS_MODULE']}) connect Django to "
                               f"database {answer['database']}, not {database}: make DATABASES read DATABASE_URL")
        return answer

    def _migration_files(self) -> list[_MigrationFile]:
        if not self.path.is_dir():
            raise missing_path(self.tool, self.path, "the Django project directory (the one with manage.py)")
        found = []
        for migrations in _migration_dirs(self.path):
            app = _app_label(migrations.parent)
            for path in sorted(migrations.glob("*.py")):
                if path.stem[0] in "_~":
                    continue
                found.append(_parse(app, path))
        return found


def _from_django(d: dict[str, Any]) -> SavedMigration:
    """A SavedMigration from the child's account of one migration."""
    return SavedMigration(
        tool="django", id=f"{d['app']}.{d['name']}", name=d["name"],
        down=None if d["irreversible"] else d["down"], transactional=d["atomic"],
        reversible=d["irreversible"] is None, files={d["file"]: d["source"]}, parents=d["dependencies"],
        irreversible_reason=d["irreversible"], replaces=d["replaces"],
    )


def _runs_python_backwards(m: SavedMigration) -> bool:
    """Whether unapplying the saved migration runs Python (a RunPython whose reverse is not a no-op)."""
    for source in m.files.values():
        operations = _class_attribute(ast.parse(source), "operations")
        elements = operations.elts if isinstance(operations, (ast.List, ast.Tuple)) else []
        if any(_call_name(op) == "RunPython" and not _is_noop(_argument(op, 1, "reverse_code")) for op in elements):
            return True
    return False


def _forward_from_ast(f: _MigrationFile) -> tuple[str, tuple[str, ...]]:
    """The forward SQL of a migration's RunSQL operations, and what else it does that only Django
    could write as SQL (or nobody could: RunPython)."""
    operations = _class_attribute(ast.parse(f.source), "operations")
    if not isinstance(operations, (ast.List, ast.Tuple)):
        return "", ("its operations could not be read",)
    parts: list[str] = []
    opaque: list[str] = []
    for op in operations.elts:
        kind = _call_name(op)
        argument = _argument(op, 0, "sql") if kind == "RunSQL" else None
        sql = _sql_text(argument) if argument is not None else None
        if sql is not None:
            parts.append(sql.rstrip().rstrip(";") + ";\n")
        elif kind == "RunPython":
            opaque.append(_PYTHON_OPERATION)
        else:
            opaque.append(f"its {kind or 'operation'} needs Django to write its SQL (manage.py sqlmigrate), and "
                          "Django or manage.py is not available here")
    return "".join(parts), tuple(opaque)


def _from_file(root: Path, f: _MigrationFile) -> SavedMigration:
    down, reason = _reverse_from_ast(f)
    return SavedMigration(
        tool="django", id=f.id, name=f.name, down=down, transactional=f.atomic, reversible=down is not None,
        files={str(f.path.relative_to(root)): f.source}, parents=f.dependencies, irreversible_reason=reason,
    )


def _same_database(url: str | None, conn: psycopg.Connection[Any]) -> bool:
    if not url:
        return False
    parts = urlsplit(url)
    info = conn.info
    return (parts.path.lstrip("/") == info.dbname and (parts.hostname or "") == (info.host or "")
            and (parts.port or 5432) == int(info.port or 5432))


def _url_of(conn: psycopg.Connection[Any]) -> str:
    """A postgres:// URL of the connection's database, for the child's environment only (never a
    command line)."""
    info = conn.info
    user = quote(info.user or "", safe="")
    password = f":{quote(info.password, safe='')}" if info.password else ""
    host = info.host or "localhost"
    host = f"[{host}]" if ":" in host else host
    return f"postgres://{user}{password}@{host}:{info.port}/{quote(info.dbname, safe='')}"


def _reverse_from_ast(f: _MigrationFile) -> tuple[str | None, str | None]:
    """The reverse SQL of a migration made only of RunSQL (and no-op RunPython) operations."""
    tree = ast.parse(f.source)
    operations = _class_attribute(tree, "operations")
    if not isinstance(operations, (ast.List, ast.Tuple)):
        return None, "its operations could not be read"
    parts = []
    for op in reversed(operations.elts):
        kind = _call_name(op)
        if kind == "RunSQL":
            reverse = _argument(op, 1, "reverse_sql")
            if reverse is None or (isinstance(reverse, ast.Constant) and reverse.value is None):
                return None, "it has a RunSQL without reverse_sql"
            if _is_noop(reverse):
                continue
            sql = _sql_text(reverse)
            if sql is None:
                return None, "its reverse_sql is not plain SQL text"
            parts.append(sql)
        elif kind == "RunPython":
            if not _is_noop(_argument(op, 1, "reverse_code")):
                return None, ("its reverse runs Python code (RunPython), which needs Django and the project's"
                              " settings (DJANGO_SETTINGS_MODULE or manage.py), not available here")
        else:
            return None, (f"its {kind or 'operation'} needs Django to be reversed, and Django or the project's"
                          " settings (DJANGO_SETTINGS_MODULE or manage.py) are not available here")
    return "".join(p.rstrip().rstrip(";") + ";\n" for p in parts), None
def _parse(app: str, path: Path) -> _MigrationFile:
    source = read_file(path)
    f = _MigrationFile(app=app, name=path.stem, path=path, source=source)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise BackoutError(f"{path} is not valid Python: {exc}") from None
    f.dependencies = _pairs(_class_attribute(tree, "dependencies"))
    f.run_before = _pairs(_class_attribute(tree, "run_before"))
    atomic = _class_attribute(tree, "atomic")
    f.atomic = not (isinstance(atomic, ast.Constant) and atomic.value is False)
    return f


def _in_order(files: list[_MigrationFile]) -> list[_MigrationFile]:
    """Dependencies before dependents (Django's graph order), ties by app and name."""
    by_id = {f.id: f for f in files}
    first: dict[str, str] = {}
    for f in sorted(files, key=lambda f: f.name):
        first.setdefault(f.app, f.id)
    after: dict[str, set[str]] = {f.id: set() for f in files}

    def known(dep: str) -> str | None:
        app, _, name = dep.partition(".")
        if name == "__first__":
            return first.get(app)
        if name == "__latest__":
            names = sorted(i for i in by_id if i.startswith(app + "."))
            return names[-1] if names else None
        return dep if dep in by_id else None

    for f in files:
        after[f.id].update(d for d in map(known, f.dependencies) if d and d != f.id)
        for later in filter(None, map(known, f.run_before)):
            after[later].add(f.id)
    ordered: list[_MigrationFile] = []
    placed: set[str] = set()
    remaining = sorted(by_id)
    while remaining:
        ready = [i for i in remaining if after[i] <= placed]
        if not ready:
            raise BackoutError("the Django migrations depend on each other in a circle: " + ", ".join(remaining))
        ordered.append(by_id[ready[0]])
        placed.add(ready[0])
        remaining.remove(ready[0])
    return ordered


def _migration_dirs(root: Path) -> list[Path]:
    """The `migrations` packages of the apps under the project directory."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _SKIP_DIRS
                            and not (Path(directory) / d / "pyvenv.cfg").exists())
        here = Path(directory)
        if here.name == "migrations" and "__init__.py" in files and (here.parent / "__init__.py").is_file():
            found.append(here)
    return found


def _app_label(app_dir: Path) -> str:
    """The app's label: its AppConfig's `label` in apps.py if set, else the package name."""
    apps_py = app_dir / "apps.py"
    if apps_py.is_file():
        try:
            tree = ast.parse(read_file(apps_py))
        except SyntaxError:
            tree = None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.ClassDef):
                label = _assigned(node.body, "label")
                if isinstance(label, ast.Constant) and isinstance(label.value, str):
                    return label.value
    return app_dir.name


def _class_attribute(tree: ast.Module, name: str) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Migration":
            return _assigned(node.body, name)
    return None


def _assigned(body: list[ast.stmt], name: str) -> ast.expr | None:
    for node in body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def _pairs(node: ast.expr | None) -> list[str]:
    """("app", "name") tuples of a dependencies list as "app.name"; swappable ones are skipped."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return []
    found = []
    for element in node.elts:
        if isinstance(element, ast.Tuple) and len(element.elts) == 2:
            app, name = element.elts
            if isinstance(app, ast.Constant) and isinstance(app.value, str) and isinstance(name, ast.Constant) \
                    and isinstance(name.value, str):
                found.append(f"{app.value}.{name.value}")
    return found


def _call_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return None


def _argument(call: ast.expr, position: int, keyword: str) -> ast.expr | None:
    assert isinstance(call, ast.Call)
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _is_noop(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "noop"


def _sql_text(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        texts = [_sql_text(e) for e in node.elts]
        if all(isinstance(e, ast.Constant) for e in node.elts) and all(t is not None for t in texts):
            return "".join(t.rstrip().rstrip(";") + ";\n" for t in texts if t is not None)
    return None
