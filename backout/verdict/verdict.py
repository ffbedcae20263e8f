"""A release's verdict: what rolling it back will cost, decided from its pending migrations' SQL.

    verdict = judge(adapter, conn, pending)      # at checkpoint time, and by `backout check`
    verdict.kind                                 # code-only | down-needed | irreversible
    loss = down_loss(conn, [verdict, ...])       # at rollback time: data the down scripts would drop

- **code-only** (code-only rollback safe): every statement expands the schema, so the previous
  release's code runs on the new schema and the database can stay as it is;
- **down-needed**: something contracts the schema, changes rows or cannot be judged, and every such
  migration has a down script;
- **down-loses-data** (only at rollback time): down is needed and the down scripts drop tables or
  columns that hold data written since the deploy (`down_loss` counts the rows and the
  non-default values);
- **irreversible**: down is needed and a migration that needs it has no down script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg import sql as pgsql

from backout.migrations.base import MigrationAdapter, SavedMigration
from backout.verdict.statement import BIG_TABLE_LOCK, CONTRACT, DATA, EXPAND, NONE, UNKNOWN, Danger, Statement

CODE_ONLY, DOWN_NEEDED, DOWN_LOSES_DATA, IRREVERSIBLE = "code-only", "down-needed", "down-loses-data", "irreversible"
VERDICTS = (CODE_ONLY, DOWN_NEEDED, DOWN_LOSES_DATA, IRREVERSIBLE)
TEXT = {
    CODE_ONLY: "code-only rollback safe",
    DOWN_NEEDED: "down needed",
    DOWN_LOSES_DATA: "down loses data",
    IRREVERSIBLE: "irreversible",
}
_ORDER = {CODE_ONLY: 0, DOWN_NEEDED: 1, DOWN_LOSES_DATA: 2, IRREVERSIBLE: 3}

# An ACCESS EXCLUSIVE lock on a table at least this big (its heap, indexes and TOAST) is a danger:
# every query of the table waits behind it for as long as the statement runs.
BIG_TABLE_BYTES = 100 * 1024 * 1024


@dataclass
class MigrationVerdict:
    id: str
    name: str
    reversible: bool
    kind: str  # the worst class of its statements (expand when it has none)
    statements: list[Statement]
    down_drops: list[tuple[str, str | None]] = field(default_factory=list)
    irreversible_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "reversible": self.reversible, "class": self.kind,
                "statements": [s.to_json() for s in self.statements],
                "down_drops": [list(d) for d in self.down_drops], "irreversible_reason": self.irreversible_reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MigrationVerdict:
        return cls(id=d["id"], name=d["name"], reversible=d["reversible"], kind=d["class"],
                   statements=[Statement.from_json(s) for s in d["statements"]],
                   down_drops=[(t, c) for t, c in d.get("down_drops") or []],
                   irreversible_reason=d.get("irreversible_reason"))


@dataclass
class Verdict:
    kind: str
    reason: str
    migrations: list[MigrationVerdict]

    @property
    def text(self) -> str:
        return TEXT[self.kind]

    @property
    def deciding(self) -> list[tuple[str, Statement]]:
        """The statements that decided the verdict: every non-expand one (none for code-only)."""
        return [(m.id, s) for m in self.migrations for s in m.statements if s.kind != EXPAND]

    @property
    def dangers(self) -> list[tuple[str, Danger]]:
        return [(m.id, d) for m in self.migrations for s in m.statements for d in s.dangers]

    @property
    def down_drops(self) -> list[tuple[str, str | None]]:
        return [d for m in self.migrations for d in m.down_drops]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.kind, "text": self.text, "reason": self.reason,
            "deciding": [{"migration": mid, **s.to_json()} for mid, s in self.deciding],
            "dangers": [{"migration": mid, **d.to_json()} for mid, d in self.dangers],
            "down_drops": [list(d) for d in self.down_drops],
            "migrations": [m.to_json() for m in self.migrations],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verdict:
        return cls(kind=d["verdict"], reason=d["reason"],
                   migrations=[MigrationVerdict.from_json(m) for m in d.get("migrations") or []])

    def lines(self) -> list[str]:
        """The verdict as the release log and the CLI print it."""
        out = [f"verdict: {self.text}: {self.reason}"]
        out += [f"  {s.kind:8} {mid}: {s.reason}  [{s.sql}]" for mid, s in self.deciding]
        out += [f"  danger   {mid}: {d.message}" for mid, d in self.dangers]
        return out


def judge(adapter: MigrationAdapter, conn: psycopg.Connection[Any] | None, pending: Sequence[SavedMigration],
          big_table_bytes: int = BIG_TABLE_BYTES) -> Verdict:
    """The verdict on applying `pending` (oldest first) to the database behind `conn`; the sizes of
    the tables locked are looked up there (skipped without a connection)."""
    scripts = adapter.migration_sql(conn, list(pending))
    judged = []
    created: set[str] = set()
    for m in pending:
        forward = scripts.get(m.id)
        statements = _statements(forward, adapter.state_table)
        for s in statements:
            if s.target in created:
                _on_new_table(s)
            elif s.locks and conn is not None:
                _check_size(conn, s, big_table_bytes)
            created.update(s.creates)
        down_sql = forward.down if forward is not None else None
        drops = [d for s in _statements_of(down_sql, adapter.state_table) for d in s.drops]
        worst = max((s.kind for s in statements), key=_RANK.__getitem__, default=EXPAND)
        judged.append(MigrationVerdict(id=m.id, name=m.name, reversible=m.reversible and m.down is not None,
                                       kind=worst, statements=statements, down_drops=drops,
                                       irreversible_reason=m.irreversible_reason))
    return combine(judged)


def combine(migrations: list[MigrationVerdict]) -> Verdict:
    needs_down = [m for m in migrations if m.kind != EXPAND]
    if not migrations:
        return Verdict(CODE_ONLY, "no pending migrations", [])
    if not needs_down:
        return Verdict(CODE_ONLY, f"{_count_text(len(migrations))}, all expand: the previous code runs on the new schema",
                       migrations)
    stuck = [m for m in needs_down if not m.reversible]
    if stuck:
        names = ", ".join(f"{m.id} ({m.kind}; {m.irreversible_reason or 'no down script'})" for m in stuck)
        return Verdict(IRREVERSIBLE, f"the previous code needs the schema back, and {names} cannot be undone",
                       migrations)
    what = ", ".join(f"{m.id} ({m.kind})" for m in needs_down)
    drops = [d for m in migrations for d in m.down_drops]
    dropped = f"; the down scripts drop {_drops_text(drops)}" if drops else ""
    return Verdict(DOWN_NEEDED, f"the previous code needs the schema back: {what}{dropped}", migrations)


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """Several releases rolled back at once: the worst verdict, with every migration."""
    if not verdicts:
        return Verdict(CODE_ONLY, "no release to judge", [])
    combined = combine([m for v in verdicts for m in v.migrations])
    heaviest = max(verdicts, key=lambda v: _ORDER[v.kind])
    return combined if _ORDER[combined.kind] >= _ORDER[heaviest.kind] else heaviest


def down_loss(conn: psycopg.Connection[Any], drops: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """What running the down scripts would lose now: for each dropped table its rows, for each
    dropped column the rows holding a value other than its default. Only what holds data is listed."""
    lost = []
    for table, column in dict.fromkeys(drops):
        rows = _rows_holding_data(conn, table, column)
        if rows:
            lost.append({"table": table, "column": column, "rows": rows,
                         "what": f"{rows} rows of {table}" if column is None else
                         f"{rows} non-default values of {table}.{column}"})
    return lost


def with_loss(verdict: Verdict, lost: list[dict[str, Any]]) -> tuple[str, str]:
    """The verdict at rollback time: down-needed becomes down-loses-data when the down would lose data."""
    if verdict.kind == DOWN_NEEDED and lost:
        return DOWN_LOSES_DATA, f"{verdict.reason}; they would lose {', '.join(x['what'] for x in lost)}"
    return verdict.kind, verdict.reason


# --- helpers ----------------------------------------------------------------------------------------

_RANK = {EXPAND: 0, DATA: 1, UNKNOWN: 2, CONTRACT: 3}


def _statements(forward: Any, state_table: str) -> list[Statement]:
    if forward is None:
        return [Statement("", UNKNOWN, "its SQL could not be written")]
    found = _statements_of(forward.up, state_table)
    found += [Statement("", UNKNOWN, why) for why in forward.opaque]
    return found


def _statements_of(sql_text: str | None, state_table: str) -> list[Statement]:
    if not sql_text:
        return []
    from backout.verdict.classify import classify_sql  # pglast: only when there is SQL to judge

    # The tool's own bookkeeping (Alembic writes its version table into the offline SQL) is not the
    # app's schema, and what changes nothing (transaction control, SET) is not kept.
    return [s for s in classify_sql(sql_text)
            if s.kind != NONE and not (state_table and s.target == state_table)]


def _on_new_table(s: Statement) -> None:
    """A statement on a table this release creates: the previous code does not use that table, and
    it is empty while the release runs, so it neither breaks the old code nor blocks anyone."""
    if s.kind in (CONTRACT, DATA):
        s.reason = f"{s.reason} (on {s.target}, which this release creates)"
        s.kind = EXPAND
    s.dangers.clear()


def _check_size(conn: psycopg.Connection[Any], s: Statement, big_table_bytes: int) -> None:
    with conn.transaction():
        row = conn.execute("SELECT pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_class c"
                           " WHERE c.oid = to_regclass(%s)", [s.locks]).fetchone()
    if row is None or row[0] < big_table_bytes:
        return
    s.dangers.append(Danger(BIG_TABLE_LOCK, f"takes an ACCESS EXCLUSIVE lock on {s.locks}, "
                            f"{_mb(row[0])} (~{max(row[1], 0)} rows): every query of it waits while it runs"))


def _rows_holding_data(conn: psycopg.Connection[Any], table: str, column: str | None) -> int:
    target = pgsql.Identifier(*table.split("."))
    with conn.transaction():
        if not _scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [table]):
            return 0
        if column is None:
            return int(_scalar(conn, pgsql.SQL("SELECT count(*) FROM {}").format(target)))
        found = conn.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d"
            " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped", [table, column]
        ).fetchone()
        if found is None:
            return 0
        expression = found[0]
        from backout.verdict.classify import is_volatile_sql

        if expression is None or is_volatile_sql(expression):
            condition = pgsql.SQL("{} IS NOT NULL").format(pgsql.Identifier(column))
        else:
            condition = pgsql.SQL("{} IS DISTINCT FROM ({})").format(pgsql.Identifier(column), pgsql.SQL(expression))
        return int(_scalar(conn, pgsql.SQL("SELECT count(*) FROM {} WHERE {}").format(target, condition)))


def _scalar(conn: psycopg.Connection[Any], query: Any, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _count_text(n: int) -> str:
    return f"{n} migration" + ("" if n == 1 else "s")


def _drops_text(drops: Sequence[tuple[str, str | None]]) -> str:
    return ", ".join(f"table {t}" if c is None else f"column {t}.{c}" for t, c in dict.fromkeys(drops))


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"
