"""Classifying migration SQL, statement by statement, with PostgreSQL's own parser (pglast).

Every statement gets one class:

- `expand`: the previous release's code keeps working on the schema after it (a new table, a
  nullable column or one with a default, an index, a new enum value, a view);
- `contract`: the previous code can break on it (a dropped or renamed column or table, a type
  change, a NOT NULL or constraint its writes can violate);
- `data`: it changes rows (UPDATE, DELETE, INSERT, TRUNCATE, COPY, MERGE);
- `unknown`: what cannot be judged from the SQL (a function or DO body, a trigger, what does not
  parse), said as such;
- `none`: it changes neither schema nor rows (transaction control, SET, a plain SELECT).

and the deploy dangers migration linters warn of: a table rewrite, a lock that blocks writes for
the length of a scan or an index build, a NOT NULL without a default, a volatile default. Whether
an ACCESS EXCLUSIVE lock is on a *big* table needs the database: `Statement.locks` names the
table, and `backout.verdict.verdict` looks its size up.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, ObjectType

from backout.migrations import script
from backout.verdict.statement import (
    BLOCKING_INDEX, CONTRACT, DATA, EXPAND, NONE, NOT_NULL, REWRITE, UNKNOWN, VALIDATING, VOLATILE_DEFAULT, Danger,
    Statement,
)

# Functions whose value changes per row, so a default calling them is computed for every
# existing row: the table is rewritten (PostgreSQL 11+ stores a stable default without one).
VOLATILE_FUNCTIONS = frozenset({
    "random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4",
    "uuidv7", "clock_timestamp", "timeofday", "nextval", "txid_current", "setseed",
})
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
_SHOWN = 200  # characters of a statement kept in findings


def classify_sql(sql: str) -> list[Statement]:
    """Every statement of `sql`, classified; one `unknown` finding when it does not parse."""
    try:
        parsed = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        # Judge what parses, statement by statement, and name what does not.
        return [found for part in script.statements(sql) for found in _classify_alone(part.text)]
    raw = sql.encode()
    found = []
    for item in parsed:
        start = item.stmt_location or 0
        end = start + item.stmt_len if item.stmt_len else len(raw)
        text = raw[start:end].decode(errors="replace")
        found.append(classify(item.stmt, text))
    return found


def _classify_alone(text: str) -> list[Statement]:
    try:
        parsed = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        return [Statement(_shown(text), UNKNOWN, f"cannot be parsed as PostgreSQL SQL: {exc}")]
    return [classify(item.stmt, text) for item in parsed]


def classify(node: Any, text: str = "") -> Statement:
    """One parsed statement."""
    judge = _JUDGES.get(type(node).__name__)
    if judge is None:
        return Statement(_shown(text), UNKNOWN, f"{_statement_name(node)} is not a statement backout knows how to "
                                                "judge", target=_target(node))
    try:
        kind, reason, extra = judge(node)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        # A form of the statement the judge does not expect: say so rather than fail the release.
        kind, reason, extra = UNKNOWN, f"backout could not judge this {_statement_name(node)} ({exc!r})", {}
    return Statement(_shown(text), kind, reason, target=_target(node), **extra)


# --- judges: (class, reason, extra fields of Statement) -------------------------------------------
# Nodes are typed Any: pglast types every AST field optional, and each judge reads the fields the
# parser always sets for its kind of statement.

Judged = tuple[str, str, dict[str, Any]]


def _create_table(node: Any) -> Judged:
    name = _rel(node.relation)
    if node.partbound is not None:
        parent = _rel(node.inhRelations[0]) if node.inhRelations else "its parent"
        return EXPAND, f"creates partition {name} of {parent}", {"creates": [name], "locks": parent}
    partitioned = " (partitioned)" if node.partspec is not None else ""
    return EXPAND, f"creates table {name}{partitioned}", {"creates": [name]}


def _create_table_as(node: Any) -> Judged:
    name = _rel(node.into.rel)
    what = "materialized view" if node.objtype == ObjectType.OBJECT_MATVIEW else "table"
    return EXPAND, f"creates {what} {name} from a query", {"creates": [name]}


def _created(what: str, replace: bool, replaced: Judged) -> Judged:
    """A `CREATE` of `what` adds to the schema; with `OR REPLACE` it is judged as `replaced` says."""
    return replaced if replace else (EXPAND, f"creates {what}", {})


def _view(node: Any) -> Judged:
    name = _rel(node.view)
    return _created(f"view {name}", node.replace,
                    (EXPAND, f"creates or replaces view {name} (a replacement can only add columns)", {}))


def _index(node: Any) -> Judged:
    table = _rel(node.relation)
    what = "unique index" if node.unique else "index"
    name = f" {node.idxname}" if node.idxname else ""
    dangers = []
    if not node.concurrent:
        dangers.append(Danger(BLOCKING_INDEX, f"CREATE {what.upper()} on {table} without CONCURRENTLY blocks "
                                              "its writes for the whole build (SHARE lock)"))
    if node.unique:
        return CONTRACT, f"creates {what}{name} on {table}: the previous code's writes can violate it", {
            "dangers": dangers}
    return EXPAND, f"creates {what}{name} on {table}", {"dangers": dangers}


def _alter_table(node: Any) -> Judged:
    table = _rel(node.relation)
    if node.objtype not in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_FOREIGN_TABLE):
        kind = _object_name(node.objtype)
        return EXPAND, f"alters {kind} {table}", {}
    judged = [_alter_cmd(table, cmd) for cmd in node.cmds]
    worst = max(judged, key=lambda j: _RANK[j[0]])
    dangers = [d for j in judged for d in j[2]]
    drops = [(table, j[3]) for j in judged if j[3] is not None]
    reason = "; ".join(j[1] for j in judged)
    locks = table if any(j[4] for j in judged) else None
    return worst[0], reason, {"dangers": dangers, "drops": drops, "locks": locks}


# (class, reason, dangers, dropped column or None, takes ACCESS EXCLUSIVE)
CmdJudged = tuple[str, str, list[Danger], str | None, bool]


def _alter_cmd(table: str, cmd: Any) -> CmdJudged:
    sub = cmd.subtype
    col = cmd.name
    if sub == AT.AT_AddColumn:
        return _add_column(table, cmd.def_)
    if sub == AT.AT_DropColumn:
        return CONTRACT, f"drops column {table}.{col}", [], col, True
    if sub == AT.AT_AlterColumnType:
        return CONTRACT, f"changes the type of {table}.{col}", [Danger(
            REWRITE, f"changing the type of {table}.{col} rewrites the table and its indexes under an ACCESS "
                     "EXCLUSIVE lock (unless the types are binary-compatible)")], None, True
    if sub == AT.AT_SetNotNull:
        return CONTRACT, f"makes {table}.{col} NOT NULL: the previous code's writes can violate it", [Danger(
            NOT_NULL, f"SET NOT NULL on {table}.{col} scans the whole table under an ACCESS EXCLUSIVE lock "
                      "(add a CHECK (... IS NOT NULL) NOT VALID constraint and validate it first)")], None, True
    if sub == AT.AT_DropNotNull:
        return EXPAND, f"lets {table}.{col} be NULL", [], None, True
    if sub == AT.AT_ColumnDefault:
        if cmd.def_ is None:
            return CONTRACT, f"drops the default of {table}.{col}: the previous code's inserts may rely on it", \
                [], None, True
        return EXPAND, f"sets the default of {table}.{col}", [], None, True
    if sub == AT.AT_AddConstraint:
        return _add_constraint(table, cmd.def_)
    if sub == AT.AT_ValidateConstraint:
        return EXPAND, f"validates constraint {cmd.name} on {table}", [], None, False
    if sub == AT.AT_DropConstraint:
        return EXPAND, f"drops constraint {cmd.name} on {table}", [], None, True
    if sub == AT.AT_AttachPartition:
        return EXPAND, f"attaches partition {_rel(cmd.def_.name)} to {table}", [], None, False
    if sub in (AT.AT_DetachPartition, AT.AT_DetachPartitionFinalize):
        return CONTRACT, f"detaches partition {_rel(cmd.def_.name)} from {table}: its rows leave the table", \
            [], None, False
    if sub in (AT.AT_SetTableSpace, AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetAccessMethod):
        return EXPAND, f"changes how {table} is stored", [Danger(
            REWRITE, f"{_cmd_name(sub)} rewrites {table} under an ACCESS EXCLUSIVE lock")], None, True
    if sub in (AT.AT_EnableRowSecurity, AT.AT_ForceRowSecurity):
        return CONTRACT, f"enables row security on {table}: the previous code may no longer see its rows", \
            [], None, True
    if sub in (AT.AT_AddIdentity, AT.AT_SetIdentity, AT.AT_DropIdentity, AT.AT_SetStatistics,
               AT.AT_SetStorage, AT.AT_SetCompression, AT.AT_SetOptions, AT.AT_ResetOptions,
               AT.AT_SetRelOptions, AT.AT_ResetRelOptions, AT.AT_ReplaceRelOptions, AT.AT_ChangeOwner,
               AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_ReplicaIdentity, AT.AT_DisableRowSecurity,
               AT.AT_NoForceRowSecurity, AT.AT_EnableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig,
               AT.AT_EnableTrigAll, AT.AT_EnableTrigUser, AT.AT_DisableTrig, AT.AT_DisableTrigAll,
               AT.AT_DisableTrigUser, AT.AT_AddInherit, AT.AT_DropInherit, AT.AT_AlterConstraint):
        return EXPAND, f"{_cmd_name(sub)} on {table}", [], None, False
    return UNKNOWN, f"{_cmd_name(sub)} on {table} is not a change backout knows how to judge", [], None, True


def _add_column(table: str, column: Any) -> CmdJudged:
    name = f"{table}.{column.colname}"
    type_name = _type_name(column.typeName)
    constraints = list(column.constraints or ())
    kinds = {c.contype for c in constraints}
    default = next((c.raw_expr for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
    dangers: list[Danger] = []
    generated = ConstrType.CONSTR_GENERATED in kinds
    identity = ConstrType.CONSTR_IDENTITY in kinds or type_name in _SERIAL_TYPES
    if generated:
        dangers.append(Danger(REWRITE, f"adding the stored generated column {name} computes it for every row: "
                                       "the table is rewritten under an ACCESS EXCLUSIVE lock"))
    elif identity:
        dangers.append(Danger(REWRITE, f"adding {name} as {type_name if type_name in _SERIAL_TYPES else 'an identity'}"
                                       " fills it from a sequence for every row: the table is rewritten under an "
                                       "ACCESS EXCLUSIVE lock"))
    elif default is not None and _volatile(default):
        dangers.append(Danger(VOLATILE_DEFAULT, f"the default of {name} is volatile ({_function_names(default)}): "
                                                "every row gets its own value, so the table is rewritten under an "
                                                "ACCESS EXCLUSIVE lock"))
    filled = default is not None or generated or identity
    if ConstrType.CONSTR_CHECK in kinds and filled:
        return CONTRACT, f"adds {name} with a CHECK constraint: the previous code's writes can violate it", \
            dangers, None, True
    if ConstrType.CONSTR_NOTNULL in kinds or ConstrType.CONSTR_PRIMARY in kinds:
        if not filled:
            dangers.append(Danger(NOT_NULL, f"{name} is added NOT NULL without a default: it fails on a table "
                                            "that has rows"))
            return CONTRACT, f"adds {name} NOT NULL without a default: the previous code's inserts omit it", \
                dangers, None, True
        return EXPAND, f"adds {name} NOT NULL with a default", dangers, None, True
    return EXPAND, f"adds {name}" + (" with a default" if default is not None else " (nullable)"), dangers, None, True


def _add_constraint(table: str, constraint: Any) -> CmdJudged:
    kind = _CONSTRAINT_NAMES.get(constraint.contype, "a constraint")
    name = f" {constraint.conname}" if constraint.conname else ""
    dangers: list[Danger] = []
    if constraint.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN) and not constraint.skip_validation:
        dangers.append(Danger(VALIDATING, f"adding {kind}{name} to {table} checks every row while holding a lock "
                                          "that blocks writes (add it NOT VALID, then VALIDATE CONSTRAINT)"))
    if constraint.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION) \
            and not constraint.indexname:
        dangers.append(Danger(BLOCKING_INDEX, f"adding {kind}{name} to {table} builds its index under an ACCESS "
                                              "EXCLUSIVE lock (build it CONCURRENTLY first, then add it USING INDEX)"))
    return CONTRACT, f"adds {kind}{name} to {table}: the previous code's writes can violate it", dangers, None, True


def _rename(node: Any) -> Judged:
    what = node.renameType
    if what == ObjectType.OBJECT_COLUMN:
        table = _rel(node.relation)
        return CONTRACT, f"renames column {table}.{node.subname} to {node.newname}", {"locks": table}
    if what in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW,
                ObjectType.OBJECT_FOREIGN_TABLE):
        table = _rel(node.relation)
        return CONTRACT, f"renames {_object_name(what)} {table} to {node.newname}", {"locks": table}
    if what in (ObjectType.OBJECT_INDEX, ObjectType.OBJECT_TABCONSTRAINT, ObjectType.OBJECT_TRIGGER,
                ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_POLICY, ObjectType.OBJECT_RULE):
        return EXPAND, f"renames a {_object_name(what)} to {node.newname} (the code does not name it)", {}
    return CONTRACT, f"renames a {_object_name(what)} to {node.newname}", {}


def _drop(node: Any) -> Judged:
    what = node.removeType
    names = [_dotted(o) for o in node.objects]
    listed = ", ".join(names)
    if what == ObjectType.OBJECT_INDEX:
        dangers = [] if node.concurrent else [Danger(
            BLOCKING_INDEX, f"DROP INDEX {listed} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table")]
        return EXPAND, f"drops index {listed}", {"dangers": dangers}
    if what in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_FOREIGN_TABLE):
        return CONTRACT, f"drops table {listed}", {"drops": [(n, None) for n in names]}
    if what in (ObjectType.OBJECT_TRIGGER, ObjectType.OBJECT_POLICY, ObjectType.OBJECT_RULE,
                ObjectType.OBJECT_STATISTIC_EXT):
        return EXPAND, f"drops {_object_name(what)} {listed}", {}
    return CONTRACT, f"drops {_object_name(what)} {listed}", {}


def _alter_enum(node: Any) -> Judged:
    name = _dotted(node.typeName)
    if node.oldVal:
        return CONTRACT, f"renames value {node.oldVal!r} of enum {name} to {node.newVal!r}", {}
    return EXPAND, f"adds value {node.newVal!r} to enum {name}", {}


def _function(node: Any) -> Judged:
    name = _dotted(node.funcname)
    what = "procedure" if node.is_procedure else "function"
    return _created(f"{what} {name}", node.replace,
                    (UNKNOWN, f"creates or replaces {what} {name}: whether the previous code still works with its "
                              "body cannot be read from the SQL", {}))


def _trigger(node: Any) -> Judged:
    return UNKNOWN, f"creates trigger {node.trigname} on {_rel(node.relation)}: it runs code on the previous " \
                    "code's writes, which cannot be judged from the SQL", {}


def _do(node: Any) -> Judged:
    return UNKNOWN, "a DO block runs procedural code, which cannot be judged from the SQL", {}


def _call(node: Any) -> Judged:
    return UNKNOWN, f"calls procedure {_dotted(node.funccall.funcname)}, which cannot be judged from the SQL", {}


def _dml(verb: str) -> Any:
    def judge(node: Any) -> Judged:
        relation = getattr(node, "relation", None)
        target = f" {_rel(relation)}" if relation is not None else ""
        source = " from a query" if isinstance(node, ast.InsertStmt) and node.selectStmt is not None and \
            getattr(node.selectStmt, "valuesLists", None) is None else ""
        return DATA, f"{verb} rows of{target}{source}", {}
    return judge


def _truncate(node: Any) -> Judged:
    return DATA, f"empties {', '.join(_rel(r) for r in node.relations)}", {}


def _select(node: Any) -> Judged:
    if node.intoClause is not None:
        return EXPAND, f"creates table {_rel(node.intoClause.rel)} from a query", {}
    calls = sorted({_dotted(n.funcname) for n in _walk(node) if isinstance(n, ast.FuncCall)})
    if calls:
        return UNKNOWN, f"a SELECT that calls {', '.join(calls)}, whose effects cannot be read from the SQL", {}
    return NONE, "reads only", {}


def _plain(kind: str, reason: str) -> Any:
    return lambda node: (kind, reason, {})


def _named(kind: str, verb: str, attribute: str) -> Any:
    def judge(node: Any) -> Judged:
        value = getattr(node, attribute)
        name = _rel(value) if isinstance(value, ast.RangeVar) else _dotted(value) if isinstance(value, tuple) \
            else str(value)
        return kind, f"{verb} {name}", {}
    return judge


_JUDGES: dict[str, Any] = {
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "ViewStmt": _view,
    "IndexStmt": _index,
    "AlterTableStmt": _alter_table,
    "RenameStmt": _rename,
    "DropStmt": _drop,
    "AlterEnumStmt": _alter_enum,
    "CreateFunctionStmt": _function,
    "CreateTrigStmt": _trigger,
    "DoStmt": _do,
    "CallStmt": _call,
    "InsertStmt": _dml("inserts"),
    "UpdateStmt": _dml("updates"),
    "DeleteStmt": _dml("deletes"),
    "MergeStmt": _dml("merges into"),
    "CopyStmt": _named(DATA, "copies rows of", "relation"),
    "TruncateStmt": _truncate,
    "SelectStmt": _select,
    "CreateEnumStmt": _named(EXPAND, "creates enum type", "typeName"),
    "CompositeTypeStmt": _named(EXPAND, "creates composite type", "typevar"),
    "CreateDomainStmt": _named(EXPAND, "creates domain", "domainname"),
    "CreateSeqStmt": _named(EXPAND, "creates sequence", "sequence"),
    "AlterSeqStmt": _named(EXPAND, "alters sequence", "sequence"),
    "CreateSchemaStmt": _named(EXPAND, "creates schema", "schemaname"),
    "CreateExtensionStmt": _named(EXPAND, "creates extension", "extname"),
    "CommentStmt": _plain(EXPAND, "sets a comment"),
    "GrantStmt": lambda node: (EXPAND if node.is_grant else CONTRACT,
                               "grants privileges" if node.is_grant else
                               "revokes privileges the previous code may use", {}),
    "CreatePolicyStmt": _named(CONTRACT, "creates a row-security policy that can hide rows from the previous "
                                         "code:", "policy_name"),
    "CreateStatsStmt": _plain(EXPAND, "creates extended statistics"),
    "RefreshMatViewStmt": _named(EXPAND, "refreshes materialized view", "relation"),
    "AlterDomainStmt": _plain(CONTRACT, "alters a domain: its new constraints can reject the previous code's writes"),
    "DefineStmt": _plain(EXPAND, "creates an aggregate, operator, collation or text search object"),
    "CreateCastStmt": _plain(EXPAND, "creates a cast"),
    "CreateConversionStmt": _plain(EXPAND, "creates a conversion"),
    "CreateForeignTableStmt": _plain(EXPAND, "creates a foreign table"),
    "CreatePublicationStmt": _plain(EXPAND, "creates a publication"),
    "CreateRoleStmt": _plain(EXPAND, "creates a role"),
    "GrantRoleStmt": lambda node: (EXPAND if node.is_grant else CONTRACT,
                                   "grants a role" if node.is_grant else "revokes a role the previous code may use", {}),
    "AlterDefaultPrivilegesStmt": _plain(EXPAND, "changes default privileges of objects made later"),
    "AlterOwnerStmt": _plain(EXPAND, "changes an owner"),
    "SecLabelStmt": _plain(EXPAND, "sets a security label"),
    "ClusterStmt": lambda node: (EXPAND, "reorders a table by an index (CLUSTER)", {"dangers": [Danger(
        REWRITE, f"CLUSTER rewrites {_rel(node.relation) if node.relation else 'each clustered table'} under an "
                 "ACCESS EXCLUSIVE lock")]}),
    "ReindexStmt": _plain(NONE, "rebuilds indexes"),
    "VacuumStmt": _plain(NONE, "maintenance (VACUUM/ANALYZE)"),
    "ExplainStmt": _plain(NONE, "explains a query"),
    "PrepareStmt": _plain(NONE, "prepares a statement"),
    "DeallocateStmt": _plain(NONE, "deallocates a prepared statement"),
    "DiscardStmt": _plain(NONE, "discards session state"),
    "ListenStmt": _plain(NONE, "listens for notifications"),
    "UnlistenStmt": _plain(NONE, "stops listening for notifications"),
    "CheckPointStmt": _plain(NONE, "forces a checkpoint"),
    "TransactionStmt": _plain(NONE, "transaction control"),
    "ConstraintsSetStmt": _plain(NONE, "transaction control"),
    "VariableSetStmt": _plain(NONE, "sets a session setting"),
    "VariableShowStmt": _plain(NONE, "shows a setting"),
    "LockStmt": _plain(NONE, "takes a lock"),
    "NotifyStmt": _plain(NONE, "sends a notification"),
}

_RANK = {NONE: 0, EXPAND: 1, DATA: 2, UNKNOWN: 3, CONTRACT: 4}

_CONSTRAINT_NAMES = {
    ConstrType.CONSTR_CHECK: "CHECK constraint",
    ConstrType.CONSTR_FOREIGN: "foreign key",
    ConstrType.CONSTR_UNIQUE: "UNIQUE constraint",
    ConstrType.CONSTR_PRIMARY: "primary key",
    ConstrType.CONSTR_EXCLUSION: "exclusion constraint",
    ConstrType.CONSTR_NOTNULL: "NOT NULL constraint",
}


# --- helpers ----------------------------------------------------------------------------------------


def _rel(rv: Any) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def _dotted(value: Any) -> str:
    """A qualified name from a tuple of String nodes (or a TypeName, or a list of them)."""
    if isinstance(value, ast.TypeName):
        return _dotted(value.names)
    if isinstance(value, ast.ObjectWithArgs):
        return _dotted(value.objname)
    if isinstance(value, ast.String):
        return str(value.sval)
    if isinstance(value, (tuple, list)):
        parts = [_dotted(v) for v in value]
        return ".".join(p for p in parts if p)
    return str(value)


def _type_name(type_name: Any) -> str:
    if type_name is None:
        return ""
    names = [n.sval for n in type_name.names]
    return names[-1] if names else ""


def _walk(node: Any) -> list[ast.Node]:
    found: list[ast.Node] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            found.append(item)
            stack.extend(getattr(item, name) for name in item)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
    return found


def _target(node: Any) -> str | None:
    for attribute in ("relation", "view", "sequence"):
        value = getattr(node, attribute, None)
        if isinstance(value, ast.RangeVar):
            return _rel(value)
    return None


def is_volatile_sql(expression: str) -> bool:
    """Whether an SQL expression (a column default as PostgreSQL prints it) calls a volatile function."""
    try:
        parsed = pglast.parse_sql(f"SELECT {expression}")
    except pglast.parser.ParseError:
        return True
    return _volatile(parsed[0].stmt)


def _volatile(expression: Any) -> bool:
    return any(_called(n).lower() in VOLATILE_FUNCTIONS for n in _walk(expression) if isinstance(n, ast.FuncCall))


def _function_names(expression: Any) -> str:
    return ", ".join(sorted({f"{_called(n)}()" for n in _walk(expression) if isinstance(n, ast.FuncCall)}))


def _called(call: ast.FuncCall) -> str:
    """The function's own name, without its schema."""
    return str(call.funcname[-1].sval) if call.funcname else ""


def _object_name(kind: Any) -> str:
    return kind.name.removeprefix("OBJECT_").lower().replace("_", " ").replace("matview", "materialized view") \
        .replace("tabconstraint", "constraint")


def _cmd_name(sub: Any) -> str:
    return sub.name.removeprefix("AT_")


def _statement_name(node: Any) -> str:
    return type(node).__name__.removesuffix("Stmt")


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[:_SHOWN - 1] + "…"
