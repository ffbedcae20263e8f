"""What a classified migration statement is: its class, why, and the deploy dangers it carries.

Kept apart from the classifier (`backout.verdict.classify`), which needs PostgreSQL's parser: a
release phase with nothing pending, and every reader of a recorded verdict, never import pglast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXPAND, CONTRACT, DATA, UNKNOWN, NONE = "expand", "contract", "data", "unknown", "none"
CLASSES = (EXPAND, CONTRACT, DATA, UNKNOWN)

# Danger kinds.
REWRITE = "table-rewrite"
BLOCKING_INDEX = "index-without-concurrently"
NOT_NULL = "not-null-without-default"
VOLATILE_DEFAULT = "volatile-default"
VALIDATING = "validates-under-lock"
BIG_TABLE_LOCK = "access-exclusive-on-big-table"


@dataclass(frozen=True)
class Danger:
    kind: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass
class Statement:
    """One statement of a migration, judged."""

    sql: str
    kind: str  # one of CLASSES or NONE
    reason: str
    dangers: list[Danger] = field(default_factory=list)
    # The table the statement works on, when it names one.
    target: str | None = None
    # The existing table the statement takes an ACCESS EXCLUSIVE lock on, for the size check.
    locks: str | None = None
    # Tables the statement creates, and (table, column or None) it drops: a down script that
    # drops what holds data loses it.
    creates: list[str] = field(default_factory=list)
    drops: list[tuple[str, str | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sql": self.sql, "class": self.kind, "reason": self.reason,
                "dangers": [d.to_json() for d in self.dangers], "target": self.target, "locks": self.locks,
                "creates": self.creates, "drops": [list(d) for d in self.drops]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Statement:
        return cls(sql=d["sql"], kind=d["class"], reason=d["reason"],
                   dangers=[Danger(x["kind"], x["message"]) for x in d.get("dangers") or []],
                   target=d.get("target"), locks=d.get("locks"), creates=list(d.get("creates") or []),
                   drops=[(t, c) for t, c in d.get("drops") or []])
