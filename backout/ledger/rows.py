"""Reading and updating ledger rows: plain JSON-friendly values, checked choices."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable

from psycopg import sql
from psycopg.types.json import Jsonb

from backout.ledger.records import LedgerConnection
from backout.ledger.schema import SCHEMA
from backout.redact import scrub

# Stored exactly as given: the plan and down scripts hold the app's own migration SQL, which a
# rollback runs later; every other text and JSON value has secrets masked on the way in.
VERBATIM = ("down_scripts", "plan", "params")


def update_row(
    conn: LedgerConnection, table: str, allowed: dict[str, str], row_id: str, fields: dict[str, Any],
    touch: str | None = None,
) -> dict[str, Any] | None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"cannot update {table} field(s) {', '.join(unknown)}")
    assignments = []
    values: list[Any] = []
    for name, value in fields.items():
        kind = allowed[name]
        if kind == "jsonb":
            value = jsonb(value, verbatim=name in VERBATIM)
        elif kind == "text" and isinstance(value, str):
            value = scrub(value)
        elif kind == "timestamptz" and isinstance(value, _dt.datetime) and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
        # Explicit casts let a string such as "now" or an ISO time reach the right type.
        assignments.append(sql.SQL("{} = %s::" + kind).format(sql.Identifier(name)))
        values.append(value)
    if touch:
        assignments.append(sql.SQL("{} = clock_timestamp()").format(sql.Identifier(touch)))
    if not assignments:
        return plain_or_none(
            conn.execute(sql.SQL("SELECT * FROM {}.{} WHERE id = %s").format(
                sql.Identifier(SCHEMA), sql.Identifier(table)), (row_id,)).fetchone()
        )
    query = sql.SQL("UPDATE {}.{} SET {} WHERE id = %s RETURNING *").format(
        sql.Identifier(SCHEMA), sql.Identifier(table), sql.SQL(", ").join(assignments)
    )
    return plain_or_none(conn.execute(query, [*values, row_id]).fetchone())


def plain_or_none(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return plain(row) if row else None


def plain(row: dict[str, Any] | None) -> dict[str, Any]:
    """The row with timestamps as ISO 8601 UTC strings and LSNs as text."""
    assert row is not None, "INSERT ... RETURNING and UPDATE ... RETURNING of a known id return a row"
    out = {}
    for key, value in row.items():
        if isinstance(value, _dt.datetime):
            value = value.astimezone(_dt.timezone.utc).isoformat()
        elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            value = str(value)
        out[key] = value
    return out


def jsonb(value: Any, verbatim: bool = False) -> Jsonb | None:
    """`value` for a jsonb column, secrets masked unless `verbatim`."""
    if value is None:
        return None
    return Jsonb(value if verbatim else scrub(value))


def check_choice(what: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")
