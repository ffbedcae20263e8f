"""What a rollback will cost, from the verdicts recorded with the checkpoints: for rollback plans
(`--dry-run` prints it) and for BACKOUT_AUTO_ROLLBACK=auto.

Rolling back from release `current` to `target` undoes every release deployed after `target` up
to `current`; the cost is the worst of their verdicts, and when a down migration is needed the
data its scripts would drop is counted now, in the live database.
"""

from __future__ import annotations

from typing import Any

import psycopg

from backout import ledger
from backout.checkpoint import database_connection
from backout.errors import BackoutError
from backout.ledger.records import CheckpointKind, CheckpointRow, CheckpointStatus, LedgerConnection
from backout.redact import redact
from backout.settings import Settings
from backout.verdict.verdict import DOWN_NEEDED, TEXT, Verdict, down_loss, with_loss, worst

NO_VERDICT = "no-verdict"


def rollback_cost(ledger_conn: LedgerConnection, app: str, target_version: int, current_version: int,
                  app_conn: psycopg.Connection[Any] | None = None) -> dict[str, Any]:
    """The cost of rolling `app` back from `current_version` to `target_version`, JSON-friendly:
    {verdict, text, reason, releases, deciding, down_drops, loss, loss_counted}. `verdict` is
    `no-verdict` when a release in between was checkpointed without one."""
    releases = _deploys_between(ledger_conn, app, target_version, current_version)
    missing = [cp["release_version"] for cp in releases if not cp.get("verdict")]
    if missing:
        listed = ", ".join(f"v{v}" for v in missing)
        return {"verdict": NO_VERDICT, "text": "no verdict", "releases": [cp["release_version"] for cp in releases],
                "reason": f"{listed} has no recorded verdict (checkpointed by an older backout?), so the cost of "
                          "rolling it back is not known", "deciding": [], "down_drops": [], "loss": [],
                "loss_counted": False}
    combined = worst([Verdict.from_json(cp["verdict"]) for cp in releases])
    counted = app_conn is not None and combined.kind == DOWN_NEEDED
    lost = down_loss(app_conn, combined.down_drops) if counted and app_conn is not None else []
    kind, reason = with_loss(combined, lost)
    document = combined.to_json()
    return {"verdict": kind, "text": TEXT[kind], "reason": reason,
            "releases": [cp["release_version"] for cp in releases], "deciding": document["deciding"],
            "down_drops": document["down_drops"], "loss": lost, "loss_counted": counted}


def cost_now(settings: Settings, ledger_conn: LedgerConnection, app: str, target_version: int,
             current_version: int) -> dict[str, Any]:
    """`rollback_cost` with the loss counted in the app's database (DATABASE_URL) when it can be
    reached from here; otherwise `loss_counted` is false and the reason says so."""
    app_conn = None
    unreachable = "DATABASE_URL is not set here"
    if settings.database_url:
        try:
            app_conn = database_connection(settings.database_url)
        except BackoutError as exc:
            unreachable = redact(str(exc), settings.secrets())
    try:
        cost = rollback_cost(ledger_conn, app, target_version, current_version, app_conn)
    finally:
        if app_conn is not None:
            app_conn.close()
    if cost["verdict"] == DOWN_NEEDED and not cost["loss_counted"]:
        cost["reason"] += f"; what the down scripts would drop was not counted ({unreachable})"
    return cost


def describe(cost: dict[str, Any]) -> list[str]:
    """The cost as lines a person reads in a plan."""
    lines = [f"verdict: {cost['text']}: {cost['reason']}"]
    lines += [f"  {d['class']:8} {d['migration']}: {d['reason']}" for d in cost.get("deciding") or []]
    return lines


def _deploys_between(conn: LedgerConnection, app: str, after: int, up_to: int) -> list[CheckpointRow]:
    """The newest complete deploy checkpoint of each release after `after` up to `up_to`, oldest first."""
    chosen: dict[int, CheckpointRow] = {}
    for cp in ledger.list_checkpoints(conn, app):
        version = cp.get("release_version")
        if (cp["kind"] == CheckpointKind.DEPLOY and cp["status"] == CheckpointStatus.COMPLETE
                and version is not None and after < version <= up_to):
            chosen.setdefault(version, cp)
    return [chosen[v] for v in sorted(chosen)]
