"""What every migration-tool adapter shares: the saved-migration record, the error of a failed
down step, reading the tool's state table, and the down-plan checks and loop.

An adapter reads the tool's own state table and migration files and never runs the tool's
forward migrations; it runs down scripts saved earlier, updating the state table the way the
tool itself would leave it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import psycopg

from backout.errors import BackoutError, BadInput, PlanRefused, first_line
from backout.migrations import script

Progress = Callable[[str], None]


def undone(ran: list[str]) -> str:
    """The line that ends a run of down migrations."""
    return f"{len(ran)} migration(s) undone" + (f": {', '.join(ran)}" if ran else "")


@dataclass
class SavedMigration:
    """One migration as found in the code, with what is needed to undo it after the code is gone.

    `down` is the down script (SQL, or for Alembic the source of `downgrade()`), None when the
    migration is irreversible, and then `irreversible_reason` says why. `transactional` says
    whether the down script runs in a transaction. `files` maps paths relative to the migrations
    directory to their contents. `parents` are the ids this migration comes right after (Alembic's
    down_revision, Django's dependencies, the previous file for the others): the state a down
    migration returns to. `replaces` (Django's squashed migrations) are the ids it stands for.
    """

    tool: str
    id: str
    name: str
    down: str | None
    transactional: bool
    reversible: bool
    files: dict[str, str]
    parents: list[str] = field(default_factory=list)
    irreversible_reason: str | None = None
    replaces: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SavedMigration:
        required = ("tool", "id", "name", "down", "transactional", "reversible", "files")
        missing = [key for key in required if key not in d]
        if missing:
            raise BackoutError(f"saved migration record {d.get('id', '?')} lacks {', '.join(missing)}")
        return cls(
            tool=d["tool"], id=str(d["id"]), name=d["name"], down=d["down"],
            transactional=bool(d["transactional"]), reversible=bool(d["reversible"]),
            files=dict(d["files"]), parents=[str(p) for p in d.get("parents") or []],
            irreversible_reason=d.get("irreversible_reason"), replaces=[str(r) for r in d.get("replaces") or []],
        )


@dataclass(frozen=True)
class MigrationSQL:
    """What one migration runs, as SQL, for judging it: the forward script as the tool sends it,
    the down script where it is SQL, and the operations that cannot be written as SQL at all
    (Python code, a revision that needs a live database), each said in a sentence."""

    up: str
    down: str | None = None
    opaque: tuple[str, ...] = ()


@dataclass
class DownPath:
    """The way down from the state applied now to a target state, by saved down scripts:
    `migrations` to undo (oldest first); `missing`, applied migrations above the target that no
    checkpoint saved a down script for; `behind`, migrations of the target that are not applied
    now (a down migration cannot apply them)."""

    migrations: list[SavedMigration]
    missing: list[str] = field(default_factory=list)
    behind: list[str] = field(default_factory=list)


class DownMigrationError(BackoutError):
    """A down script failed. Its own step was rolled back where it ran in a transaction; the steps
    before it (`ran`) stay undone, and the tool's state table says so."""

    def __init__(self, ran: list[str], failed: str, reason: str) -> None:
        self.ran = list(ran)
        self.failed = failed
        self.reason = reason
        done = ", ".join(self.ran) if self.ran else "none"
        super().__init__(f"down migration {failed} failed: {reason} (undone before it: {done})")


class MigrationAdapter:
    """The interface and the shared parts. Subclasses set the class attributes and implement
    `applied`, `available` and `_undo` (or override `run_down` when the tool runs its own)."""

    tool: ClassVar[str]
    default_path: ClassVar[str]
    state_table: ClassVar[str]
    state_columns: ClassVar[tuple[str, ...]]

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def conventional_path(cls) -> Path:
        """Where the tool keeps its migrations by convention, relative to the app's root."""
        return Path(cls.default_path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # --- reading state -------------------------------------------------------------------------

    def applied(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Applied migration ids in order, from the tool's own table; [] when it does not exist."""
        raise NotImplementedError

    def available(self) -> list[SavedMigration]:
        """Every migration in the code, oldest first."""
        raise NotImplementedError

    def pending(self, conn: psycopg.Connection[Any]) -> list[SavedMigration]:
        """The migrations in the code that are not applied yet, oldest first."""
        done = set(self.applied(conn))
        return [m for m in self.available() if m.id not in done]

    def migration_sql(self, conn: psycopg.Connection[Any] | None, migrations: list[SavedMigration]) -> dict[str, MigrationSQL]:
        """The SQL each of `migrations` runs forward (and back), keyed by id."""
        return {m.id: MigrationSQL(up=self.up_sql(m), down=m.down) for m in migrations}

    def up_sql(self, m: SavedMigration) -> str:
        """The forward SQL of a migration whose tool keeps it in a file (saved in `m.files`)."""
        raise NotImplementedError

    def applied_history(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Every applied migration, for counting: the state table's rows where the tool lists
        them all; tools that record only the newest (Alembic's heads, golang-migrate's version)
        add what lies below it among the migration files here."""
        return self.applied(conn)

    def down_path(self, conn: psycopg.Connection[Any], saved: Mapping[str, SavedMigration],
                  target: Sequence[str]) -> DownPath:
        """The saved migrations (any checkpoint's, by id) to undo to go from the state applied now
        to `target`, a state `applied` returned earlier. For tools that list every applied
        migration: those applied now and not in the target (a squashed migration stands for the
        ones it replaces)."""
        applied = self.applied(conn)
        keep = set(target)
        above = [i for i in applied if i not in keep]
        chosen = [saved[i] for i in above if i in saved]
        covered = {r for m in chosen for r in m.replaces}
        return DownPath(
            migrations=oldest_first(chosen),
            missing=[i for i in above if i not in saved and i not in covered],
            behind=[i for i in target if i not in set(applied)],
        )

    def state_table_columns(self, conn: psycopg.Connection[Any]) -> set[str] | None:
        """The columns of the tool's state table, None when there is no such table yet.

        Raises BackoutError naming the table and the expected columns when some are missing.
        """
        with conn.transaction():
            cur = conn.execute(
                "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s)"
                " AND a.attnum > 0 AND NOT a.attisdropped",
                [self.state_table],
            )
            columns = {row[0] for row in cur.fetchall()}
        if not columns:
            return None
        missing = [c for c in self.state_columns if c not in columns]
        if missing:
            raise BackoutError(
                f"the {self.tool} state table {self.state_table} has an unexpected shape: it lacks "
                f"{', '.join(missing)}; expected columns {', '.join(self.state_columns)}"
                f" (is BACKOUT_MIGRATIONS={self.tool} the tool that made it?)"
            )
        return columns

    def _query(self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with conn.transaction():
            return conn.execute(sql, params).fetchall()

    # --- down migrations -----------------------------------------------------------------------

    def check_down_plan(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        """What makes undoing `migrations` impossible; [] when nothing does."""
        problems = [self._irreversible(m) for m in migrations if not m.reversible or m.down is None]
        problems += [
            f"{m.id} was saved by {m.tool}, not {self.tool}" for m in migrations if m.tool != self.tool
        ]
        ids = [m.id for m in migrations]
        problems += [f"{i} is in the plan {ids.count(i)} times" for i in dict.fromkeys(ids) if ids.count(i) > 1]
        if migrations:
            problems += self._state_problems(conn, oldest_first(migrations))
        return problems

    def run_down(
        self, conn: psycopg.Connection[Any], migrations: list[SavedMigration], progress: Progress | None = None
    ) -> list[str]:
        """Undo `migrations`, newest first; the ids undone. They may come in any order (from several
        checkpoints, say): each goes after the ones it depends on.

        Refuses with PlanRefused, before changing anything, when `check_down_plan` finds problems.
        """
        say = progress or (lambda message: None)
        script.require_idle(conn)
        self.refuse_if_impossible(conn, migrations)
        ran: list[str] = []
        for m in reversed(oldest_first(migrations)):
            say(f"undoing {self.tool} migration {m.id} ({m.name})")
            try:
                self._undo(conn, m)
            except (psycopg.Error, BackoutError) as exc:
                raise DownMigrationError(ran, m.id, first_line(exc)) from exc
            ran.append(m.id)
        say(undone(ran))
        return ran

    def resolve_failed(
        self, conn: psycopg.Connection[Any], migrations: list[SavedMigration], progress: Progress | None = None
    ) -> list[str]:
        """After a failed migrate command, `migrations` being those still pending: clear what the
        tool recorded of one that failed and left nothing behind, where that record would stop the
        tool's next run; the ids cleared. Most tools record nothing of a failed migration."""
        return []

    def refuse_if_impossible(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> None:
        problems = self.check_down_plan(conn, migrations)
        if problems:
            raise PlanRefused("cannot run the down migrations: " + "; ".join(problems))

    def _undo(self, conn: psycopg.Connection[Any], m: SavedMigration) -> None:
        """Run one down script and update the state table; leave both consistent on failure."""
        raise NotImplementedError

    def _irreversible(self, m: SavedMigration) -> str:
        return f"{m.id} ({m.name}) is irreversible: {m.irreversible_reason or 'it has no down script'}"

    def _state_problems(self, conn: psycopg.Connection[Any], migrations: list[SavedMigration]) -> list[str]:
        """For tools that list every applied migration: the plan must be exactly the newest ones."""
        applied = self.applied(conn)
        # A squashed migration's row and the rows of those it replaces go together.
        plan = [m.id for m in migrations] + [r for m in migrations for r in m.replaces if r in applied]
        problems = [
            f"{i} is not applied, though the checkpoint recorded it (rolled back by hand?)"
            for i in plan if i not in applied
        ]
        positions = [applied.index(i) for i in plan if i in applied]
        if positions:
            later = [a for a in applied[min(positions):] if a not in plan]
            problems += [
                f"{a} was applied after the checkpoint and has no saved down script (migrated by hand?)"
                for a in later
            ]
        return problems

    def _run_sql_step(
        self, conn: psycopg.Connection[Any], m: SavedMigration, record: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        """The down script, then `record` (the state-table update), in one transaction when the
        migration is transactional; otherwise as the tools run such files: one query string
        outside any transaction block, and the record only after it succeeded."""
        assert m.down is not None
        if m.transactional:
            with conn.transaction():
                script.execute(conn, m.down)
                record(conn)
            return
        try:
            with script.autocommit(conn):
                script.execute(conn, m.down)
        except psycopg.Error as exc:
            raise BackoutError(first_line(exc) + _partial_note(m.down, self.state_table)) from exc
        with conn.transaction():
            record(conn)


def oldest_first(migrations: list[SavedMigration]) -> list[SavedMigration]:
    """The migrations with each after those of its parents that are in the list; otherwise in
    the order given."""
    ids = {m.id for m in migrations}
    placed: set[str] = set()
    ordered: list[SavedMigration] = []
    remaining = list(migrations)
    while remaining:
        ready = next((m for m in remaining if all(p in placed or p not in ids for p in m.parents)), remaining[0])
        ordered.append(ready)
        placed.add(ready.id)
        remaining.remove(ready)
    return ordered


def walk_down(heads: Sequence[str], saved: Mapping[str, SavedMigration], target: Sequence[str]) -> DownPath:
    """The DownPath of tools whose state is the newest migrations only (Alembic's heads,
    golang-migrate's version): from each head down through the saved migrations' parents until
    the target or what lies below it."""
    keep = _below(target, saved)
    chosen: dict[str, SavedMigration] = {}
    missing: list[str] = []
    stack = list(heads)
    while stack:
        node = stack.pop()
        if node in keep or node in chosen or node in missing:
            continue
        if node not in saved:
            missing.append(node)
            continue
        chosen[node] = saved[node]
        stack.extend(saved[node].parents)
    reached = _below(heads, saved)
    behind = [] if missing else [t for t in target if t not in reached]
    return DownPath(migrations=oldest_first(list(chosen.values())), missing=sorted(missing), behind=behind)


def _below(heads: Sequence[str], saved: Mapping[str, SavedMigration]) -> set[str]:
    """The heads and every migration below them that the saved migrations' parents reach."""
    found: set[str] = set()
    stack = list(heads)
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(saved[node].parents if node in saved else [])
    return found


def expect_rows(cur: psycopg.Cursor, table: str, what: str) -> None:
    """A state-table update that matched nothing means the state changed under us: stop."""
    if cur.rowcount < 1:
        raise BackoutError(f"{table} has no row for {what} any more (changed while undoing?)")


def read_file(path: Path) -> str:
    """A migration file exactly as stored: no newline translation, so checksums still match."""
    return path.read_bytes().decode("utf-8")


def missing_path(tool: str, path: Path, expected: str) -> BadInput:
    return BadInput(
        f"{tool} migrations not found: {path} does not exist; set BACKOUT_MIGRATIONS_PATH to {expected}"
    )


def _partial_note(sql: str, table: str) -> str:
    if script.controls_transactions(sql):
        return (f"; the script commits transactions itself, so statements before the failing one "
                f"may have taken effect, while {table} still lists the migration: check the schema")
    return "; PostgreSQL rolled the whole script back (one query string runs as one implicit transaction)"
