"""Down migrations back to a checkpoint: which saved down scripts, in what order, checked against
the database before anything runs, then run through the tool's adapter.

A plan starts from the live state: what the tool's state table says is applied now, and every
down script saved in any checkpoint of the app (each deploy checkpoint saved the down scripts of
the migrations its release was about to apply, because that release's code may be gone by now;
the newest copy of a migration wins). The adapter walks from the applied state down to the state
the restore point recorded (`down_path`), so a restore, a rollback made by hand or a redeploy in
between changes nothing: only what is applied now counts. Where no path of saved scripts reaches
the target, the refusal names the migrations without one and the way out (a restore). The adapter
orders them by their dependencies, runs them newest first, each in a transaction where the
tool's migration was transactional, and leaves the tool's state table as the tool would.
Afterwards the tool's state must be the one the restore point recorded.

`saved_plan` is the plan from the ledger alone (the chain the checkpoints since the restore point
recorded), for a plan made where the app's database cannot be reached; the worker, which can,
plans again from the live state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg

from backout import ledger
from backout.errors import BackoutError, PlanRefused
from backout.ledger.records import CheckpointKind, CheckpointRow, CheckpointStatus, LedgerConnection
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
    from_live_state: bool = False  # planned from the database's state table (else the ledger's chain)
    missing: list[str] = field(default_factory=list)  # applied above the target, no saved down script
    behind: list[str] = field(default_factory=list)  # in the target state, not applied now

    def problems_without_database(self) -> list[str]:
        return [f"{m.id} ({m.name}) is irreversible: {m.irreversible_reason or 'it has no down script'}"
                for m in self.migrations if not m.reversible or m.down is None]

    def problems(self) -> list[str]:
        """What stops the plan: irreversible steps, and where the live state has no path down."""
        found = self.problems_without_database()
        if self.missing:
            found.append(f"no checkpoint saved a down script for {', '.join(self.missing)}, applied now above the "
                         "target (applied by hand, or by a release backout did not checkpoint)")
        if self.behind:
            found.append(f"{', '.join(self.behind)} of the target state {'is' if len(self.behind) == 1 else 'are'} "
                         "not applied now: the database is older than the target, and a down migration cannot "
                         "apply migrations (redeploy the target, or restore a checkpoint)")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "migrations": [{"id": m.id, "name": m.name, "checkpoint_id": self.sources[m.id],
                            "transactional": m.transactional} for m in self.migrations],
            "checkpoints": self.checkpoints,
            "target_state": self.target_state,
            "from_live_state": self.from_live_state,
        }


def saved_plan(ledger_conn: LedgerConnection, restore_point: CheckpointRow) -> DownPlan:
    """The down plan from the ledger alone; PlanRefused when the checkpoints mix tools."""
    app = restore_point["app"]
    tool = _one_tool(ledger_conn, restore_point)
    since = [cp for cp in ledger.list_checkpoints(ledger_conn, app)
             if cp["status"] == CheckpointStatus.COMPLETE
             and (cp["created_at"], cp["id"]) >= (restore_point["created_at"], restore_point["id"])
             and (cp["kind"] == CheckpointKind.DEPLOY)]
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
    return DownPlan(tool=tool, migrations=order, sources=sources, checkpoints=[cp["id"] for cp in since],
                    target_state=restore_point.get("migrations_before"))


def live_plan(ledger_conn: LedgerConnection, app_conn: psycopg.Connection[Any], restore_point: CheckpointRow,
              path: Path | str | None = None) -> DownPlan:
    """The down plan from the state applied now in `app_conn` to the restore point's, by every
    down script any checkpoint of the app saved; `problems()` says what stops it."""
    target = restore_point.get("migrations_before")
    if target is None:  # a checkpoint that recorded no state: only its chain is known
        return saved_plan(ledger_conn, restore_point)
    tool = _one_tool(ledger_conn, restore_point)
    saved: dict[str, SavedMigration] = {}
    sources: dict[str, str] = {}
    for cp in ledger.list_checkpoints(ledger_conn, restore_point["app"]):  # newest first: the newest copy wins
        if cp["migration_tool"] != tool:
            continue
        for record in cp.get("down_scripts") or []:
            m = SavedMigration.from_json(record)
            if m.id not in saved:
                saved[m.id] = m
                sources[m.id] = cp["id"]
    way = get_adapter(tool, path).down_path(app_conn, saved, target)
    order = list(reversed(way.migrations))
    used = list(dict.fromkeys(sources[m.id] for m in order))
    return DownPlan(tool=tool, migrations=order, sources={m.id: sources[m.id] for m in order}, checkpoints=used,
                    target_state=target, from_live_state=True, missing=way.missing, behind=way.behind)


def way_out(restore_point: CheckpointRow) -> str:
    """What to do instead when no down plan reaches the restore point."""
    app = restore_point["app"]
    if restore_point.get("backup_strategy") in (None, "none") or not restore_point.get("backup"):
        return (f"checkpoint {restore_point['id']} holds no backup to restore instead; undo the migrations by hand, "
                "or restore a backup taken since")
    return (f"restore checkpoint {restore_point['id']} instead: backout rollback --app {app} --to {restore_point['id']} "
            f"--db restore --confirm {app} (loses every write since {restore_point['created_at']})")


def refusal(plan: DownPlan, problems: list[str], restore_point: CheckpointRow) -> PlanRefused:
    return PlanRefused("cannot run the down migrations: " + "; ".join(problems) + "; " + way_out(restore_point))


def _one_tool(ledger_conn: LedgerConnection, restore_point: CheckpointRow) -> str:
    since = [cp for cp in ledger.list_checkpoints(ledger_conn, restore_point["app"])
             if cp["status"] == CheckpointStatus.COMPLETE and cp["kind"] == CheckpointKind.DEPLOY
             and (cp["created_at"], cp["id"]) >= (restore_point["created_at"], restore_point["id"])]
    tools = sorted({cp["migration_tool"] for cp in since} | {restore_point["migration_tool"]})
    if len(tools) > 1:
        raise PlanRefused(f"the checkpoints since {restore_point['id']} were taken with different migration tools "
                          f"({', '.join(tools)}); undo them by hand or restore a backup with --db restore")
    return tools[0]


def check(conn: psycopg.Connection[Any], plan: DownPlan, path: Path | str | None = None) -> list[str]:
    """What the database says against the plan: [] when it can run. `path`: where the tool's
    migrations are (BACKOUT_MIGRATIONS_PATH), which Django needs to run at all."""
    adapter = get_adapter(plan.tool, path)
    if plan.migrations:
        return adapter.check_down_plan(conn, plan.migrations)
    if plan.target_state is not None and sorted(adapter.applied(conn)) != sorted(plan.target_state):
        return [f"the {plan.tool} state is {adapter.applied(conn)}, the checkpoint recorded {plan.target_state}, "
                "and no saved down scripts lead there (migrated by hand since?)"]
    return []


def run(conn: psycopg.Connection[Any], plan: DownPlan, progress: Progress, path: Path | str | None = None) -> dict[str, Any]:
    """Undo the plan's migrations and check the tool's state after. A failing script raises
    DownMigrationError (its own transaction rolled back, the steps before it recorded as run)."""
    adapter = get_adapter(plan.tool, path)
    problems = plan.problems() + check(conn, plan, path)
    if problems:
        raise PlanRefused("cannot run the down migrations: " + "; ".join(problems))
    ran = adapter.run_down(conn, plan.migrations, progress) if plan.migrations else []
    state = adapter.applied(conn)
    if plan.target_state is not None and sorted(state) != sorted(plan.target_state):
        raise BackoutError(f"after the down migrations the {plan.tool} state is {state}, but the checkpoint "
                           f"recorded {plan.target_state}")
    return {"undone": ran, "state": state}


__all__ = ["DownMigrationError", "DownPlan", "check", "live_plan", "refusal", "run", "saved_plan", "way_out"]
