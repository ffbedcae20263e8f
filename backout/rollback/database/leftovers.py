"""What a restore must take away: the objects in the app's schemas that the checkpoint's archive
does not hold (tables, views, sequences, types, functions, schemas made since the checkpoint).

`pg_restore --clean` drops only what the archive holds (the Heroku Data API restore runs it, and
so does an in-place restore), so a table a later migration created would outlive the restore
while the migrations' state table, restored with the rest, says it was never made. A restored
database equals the checkpoint: what stood beside it is kept only in the safety checkpoint.

Left alone: the ledger's schema, the system schemas, the copies a schema swap keeps
(`<schema>_before_<checkpoint>`), extensions and their members, and objects that go with a table
(its indexes, constraints, triggers, owned sequences), which the archive's tables bring back.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from backout.backups.archive import Archive
from backout.rollback.database import pgtools
from backout.rollback.database.swap import LEDGER_SCHEMA, SYSTEM_SCHEMAS
_KEPT_COPY = re.compile(r"_before_cp_[0-9a-z]{26}(_[0-9]+)?$")  # swap._name and swap._unused
_RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
                   "f": "FOREIGN TABLE"}

# Objects of the app's schemas that are not part of an extension, with the kind of archive entry
# that would hold them. Sequences owned by a column go with their table; row types of tables,
# array types and range-made multiranges go with what made them.
_LIVE = """
WITH app_schemas AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname <> ALL(%(skip)s) AND nspname NOT LIKE 'pg\\_%%'
), members AS (
    SELECT objid FROM pg_depend WHERE deptype = 'e'
)
SELECT 'SCHEMA', s.nspname, s.nspname, NULL::text FROM app_schemas s
 WHERE s.oid NOT IN (SELECT objid FROM members)
UNION ALL
SELECT 'rel:' || c.relkind::text, s.nspname, c.relname, NULL
  FROM pg_class c JOIN app_schemas s ON s.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.oid NOT IN (SELECT objid FROM members)
   AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
            AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
   AND NOT c.relispartition
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, s.nspname, t.typname, NULL
  FROM pg_type t JOIN app_schemas s ON s.oid = t.typnamespace
 WHERE t.oid NOT IN (SELECT objid FROM members)
   AND (t.typtype IN ('e', 'd', 'r')
        OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       s.nspname, p.proname, oidvectortypes(p.proargtypes)
  FROM pg_proc p JOIN app_schemas s ON s.oid = p.pronamespace
 WHERE p.oid NOT IN (SELECT objid FROM members) AND p.prokind IN ('f', 'p', 'a')
"""


def leftovers(conn: psycopg.Connection[Any], archive: Archive) -> list[tuple[str, str, str, str | None]]:
    """(kind, schema, name, arguments) of each object in the database that the archive lacks."""
    held = {(e.desc, e.namespace or "", e.tag) for e in archive.entries}
    schemas = {e.tag for e in archive.entries if e.desc == "SCHEMA"} | archive.schemas() | {"public"}
    found: list[tuple[str, str, str, str | None]] = []
    with conn.transaction():
        # Argument types spelled as pg_dump tags them: schema-qualified (pg_dump runs with an empty search_path).
        conn.execute("SET LOCAL search_path = ''")
        rows = conn.execute(_LIVE, {"skip": [LEDGER_SCHEMA, *SYSTEM_SCHEMAS]}).fetchall()
    for kind, schema, name, arguments in rows:
        if _KEPT_COPY.search(schema):
            continue
        if kind == "SCHEMA":
            if schema not in schemas:
                found.append(("SCHEMA", schema, schema, None))
            continue
        if schema not in schemas:
            continue  # goes with its schema
        if kind.startswith("rel:"):
            kind = _RELATION_KINDS[kind[4:]]
        held_kinds = {"FUNCTION", "AGGREGATE", "PROCEDURE"} if kind == "FUNCTION" else {kind}
        tag = f"{name}({arguments})" if arguments is not None else name
        if not any((k, schema, tag) in held for k in held_kinds):
            found.append((kind, schema, name, arguments))
    return found


def drop_statements(found: list[tuple[str, str, str, str | None]]) -> list[sql.Composed]:
    """DROP ... IF EXISTS ... CASCADE for each leftover: schemas first (their contents go with
    them), then relations, routines and types."""
    order = ["SCHEMA", "MATERIALIZED VIEW", "VIEW", "FOREIGN TABLE", "TABLE", "SEQUENCE",
             "PROCEDURE", "AGGREGATE", "FUNCTION", "DOMAIN", "TYPE"]
    statements = []
    for kind, schema, name, arguments in sorted(found, key=lambda f: (order.index(f[0]), f[1], f[2])):
        target: sql.Composable
        if kind == "SCHEMA":
            target = sql.Identifier(schema)
        elif arguments is not None:
            target = sql.SQL("{}({})").format(sql.Identifier(schema, name), sql.SQL(arguments))
        else:
            target = sql.Identifier(schema, name)
        statements.append(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(sql.SQL(kind), target))
    return statements


def drop_leftovers(url: str, archive: Archive) -> list[str]:
    """Drop what the archive lacks, in one transaction; the objects dropped, as `kind schema.name`."""
    with pgtools.connect(url, "the app's database") as conn, conn.transaction():
        found = leftovers(conn, archive)
        for statement in drop_statements(found):
            conn.execute(statement)
    return [f"{kind.lower()} {schema}.{name}" if kind != "SCHEMA" else f"schema {schema}"
            for kind, schema, name, _ in found]

