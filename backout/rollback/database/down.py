"""Down migrations back to a checkpoint: which saved down scripts, in what order, checked against
the database before anything runs, then run through the tool's adapter.

The scripts come from the deploy checkpoints taken since the restore point (each saved the down
scripts of the migrations its release was about to apply, because that release's code may be
gone by now), the restore point's own included when it is a deploy checkpoint: its release's
migrations ran after it was taken. A migration saved by several checkpoints (a release deployed
again after a rollback) is undone once, from the newest copy. The adapter orders them by their
dependencies, runs them newest first, each in a transaction where the tool's migration was
transactional, and leaves the tool's state table as the tool would. Afterwards the tool's state
must be the one the restore point recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import psycopg

from backout import ledger
from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, SavedMigration, get_adapter
from backout.migrations.base import oldest_first

Progress = Callable[[str], None]

# Tools whose state lists every applied migration, so a checkpoint's migrations_after tells which
# of its saved migrations its release really applied. (Alembic records heads, golang-migrate one
# version: for them every saved migration of a complete deploy counts as applied.)
LISTS_EVERY_APPLIED = ("prisma", "django", "dbmate")


@dataclass
class DownPlan:
    tool: str
    migrations: list[SavedMigration]  # in the order they will be undone (newest first)
    sources: dict[str, str]  # migration id -> the checkpoint whose saved copy is used
    checkpoints: list[str]  # the checkpoints the scripts come from, newest first
    target_state: list[str] | None  # the tool's state the restore point recorded

    def problems_without_database(self) -> list[str]:
        return [f"{m.id} ({m.name}) is irreversible: {m.irreversible_reason or 'it has no down script'}"
                for m in self.migrations if not m.reversible or m.down is None]

    def to_json(self) -> dict:
        return {
            "tool": self.tool,
            "migrations": [{"id": m.id, "name": m.name, "checkpoint_id": self.sources[m.id],
                            "transactional": m.transactional} for m in self.migrations],
            "checkpoints": self.checkpoints,
            "target_state": self.target_state,
        }


def saved_plan(ledger_conn: psycopg.Connection, restore_point: dict) -> DownPlan:
    """The down plan from the ledger alone; PlanRefused when the checkpoints mix tools."""
    app = restore_point["app"]
    since = [cp for cp in ledger.list_checkpoints(ledger_conn, app)
             if cp["status"] == "complete" and (cp["created_at"], cp["id"]) >= (restore_point["created_at"], restore_point["id"])
             and (cp["kind"] == "deploy")]
    tools = sorted({cp["migration_tool"] for cp in since} | {restore_point["migration_tool"]})
    if len(tools) > 1:
        raise PlanRefused(f"the checkpoints since {restore_point['id']} were taken with different migration tools "
                          f"({', '.join(tools)}); undo them by hand or restore a backup with --db restore")
    chosen: dict[str, SavedMigration] = {}
    sources: dict[str, str] = {}
    for cp in since:  # newest first: the newest copy of a migration wins
        applied = set(cp.get("migrations_after") or [])
        for record in cp.get("down_scripts") or []:
            m = SavedMigration.from_json(record)
            if m.id in chosen:
                continue
            if cp["migration_tool"] in LISTS_EVERY_APPLIED and cp.get("migrations_after") is not None and m.id not in applied:
                continue  # saved as pending, never applied by that release
            chosen[m.id] = m
            sources[m.id] = cp["id"]
    order = list(reversed(oldest_first(list(chosen.values()))))
    return DownPlan(tool=tools[0], migrations=order, sources=sources, checkpoints=[cp["id"] for cp in since],
                    target_state=restore_point.get("migrations_before"))


def check(conn: psycopg.Connection, plan: DownPlan) -> list[str]:
    """What the database says against the plan: [] when it can run."""
    adapter = get_adapter(plan.tool)
    if plan.migrations:
        return adapter.check_down_plan(conn, plan.migrations)
    if plan.target_state is not None and sorted(adapter.applied(conn)) != sorted(plan.target_state):
        return [f"the {plan.tool} state is {adapter.applied(conn)}, the checkpoint recorded {plan.target_state}, "
                "and no saved down scripts lead there (migrated by hand since?)"]
    return []


def run(conn: psycopg.Connection, plan: DownPlan, progress: Progress) -> dict:
    """Undo the plan's migrations and check the tool's state after. A failing script raises
    DownMigrationError (its own transaction rolled back, the steps before it recorded as run)."""
    adapter = get_adapter(plan.tool)
    problems = check(conn, plan)
    if problems:
        raise PlanRefused("cannot run the down migrations: " + "; ".join(problems))
    ran = adapter.run_down(conn, plan.migrations, progress) if plan.migrations else []
    state = adapter.applied(conn)
    if plan.target_state is not None and sorted(state) != sorted(plan.target_state):
        raise BackoutError(f"after the down migrations the {plan.tool} state is {state}, but the checkpoint "
                           f"recorded {plan.target_state}")
    return {"undone": ran, "state": state}


__all__ = ["DownMigrationError", "DownPlan", "check", "run", "saved_plan"]
