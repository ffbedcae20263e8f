"""BACKOUT_MIGRATIONS=none: the app has no migration tool backout knows, so there is no migration
state to record and nothing to undo; a rollback can still restore a backup."""

from __future__ import annotations

from typing import Any

import psycopg

from backout.migrations.base import MigrationAdapter, SavedMigration


class NoMigrations(MigrationAdapter):
    tool = "none"
    default_path = "."
    state_table = ""
    state_columns = ()

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        return []

    def available(self) -> list[SavedMigration]:
        return []

    def up_sql(self, m: SavedMigration) -> str:
        return ""

    def check_down_plan(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        if not migrations:
            return []
        return [f"BACKOUT_MIGRATIONS is none, so backout cannot undo the saved {migrations[0].tool}"
                f" migrations ({', '.join(m.id for m in migrations)}); set BACKOUT_MIGRATIONS to"
                f" {migrations[0].tool} or roll back with --db restore"]
