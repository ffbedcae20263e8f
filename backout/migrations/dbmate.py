"""dbmate: `db/migrations/<version>_<name>.sql` with `-- migrate:up` and `-- migrate:down`
sections, state in `schema_migrations(version)`, one row per applied migration.

A section runs in a transaction unless its marker line says `transaction:false`; `dbmate
rollback` runs the down section and deletes the version's row (in the same transaction when
there is one), and so do we.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

from backout.errors import BackoutError
from backout.migrations import script
from backout.migrations.base import (
    MigrationAdapter,
    SavedMigration,
    expect_rows,
    missing_path,
    read_file,
)

# dbmate's own patterns (pkg/dbmate/migration.go and migrations.go).
_FILE = re.compile(r"^(\d+).*\.sql$")
_UP = re.compile(r"(?m)^--\s*migrate:up(\s*$|\s+\S+)")
_DOWN = re.compile(r"(?m)^--\s*migrate:down(\s*$|\s+\S+)$")


class DbmateAdapter(MigrationAdapter):
    tool = "dbmate"
    default_path = "db/migrations"
    state_table = "schema_migrations"
    state_columns = ("version",)

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        columns = self.state_table_columns(conn)
        if columns is None:
            return []
        if "dirty" in columns:
            raise BackoutError(
                "schema_migrations has a dirty column, as golang-migrate's has, not dbmate's (version only);"
                " set BACKOUT_MIGRATIONS=golang-migrate if that is the tool"
            )
        return [v for (v,) in self._query(conn, "SELECT version FROM schema_migrations ORDER BY version")]

    def available(self) -> list[SavedMigration]:
        if not self.path.is_dir():
            raise missing_path(self.tool, self.path, "the directory of the dbmate migration files")
        found: list[SavedMigration] = []
        for path in sorted(p for p in self.path.iterdir() if p.is_file() and _FILE.match(p.name)):
            version = _FILE.match(path.name).group(1)  # type: ignore[union-attr]
            text = read_file(path)
            up, down, down_options = parse(text, path)
            reason = "its -- migrate:down section is empty" if script.is_blank(down) and not script.is_blank(up) else None
            found.append(SavedMigration(
                tool=self.tool, id=version, name=path.stem, down=None if reason else down,
                transactional=down_options.get("transaction") != "false", reversible=reason is None,
                files={path.name: text}, parents=[found[-1].id] if found else [], irreversible_reason=reason,
            ))
        return found

    def up_sql(self, m: SavedMigration) -> str:
        name, text = next(iter(m.files.items()))
        return parse(text, Path(name))[0]

    def _undo(self, conn: psycopg.Connection[Any], m: SavedMigration) -> None:
        def record(c: psycopg.Connection[Any]) -> None:
            cur = c.execute("DELETE FROM schema_migrations WHERE version = %s", [m.id])
            expect_rows(cur, self.state_table, f"version {m.id}")

        self._run_sql_step(conn, m, record)


def parse(text: str, path: Path) -> tuple[str, str, dict[str, str]]:
    """The up section, the down section (from its marker to the end, as dbmate runs it) and the
    down marker's options. A file without both markers is refused, as dbmate refuses it."""
    up = _UP.search(text)
    down = _DOWN.search(text)
    if up is None or down is None or up.start() > down.start():
        raise BackoutError(
            f"{path.name} is not a dbmate migration: it needs a '-- migrate:up' line and, after it, "
            "a '-- migrate:down' line"
        )
    down_section = text[down.start():]
    marker = down_section.split("\n", 1)[0]
    options = dict(
        pair.split(":", 1) for pair in marker.split()[1:] if pair.count(":") == 1 and not pair.startswith("migrate:")
    )
    return text[up.start():down.start()], down_section, options
