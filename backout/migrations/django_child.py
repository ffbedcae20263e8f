"""Run by backout's Django adapter in a child process, with the project's Python, in the project's
directory and under its settings (DJANGO_SETTINGS_MODULE): Django's own migration loader and
executor answer for every installed app, wherever it lives (the project, site-packages).

It imports nothing of backout (it runs in the app's environment, where backout's own imports
may not all resolve). It reads one JSON request on stdin and writes its answer as one line that
starts with MARKER; progress lines go before it.

    {"command": "inspect"}
        -> {"database", "recorded", "applied", "plan", "migrations": {id: {..., "down", "up"}}}
    {"command": "down", "database": NAME, "undo": [ids], "files": {id: {path: source}}}
        -> {"database", "undone": [ids], "failed": id|null, "error": text|null}

`files` are saved migration files: for each app they name, the app's migrations are loaded from
a copy of its migrations package with the saved files written over it, so that a migration whose
code is gone is still unapplied by Django itself.
"""

import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

MARKER = "BACKOUT-DJANGO:"
PROGRESS = "BACKOUT-DJANGO-PROGRESS:"


def main() -> int:
    request = json.load(sys.stdin)
    # The project's directory, as manage.py has it, in place of this script's (where a module
    # named django.py, backout's adapter, would hide Django itself).
    sys.path[0] = os.getcwd()
    import django

    django.setup()
    with tempfile.TemporaryDirectory(prefix="backout-django-") as scratch:
        if request.get("files"):
            _overlay(request["files"], Path(scratch))
        if request["command"] == "inspect":
            answer = _inspect()
        elif request["command"] == "down":
            answer = _down(request["database"], request["undo"])
        else:
            raise SystemExit(f"unknown command {request['command']!r}")
    print(MARKER + json.dumps(answer), flush=True)
    return 0


def _key(node: tuple[str, str]) -> str:
    return f"{node[0]}.{node[1]}"


def _executor() -> tuple[Any, Any]:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    return MigrationExecutor(connection), connection


def _database(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        return str(cursor.fetchone()[0])


def _inspect() -> dict[str, Any]:
    from django.db.migrations.exceptions import IrreversibleError

    executor, connection = _executor()
    loader = executor.loader
    graph = loader.graph
    recorded = executor.recorder.applied_migrations() if executor.recorder.has_table() else {}
    full = executor.migration_plan(graph.leaf_nodes(), clean_start=True)
    applied = [_key((m.app_label, m.name)) for m, _ in full if (m.app_label, m.name) in loader.applied_migrations]
    plan = [m for m, _ in executor.migration_plan(graph.leaf_nodes())]
    found: dict[str, dict[str, Any]] = {}
    for migration in plan:
        node = (migration.app_label, migration.name)
        module = sys.modules[type(migration).__module__]
        path = Path(module.__file__ or "")
        reason = _irreversible(migration)
        try:
            down = "\n".join(loader.collect_sql([(migration, True)])) + "\n"
        except IrreversibleError as exc:
            down, reason = None, reason or str(exc)
        except Exception as exc:  # noqa: BLE001 - Django could not write it; the files still undo it
            down = f"-- Django could not write this migration's reverse SQL: {type(exc).__name__}: {exc}\n"
        try:  # the forward SQL too, as sqlmigrate writes it, for backout's verdict
            up = "\n".join(loader.collect_sql([(migration, False)])) + "\n"
        except Exception:  # noqa: BLE001 - then the verdict reads the files instead
            up = None
        found[_key(node)] = {
            "app": migration.app_label,
            "name": migration.name,
            "file": module.__name__.replace(".", "/") + ".py",
            "source": path.read_bytes().decode("utf-8"),
            "dependencies": [_key(p) for p in sorted(graph.node_map[node].parents)],
            "replaces": [_key(r) for r in migration.replaces],
            "atomic": bool(migration.atomic),
            "down": down,
            "up": up,
            "irreversible": reason,
        }
    return {
        "database": _database(connection),
        "recorded": sorted(_key(k) for k in recorded),
        "applied": applied,
        "plan": [_key((m.app_label, m.name)) for m in plan],
        "migrations": found,
    }


def _irreversible(migration: Any) -> str | None:
    """Why Django cannot unapply the migration, or None: an operation with no reverse at all."""
    for operation in migration.operations:
        if not operation.reversible:
            kind = type(operation).__name__
            what = {"RunPython": "a RunPython without reverse_code", "RunSQL": "a RunSQL without reverse_sql"}
            return f"it has {what.get(kind, 'an operation that cannot be reversed (' + kind + ')')}"
    return None


def _down(database: str, undo: list[str]) -> dict[str, Any]:
    executor, connection = _executor()
    here = _database(connection)
    if here != database:
        return {"database": here, "undone": [], "failed": None,
                "error": f"Django's settings connect to database {here}, not {database}: "
                         "run with the app's DATABASE_URL"}
    loader = executor.loader
    graph = loader.graph
    wanted = set(undo)
    missing = sorted(i for i in wanted if tuple(i.split(".", 1)) not in graph.nodes)
    if missing:
        return {"database": here, "undone": [], "failed": None,
                "error": "Django's migration graph has no " + ", ".join(missing)}
    not_applied = sorted(i for i in wanted if tuple(i.split(".", 1)) not in loader.applied_migrations)
    if not_applied:
        return {"database": here, "undone": [], "failed": None,
                "error": "not applied, so there is nothing to unapply: " + ", ".join(not_applied)}
    for i in sorted(wanted):
        node = tuple(i.split(".", 1))
        for later in graph.backwards_plan(node):
            if later != node and _key(later) not in wanted and later in loader.applied_migrations:
                return {"database": here, "undone": [], "failed": None,
                        "error": f"{_key(later)} depends on {i} and stays applied; unapply it too"}
    full = executor.migration_plan(graph.leaf_nodes(), clean_start=True)
    plan = [(m, True) for m, _ in reversed(full) if _key((m.app_label, m.name)) in wanted]
    undone: list[str] = []

    def progress(action: str, migration: Any = None, fake: bool = False) -> None:
        if action == "unapply_success":
            undone.append(_key((migration.app_label, migration.name)))
            print(PROGRESS + f"unapplied {undone[-1]}", flush=True)

    executor.progress_callback = progress
    try:
        executor.migrate(None, plan=plan)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which owns the error
        failed = next((_key((m.app_label, m.name)) for m, _ in plan if _key((m.app_label, m.name)) not in undone), None)
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        return {"database": here, "undone": undone, "failed": failed, "error": text}
    return {"database": here, "undone": undone, "failed": None, "error": None}


def _overlay(files: dict[str, dict[str, str]], scratch: Path) -> None:
    """Load the named apps' migrations from copies with the saved files written over them."""
    from django.conf import settings
    from django.db.migrations.loader import MigrationLoader
    from importlib import import_module

    by_app: dict[str, dict[str, str]] = {}
    for key, saved in files.items():
        app = key.split(".", 1)[0]
        for path, source in saved.items():
            by_app.setdefault(app, {})[Path(path).name] = source
    root = scratch / "backout_saved_migrations"
    root.mkdir()
    (root / "__init__.py").write_text("")
    modules = dict(getattr(settings, "MIGRATION_MODULES", {}) or {})
    for n, (app, saved) in enumerate(sorted(by_app.items())):
        package = root / f"app{n}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        name, _ = MigrationLoader.migrations_module(app)
        try:
            current = import_module(name) if name else None
        except ImportError:
            current = None
        for directory in getattr(current, "__path__", []) or []:
            for module_file in Path(directory).glob("*.py"):
                if module_file.name != "__init__.py":
                    shutil.copyfile(module_file, package / module_file.name)
        for filename, source in saved.items():
            (package / filename).write_bytes(source.encode("utf-8"))
        modules[app] = f"backout_saved_migrations.app{n}"
    sys.path.insert(0, str(scratch))
    settings.MIGRATION_MODULES = modules


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
