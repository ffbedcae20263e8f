"""`backout check`'s library half: the verdict and the deploy dangers of the migrations pending
against a database, and whether they break BACKOUT_REQUIRE. For CI, before a deploy.

    report = check(settings)              # DATABASE_URL, BACKOUT_MIGRATIONS(_PATH), BACKOUT_REQUIRE
    report.verdict.kind, report.violation, report.to_json()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backout.checkpoint import database_connection
from backout.migrations import get_adapter
from backout.redact import mask_url
from backout.settings import Settings
from backout.verdict.policy import violation
from backout.verdict.verdict import Verdict, judge


@dataclass
class CheckReport:
    tool: str
    database: str  # password masked
    applied: list[str]
    pending: list[str]
    verdict: Verdict
    require: str | None
    violation: str | None

    def to_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "database": self.database, "applied": self.applied, "pending": self.pending,
                "require": self.require, "violation": self.violation, "ok": self.violation is None,
                **self.verdict.to_json()}


def check(settings: Settings, require: str | None = None) -> CheckReport:
    """Judge the migrations pending against settings.database_url; `require` overrides BACKOUT_REQUIRE."""
    settings.require("DATABASE_URL")
    url = settings.database_url or ""
    policy = require if require is not None else settings.require_policy
    adapter = get_adapter(settings.migrations, settings.migrations_path)
    with database_connection(url) as conn:
        applied = adapter.applied(conn)
        pending = adapter.pending(conn)
        verdict = judge(adapter, conn, pending)
    return CheckReport(tool=adapter.tool, database=mask_url(url), applied=applied, pending=[m.id for m in pending],
                       verdict=verdict, require=policy, violation=violation(verdict, policy))
