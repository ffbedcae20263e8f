"""Migration-tool adapters: read the tool's state, save down scripts, run down migrations.

    adapter = get_adapter(settings.migrations, settings.migrations_path)
    adapter.applied(conn)            # ids applied, from the tool's own table
    adapter.pending(conn)            # SavedMigration records to keep in the checkpoint
    adapter.migration_sql(conn, pending)   # the SQL each runs (up, down), for the verdict
    adapter.applied_history(conn)    # every applied id (Alembic's heads and what lies below), for counts
    adapter.down_path(conn, saved_by_id, target)   # DownPath from the state applied now to `target`
    adapter.check_down_plan(conn, saved)   # [] or what makes the plan impossible
    adapter.run_down(conn, saved)    # undo them, newest first
"""

from __future__ import annotations

from pathlib import Path

from backout.errors import ConfigError
from backout.migrations.alembic import AlembicAdapter
from backout.migrations.base import DownMigrationError, MigrationAdapter, SavedMigration
from backout.migrations.dbmate import DbmateAdapter
from backout.migrations.django import DjangoAdapter
from backout.migrations.golang_migrate import GolangMigrateAdapter
from backout.migrations.none import NoMigrations
from backout.migrations.prisma import PrismaAdapter

ADAPTERS: dict[str, type[MigrationAdapter]] = {
    a.tool: a for a in (PrismaAdapter, AlembicAdapter, DjangoAdapter, DbmateAdapter, GolangMigrateAdapter, NoMigrations)
}

__all__ = ["ADAPTERS", "DownMigrationError", "MigrationAdapter", "SavedMigration", "get_adapter"]


def get_adapter(tool: str, path: Path | str | None = None) -> MigrationAdapter:
    """The adapter for `tool` (BACKOUT_MIGRATIONS), reading migrations at `path`
    (BACKOUT_MIGRATIONS_PATH) or the tool's conventional place, relative to the working directory."""
    adapter = ADAPTERS.get(tool)
    if adapter is None:
        raise ConfigError("BACKOUT_MIGRATIONS", f"is {tool!r}", "one of " + ", ".join(ADAPTERS))
    chosen = Path(path) if path is not None else adapter.conventional_path()
    return adapter(chosen.absolute())
