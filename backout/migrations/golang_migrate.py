"""golang-migrate: `migrations/<version>_<title>.up.sql` and `.down.sql`, state in
`schema_migrations(version bigint, dirty boolean)`: one row, the current version.

golang-migrate does not wrap a file in a transaction (its documentation says to add BEGIN/COMMIT
to the file for that), so these migrations are saved as non-transactional and their down scripts
run the way its PostgreSQL driver runs them: the whole file as one query string. Around the run
the row goes where golang-migrate puts it: (target, dirty) first, (target, clean) after; a target
below the first migration empties the table.

When a down file fails, PostgreSQL has rolled the whole query string back (it runs as one implicit
transaction), so the row goes back to the version undone, clean. Only a file that commits
transactions itself can leave half its work behind; then the row stays dirty, as golang-migrate
leaves it, because nobody knows the state for sure.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import psycopg

from backout.errors import BackoutError, first_line
from backout.migrations import script
from backout.migrations.base import (
    DownPath,
    MigrationAdapter,
    SavedMigration,
    missing_path,
    read_file,
    walk_down,
)

_FILE = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")  # golang-migrate's source/parse.go


class GolangMigrateAdapter(MigrationAdapter):
    tool = "golang-migrate"
    default_path = "migrations"
    state_table = "schema_migrations"
    state_columns = ("version", "dirty")

    def current(self, conn: psycopg.Connection[Any]) -> tuple[int, bool] | None:
        """The (version, dirty) row, None when there is no table or no row."""
        if self.state_table_columns(conn) is None:
            return None
        rows = self._query(conn, "SELECT version, dirty FROM schema_migrations LIMIT 1")
        return (int(rows[0][0]), bool(rows[0][1])) if rows else None

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The current version as the only id (golang-migrate records nothing else), also when dirty."""
        state = self.current(conn)
        return [str(state[0])] if state is not None and state[0] >= 0 else []

    def pending(self, conn: psycopg.Connection[Any]) -> list[SavedMigration]:
        """The migrations above the current version, which is what `migrate up` applies."""
        state = self.current(conn)
        version = state[0] if state is not None else -1
        return [m for m in self.available() if int(m.id) > version]

    def applied_history(self, conn: psycopg.Connection[Any]) -> list[str]:
        """The versions of the migration files up to the current one (without the files, the
        current version alone)."""
        state = self.current(conn)
        if state is None or state[0] < 0:
            return []
        try:
            below = [m.id for m in self.available() if int(m.id) < state[0]]
        except BackoutError:
            below = []
        return below + [str(state[0])]

    def down_path(self, conn: psycopg.Connection[Any], saved: Mapping[str, SavedMigration],
                  target: Sequence[str]) -> DownPath:
        return walk_down(self.applied(conn), saved, target)

    def available(self) -> list[SavedMigration]:
        if not self.path.is_dir():
            raise missing_path(self.tool, self.path, "the directory of the golang-migrate files")
        files: dict[int, dict[str, tuple[str, str]]] = {}
        for path in self.path.iterdir():
            match = _FILE.match(path.name)
            if match and path.is_file():
                version, title, direction = int(match.group(1)), match.group(2), match.group(3)
                if direction in files.get(version, {}):
                    raise BackoutError(f"two {direction} files for version {version} in {self.path}")
                files.setdefault(version, {})[direction] = (path.name, title)
        found: list[SavedMigration] = []
        for version in sorted(files):
            pair = files[version]
            saved = {name: read_file(self.path / name) for name, _ in pair.values()}
            title = (pair.get("up") or pair["down"])[1]
            down = saved[pair["down"][0]] if "down" in pair else None
            if down is None:
                up = _FILE.match(pair["up"][0])
                assert up is not None
                reason = f"there is no {up.group(1)}_{up.group(2)}.down.{up.group(4)} beside its up file"
            elif script.is_blank(down):
                reason = f"its {pair['down'][0]} is empty"
            else:
                reason = None
            found.append(SavedMigration(
                tool=self.tool, id=str(version), name=title, down=None if reason else down,
                transactional=False, reversible=reason is None, files=saved,
                parents=[found[-1].id] if found else [], irreversible_reason=reason,
            ))
        return found

    def up_sql(self, m: SavedMigration) -> str:
        return next((text for name, text in m.files.items() if ".up." in name), "")

    def _state_problems(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        state = self.current(conn)
        newest = migrations[-1].id
        if state is None:
            return [f"schema_migrations records no version; the checkpoint expected {newest}"]
        version, dirty = state
        problems = []
        if dirty and not (str(version) == newest and _failed_up_rolled_back(migrations[-1])):
            problems.append(f"schema_migrations is dirty at version {version}: a migration failed halfway"
                            " and needs fixing by hand (migrate force)")
        if str(version) != newest:
            problems.append(f"the current version is {version}, the checkpoint expected {newest}"
                            " (migrated by hand since?)")
        for before, after in zip(migrations, migrations[1:]):
            if after.parents != [before.id]:
                problems.append(f"the saved migrations are not consecutive: {after.id} does not come"
                                f" right after {before.id}")
        return problems

    def check_down_plan(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        # A migration whose up file just failed and was rolled back whole needs no down script:
        # only golang-migrate's dirty mark is left to clear.
        failed = [m for m in migrations if self._failed_and_rolled_back(conn, m)]
        problems = super().check_down_plan(conn, migrations)
        return [p for p in problems if p not in {self._irreversible(m) for m in failed}]

    def _failed_and_rolled_back(self, conn: psycopg.Connection[Any], m: SavedMigration) -> bool:
        return self.current(conn) == (int(m.id), True) and _failed_up_rolled_back(m)

    def _undo(self, conn: psycopg.Connection[Any], m: SavedMigration) -> None:
        target = int(m.parents[0]) if m.parents else None
        if self.current(conn) == (int(m.id), True):
            # Its up file failed, and PostgreSQL rolled it back whole (the plan checks made sure
            # it could): nothing of it to undo, only golang-migrate's dirty mark to clear.
            with conn.transaction():
                _set_version(conn, target, dirty=False)
            return
        assert m.down is not None
        with conn.transaction():
            _set_version(conn, target, dirty=True)
        try:
            with script.autocommit(conn):
                script.execute(conn, m.down)
        except psycopg.Error as exc:
            error = first_line(exc)
            if script.controls_transactions(m.down):
                raise BackoutError(
                    f"{error}; the file commits transactions itself, so part of it may have taken effect:"
                    f" schema_migrations is left dirty at {-1 if target is None else target}, as"
                    " golang-migrate leaves it; check the schema, then run migrate force"
                ) from exc
            with conn.transaction():
                _set_version(conn, int(m.id), dirty=False)
            raise BackoutError(
                f"{error}; PostgreSQL rolled the whole file back (one query string runs as one implicit"
                f" transaction), so schema_migrations is back at {m.id}"
            ) from exc
        with conn.transaction():
            _set_version(conn, target, dirty=False)


def _failed_up_rolled_back(m: SavedMigration) -> bool:
    """Whether a failure of this migration's up file left nothing behind: true when the file does
    not control transactions, as PostgreSQL runs it as one implicit transaction."""
    up = [text for name, text in m.files.items() if ".up." in name]
    return bool(up) and not script.controls_transactions(up[0])


def _set_version(conn: psycopg.Connection[Any], version: int | None, dirty: bool) -> None:
    """golang-migrate's SetVersion: empty the table, then one row unless going below the first
    migration (where a dirty state is still recorded, as version -1)."""
    conn.execute("TRUNCATE schema_migrations")
    if version is not None or dirty:
        conn.execute("INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)",
                     [-1 if version is None else version, dirty])
