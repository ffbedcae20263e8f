"""The demo's timeline: every event of the story with its time since the demo started, what it did,
and where the ledger keeps it, merged from the demo's own marks, the ledger and the notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from backout.demo.receiver import Message
from backout.demo.story import Facts, LedgerRows, epoch
from backout.health.policy import EventKind
from backout.ledger.records import (
    CheckpointKind,
    CheckpointRow,
    HealthEventRow,
    StepName,
    StepRow,
    StepStatus,
)
from backout.output import human_bytes, table
from backout.release_version import rollback_description

DETAIL_WIDTH = 80
# Health events that make a line of the timeline (grace and stale rounds are routine; the
# rollback_requested event is shown as the request it made).
EVENT_LINES: dict[str, str] = {
    EventKind.COUNTED: "probe failed",
    EventKind.FAILED: "failed its health checks",
    EventKind.SUPPRESSED: "rollback suppressed",
    EventKind.VERIFIED: "verified healthy",
    EventKind.ROLLBACK_FAILED: "rollback failed",
}
STEP_LINES = {
    "db_down": "down migration",
    "db_restore": "database restored",
    "code_rollback": "code and config rolled back",
    "release_phase": "rollback release phase done",
    "verify": "rollback verified",
}


@dataclass(frozen=True)
class Line:
    at: float
    what: str
    detail: str
    where: str


def lines(facts: Facts, rows: LedgerRows) -> list[Line]:
    """The story's events, oldest first."""
    found = [Line(m.at, m.what, m.detail, m.where) for m in facts.marks]
    found += _checkpoint_lines(rows.checkpoints)
    found += _event_lines(rows.events)
    if rows.request is not None:
        request = rows.request
        plan = request["plan"] or {}
        target = (plan.get("target") or {}).get("version")
        found.append(Line(epoch(request["created_at"]) or 0.0, "rollback requested",
                          f"{request['id']}: to v{target} with --db {request['db']}, by {request['requested_by']}",
                          "requests"))
        found += _step_lines(rows.steps, target)
        if request["finished_at"]:
            result = request["result"] or {}
            found.append(Line(epoch(request["finished_at"]) or 0.0, f"rollback {request['status']}",
                              f"v{result.get('release_version')} is the current release", "requests"))
    return sorted(found, key=lambda line: line.at)


def render(found: Iterable[Line], started: float) -> str:
    return table(["TIME", "EVENT", "DETAIL", "LEDGER"],
                 [[f"{max(0.0, line.at - started):5.1f}s", line.what, _short(line.detail, DETAIL_WIDTH), line.where]
                  for line in found])


def render_messages(messages: Iterable[Message], started: float) -> str:
    return table(["TIME", "EVENT", "TEXT"],
                 [[f"{max(0.0, m.at - started):5.1f}s", m.event, _short(m.text, DETAIL_WIDTH + 24)]
                  for m in messages])


def _checkpoint_lines(checkpoints: list[CheckpointRow]) -> list[Line]:
    found = []
    for cp in checkpoints:
        size = (cp.get("backup") or {}).get("size")
        backup = cp["backup_strategy"] + (f" {human_bytes(size)}" if isinstance(size, int) else "")
        if cp["kind"] == CheckpointKind.SAFETY:
            # It holds the failing state, so that the rollback itself can be undone.
            found.append(Line(epoch(cp["completed_at"] or cp["created_at"]) or 0.0, "safety checkpoint",
                              f"{cp['id']}, {backup} of v{cp['release_version']} as it failed", "checkpoints"))
            continue
        saved = [d.get("id") for d in cp.get("down_scripts") or []]
        found.append(Line(epoch(cp["created_at"]) or 0.0, f"v{cp['release_version']} checkpointed",
                          f"{cp['id']}, {backup}" + (f", saved {', '.join(saved)}'s down script" if saved else ""),
                          "checkpoints"))
        if cp["completed_at"]:
            before = " ".join(cp.get("migrations_before") or []) or "none"
            after = " ".join(cp.get("migrations_after") or []) or "none"
            found.append(Line(epoch(cp["completed_at"]) or 0.0, f"v{cp['release_version']} migrated",
                              f"alembic {before} -> {after}", "checkpoints"))
    return found


def _event_lines(events: list[HealthEventRow]) -> list[Line]:
    found = []
    failures: dict[int, int] = {}
    for event in events:
        what = EVENT_LINES.get(event["kind"])
        if what is None:
            continue
        version = event["release_version"] or 0
        if event["kind"] == EventKind.COUNTED:
            failures[version] = failures.get(version, 0) + 1
            what = f"{what} ({failures[version]})"
        marked = event["kind"] == EventKind.VERIFIED and (event["detail"] or {}).get("checkpoint")
        where = "health_events" + (", checkpoints" if marked else "")
        reason = (event["reason"] or "").split("; ")[0]
        found.append(Line(epoch(event["at"]) or 0.0, f"v{version} {what}", reason, where))
    return found


def _step_lines(steps: list[StepRow], target: int | None) -> list[Line]:
    found = []
    for step in steps:
        what = STEP_LINES.get(step["step"])
        if what is None or step["status"] == StepStatus.STARTED:
            continue
        detail = step["detail"] or {}
        version = detail.get("release_version")
        if step["status"] != StepStatus.DONE:
            text = str(detail.get("reason") or detail)
            what += f" ({step['status']})"
        elif step["step"] == StepName.DB_DOWN:
            text = (f"undid {', '.join(detail.get('undone') or []) or 'nothing'} from the saved script; "
                    f"alembic at {' '.join(detail.get('state') or []) or 'none'}")
        elif step["step"] == StepName.CODE_ROLLBACK:
            made = f" '{rollback_description(target)}'" if target is not None else ""
            text = f"Platform API rollback: v{version}{made}"
        elif step["step"] == StepName.RELEASE_PHASE:
            text = f"v{version}'s release phase: a rollback, so no checkpoint and nothing to migrate"
        elif step["step"] == StepName.VERIFY:
            text = f"v{version} runs v{target}'s slug and config vars"
        else:
            text = ""
        found.append(Line(epoch(step["at"]) or 0.0, what, text, "steps"))
    return found


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
