"""Prisma Migrate: `prisma/migrations/<name>/migration.sql`, state in `_prisma_migrations`.

The down script is `down.sql` beside `migration.sql`, the file Prisma's guide to down migrations
generates with `prisma migrate diff --script`. Undoing a migration sets `rolled_back_at` on its
row, which `prisma migrate deploy` ignores, so a later deploy applies the migration again.
Prisma runs each migration file in one transaction on PostgreSQL, and so do we its down script.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from backout.migrations import script
from backout.migrations.base import (
    MigrationAdapter,
    Progress,
    SavedMigration,
    expect_rows,
    missing_path,
    read_file,
)


class PrismaAdapter(MigrationAdapter):
    tool = "prisma"
    default_path = "prisma/migrations"
    state_table = "_prisma_migrations"
    state_columns = ("id", "checksum", "finished_at", "migration_name", "logs", "rolled_back_at",
                     "started_at", "applied_steps_count")

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        if self.state_table_columns(conn) is None:
            return []
        rows = self._query(
            conn,
            "SELECT migration_name FROM _prisma_migrations"
            " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY started_at, migration_name",
        )
        return [name for (name,) in rows]

    def available(self) -> list[SavedMigration]:
        if not self.path.is_dir():
            raise missing_path(self.tool, self.path, "the prisma/migrations directory")
        found: list[SavedMigration] = []
        # Prisma applies the directories in the order of their names (timestamp prefixes).
        for directory in sorted(p for p in self.path.iterdir() if (p / "migration.sql").is_file()):
            name = directory.name
            up = read_file(directory / "migration.sql")
            files = {f"{name}/migration.sql": up}
            down_file = directory / "down.sql"
            down = read_file(down_file) if down_file.is_file() else None
            reason = None
            if down is not None:
                files[f"{name}/down.sql"] = down
                if script.is_blank(down) and not script.is_blank(up):
                    reason = "its down.sql is empty"
            else:
                reason = "there is no down.sql beside its migration.sql (prisma migrate diff --script makes one)"
            found.append(SavedMigration(
                tool=self.tool, id=name, name=name, down=None if reason else down, transactional=True,
                reversible=reason is None, files=files, parents=[found[-1].id] if found else [],
                irreversible_reason=reason,
            ))
        return found

    def up_sql(self, m: SavedMigration) -> str:
        return m.files.get(f"{m.id}/migration.sql", "")

    def _state_problems(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        problems = super()._state_problems(conn, migrations)
        if not problems:
            checksums = dict(self._query(
                conn,
                "SELECT migration_name, checksum FROM _prisma_migrations"
                " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL",
            ))
            for m in migrations:
                up = m.files.get(f"{m.id}/migration.sql")
                if up is not None and checksums.get(m.id) != checksum(up):
                    problems.append(
                        f"{m.id} was applied from a migration.sql other than the one saved (its checksum differs)"
                    )
        return problems

    def resolve_failed(
        self, conn: psycopg.Connection[Any], migrations: list[SavedMigration], progress: Progress | None = None
    ) -> list[str]:
        """`prisma migrate resolve --rolled-back` for the failed rows of `migrations`: until then
        `prisma migrate deploy` refuses to run (P3009). Only where the database rolled the whole
        migration.sql back, which PostgreSQL does unless the script commits transactions itself."""
        say = progress or (lambda message: None)
        if self.state_table_columns(conn) is None:
            return []
        failed = {name for (name,) in self._query(
            conn, "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NULL AND rolled_back_at IS NULL"
            " AND migration_name = ANY(%s)", [[m.id for m in migrations]])}
        whole = []
        for m in migrations:
            if m.id not in failed:
                continue
            if script.controls_transactions(m.files[f"{m.id}/migration.sql"]):
                say(f"{m.id} failed in a migration.sql that commits transactions itself, so part of it may have"
                    " taken effect: check the schema, then run prisma migrate resolve")
            else:
                whole.append(m.id)
        if whole:
            with conn.transaction():
                conn.execute("UPDATE _prisma_migrations SET rolled_back_at = now() WHERE finished_at IS NULL"
                             " AND rolled_back_at IS NULL AND migration_name = ANY(%s)", [whole])
            say(f"marked {', '.join(whole)} rolled back in _prisma_migrations (PostgreSQL rolled the failed"
                " script back whole), so the next prisma migrate deploy applies it again")
        return whole

    def _undo(self, conn: psycopg.Connection[Any], m: SavedMigration) -> None:
        def record(c: psycopg.Connection[Any]) -> None:
            cur = c.execute(
                "UPDATE _prisma_migrations SET rolled_back_at = now()"
                " WHERE migration_name = %s AND finished_at IS NOT NULL AND rolled_back_at IS NULL",
                [m.id],
            )
            expect_rows(cur, self.state_table, m.id)

        self._run_sql_step(conn, m, record)


def checksum(migration_sql: str) -> str:
    """What Prisma stores in `_prisma_migrations.checksum`: the sha256 of migration.sql, in hex."""
    return hashlib.sha256(migration_sql.encode()).hexdigest()
