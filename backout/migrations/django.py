"""Django: `<app>/migrations/NNNN_<name>.py` under the project directory (the one with manage.py),
state in `django_migrations(id, app, name, applied)`, one row per applied migration.

The down script is the reverse SQL. Where Django is importable and manage.py exists, Django itself
writes it (`manage.py sqlmigrate <app> <name> --backwards`, all pending migrations in one child
process with the project's settings). Otherwise it is read from the migration files: only
`RunSQL(sql, reverse_sql)` operations can be reversed that way. A migration whose reverse needs
Python (RunPython with reverse code) or cannot be reversed at all is saved as irreversible.
Undoing deletes the migration's django_migrations row, as `manage.py migrate <app> <previous>`
does; atomic migrations (the default) are undone in one transaction, others statement by statement.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from backout.errors import BackoutError
from backout.migrations import script
from backout.migrations.base import (
    MigrationAdapter,
    MigrationSQL,
    SavedMigration,
    expect_rows,
    missing_path,
    read_file,
)
from backout.redact import redact

log = logging.getLogger(__name__)

_SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", "venv", "env", "staticfiles"}
_MARKER = "BACKOUT-SQLMIGRATE:"
_SQLMIGRATE = '''
import io, json
from django.core.management import call_command
from django.db.migrations.exceptions import IrreversibleError
found = {{}}
for app, name in json.loads({targets!r}):
    try:
        sql = call_command("sqlmigrate", app, name, backwards=True, no_color=True,
                           stdout=io.StringIO(), stderr=io.StringIO())
        found[app + "." + name] = {{"sql": sql}}
    except IrreversibleError as exc:
        found[app + "." + name] = {{"irreversible": str(exc)}}
    except Exception as exc:
        found[app + "." + name] = {{"error": type(exc).__name__ + ": " + str(exc)}}
    try:  # the forward SQL too, for the verdict, while Django is loaded
        found[app + "." + name]["forward"] = call_command("sqlmigrate", app, name, no_color=True,
                                                          stdout=io.StringIO(), stderr=io.StringIO())
    except Exception:
        pass
print({marker!r} + json.dumps(found))
'''
_NOT_SQL = "-- THIS OPERATION CANNOT BE WRITTEN AS SQL"
_SQLMIGRATE_TIMEOUT = 300
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
        # The forward SQL sqlmigrate wrote beside the reverse SQL, by id, for `migration_sql`.
        self._forward: dict[str, str] = {}

    def applied(self, conn: psycopg.Connection) -> list[str]:
        """`app.name` of each row, in the order Django recorded them."""
        if self.state_table_columns(conn) is None:
            return []
        return [f"{app}.{name}" for app, name in self._query(conn, "SELECT app, name FROM django_migrations ORDER BY id")]

    def available(self) -> list[SavedMigration]:
        return self._saved(_in_order(self._migration_files()))

    def pending(self, conn: psycopg.Connection) -> list[SavedMigration]:
        # Only the pending ones get their reverse SQL written, sqlmigrate being the slow part.
        done = set(self.applied(conn))
        return self._saved([f for f in _in_order(self._migration_files()) if f.id not in done])

    def _saved(self, files: list[_MigrationFile]) -> list[SavedMigration]:
        reverse = self._sqlmigrate(files) if files and self._can_run_django() else {}
        self._forward.update({key: answer["forward"] for key, answer in reverse.items() if "forward" in answer})
        found = []
        for f in files:
            down, transactional, reason = _reverse_from_django(f, reverse[f.id]) if f.id in reverse else _reverse_from_ast(f)
            found.append(SavedMigration(
                tool=self.tool, id=f.id, name=f.name, down=down, transactional=transactional,
                reversible=down is not None, files={str(f.path.relative_to(self.path)): f.source},
                parents=f.dependencies, irreversible_reason=reason,
            ))
        return found

    def migration_sql(self, conn: psycopg.Connection | None, migrations: list[SavedMigration]) -> dict[str, MigrationSQL]:
        """The forward SQL from `manage.py sqlmigrate` (one child process for all), else from the
        RunSQL operations of the files; RunPython and what only Django can write are opaque."""
        files = {f.id: f for f in self._migration_files()}
        chosen = [files[m.id] for m in migrations if m.id in files]
        missing = [f for f in chosen if f.id not in self._forward]
        if missing and self._can_run_django():
            self._saved(missing)
        found = {}
        for m in migrations:
            up = self._forward.get(m.id)
            if up is not None:
                opaque = tuple(_PYTHON_OPERATION for line in up.splitlines() if line.strip() == _NOT_SQL)
                found[m.id] = MigrationSQL(up=up, down=m.down, opaque=opaque)
            elif m.id in files:
                up, opaque = _forward_from_ast(files[m.id])
                found[m.id] = MigrationSQL(up=up, down=m.down, opaque=opaque)
            else:
                found[m.id] = MigrationSQL(up="", down=m.down, opaque=(f"{m.id} is not among the migration files",))
        return found

    def _undo(self, conn: psycopg.Connection, m: SavedMigration) -> None:
        app, name = m.id.split(".", 1)

        def record(c: psycopg.Connection) -> None:
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
                f"{str(exc).strip().splitlines()[0]}; the migration is not atomic, so {done} of its"
                f" {len(steps)} reverse statements had taken effect while django_migrations still lists it"
            ) from exc
        with conn.transaction():
            record(conn)

    def _can_run_django(self) -> bool:
        return (self.path / "manage.py").is_file() and importlib.util.find_spec("django") is not None

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

    def _sqlmigrate(self, files: list[_MigrationFile]) -> dict[str, dict]:
        """Django's reverse SQL for each file (and its forward SQL), keyed by id; {} when Django cannot be run."""
        code = _SQLMIGRATE.format(targets=json.dumps([[f.app, f.name] for f in files]), marker=_MARKER)
        try:
            done = subprocess.run(
                [sys.executable, "manage.py", "shell", "--verbosity", "0", "--command", code],
                cwd=self.path, env=dict(os.environ), capture_output=True, text=True, timeout=_SQLMIGRATE_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("manage.py sqlmigrate could not run (%s); reading the migration files instead", exc)
            return {}
        for line in done.stdout.splitlines():
            if line.startswith(_MARKER):
                return json.loads(line[len(_MARKER):])
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        log.warning("manage.py sqlmigrate failed (exit %s: %s); reading the migration files instead",
                    done.returncode, redact(tail))
        return {}


def _reverse_from_django(f: _MigrationFile, answer: dict) -> tuple[str | None, bool, str | None]:
    """(down SQL, transactional, why irreversible) from sqlmigrate's answer."""
    if "irreversible" in answer:
        return None, True, f"Django cannot reverse it: {answer['irreversible']}"
    if "error" in answer:
        down, transactional, reason = _reverse_from_ast(f)
        return down, transactional, reason and f"{reason} (sqlmigrate failed: {answer['error']})"
    lines = answer["sql"].strip().splitlines()
    # sqlmigrate wraps an atomic migration in BEGIN;/COMMIT; we run our own transaction instead.
    transactional = bool(lines) and lines[0].strip() == "BEGIN;" and lines[-1].strip() == "COMMIT;"
    if transactional:
        lines = lines[1:-1]
    if _NOT_SQL in lines and not _python_reverses_are_noops(f):
        return None, transactional, "its reverse runs Python code (RunPython), which cannot be saved as SQL"
    return "\n".join(lines) + "\n", transactional, None


def _reverse_from_ast(f: _MigrationFile) -> tuple[str | None, bool, str | None]:
    """The reverse SQL of a migration made only of RunSQL (and no-op RunPython) operations."""
    tree = ast.parse(f.source)
    operations = _class_attribute(tree, "operations")
    if not isinstance(operations, (ast.List, ast.Tuple)):
        return None, f.atomic, "its operations could not be read"
    parts = []
    for op in reversed(operations.elts):
        kind = _call_name(op)
        if kind == "RunSQL":
            reverse = _argument(op, 1, "reverse_sql")
            if reverse is None or (isinstance(reverse, ast.Constant) and reverse.value is None):
                return None, f.atomic, "it has a RunSQL without reverse_sql"
            if _is_noop(reverse):
                continue
            sql = _sql_text(reverse)
            if sql is None:
                return None, f.atomic, "its reverse_sql is not plain SQL text"
            parts.append(sql)
        elif kind == "RunPython":
            if not _is_noop(_argument(op, 1, "reverse_code")):
                return None, f.atomic, "its reverse runs Python code (RunPython), which cannot be saved as SQL"
        else:
            return None, f.atomic, (f"its {kind or 'operation'} needs Django to write the reverse SQL"
                                    " (manage.py sqlmigrate), and Django or manage.py is not available here")
    return "".join(p.rstrip().rstrip(";") + ";\n" for p in parts), f.atomic, None


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
        sql = _sql_text(_argument(op, 0, "sql")) if kind == "RunSQL" else None
        if sql is not None:
            parts.append(sql.rstrip().rstrip(";") + ";\n")
        elif kind == "RunPython":
            opaque.append(_PYTHON_OPERATION)
        else:
            opaque.append(f"its {kind or 'operation'} needs Django to write its SQL (manage.py sqlmigrate), and "
                          "Django or manage.py is not available here")
    return "".join(parts), tuple(opaque)


def _python_reverses_are_noops(f: _MigrationFile) -> bool:
    operations = _class_attribute(ast.parse(f.source), "operations")
    if not isinstance(operations, (ast.List, ast.Tuple)):
        return False
    return all(_is_noop(_argument(op, 1, "reverse_code")) for op in operations.elts if _call_name(op) == "RunPython")


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
    first = {}
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
        if isinstance(element, ast.Tuple) and len(element.elts) == 2 and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in element.elts
        ):
            found.append(f"{element.elts[0].value}.{element.elts[1].value}")
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
