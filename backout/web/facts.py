"""What the page shows about one app, gathered from the ledger (and Heroku's release list when the
Platform API answers): releases with their checkpoints and health verdicts, rollback requests with
their steps, probe samples and health events for the chart.

The ledger alone tells the story: a release the Platform API does not list (or every release,
when the API is down, which is when the page matters most) is still shown from its checkpoint,
health events and rollback requests; only who released it and its description need the API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from backout import ledger
from backout.release_version import rollback_target
from backout.health.policy import EventKind
from backout.ledger.records import (
    ACTIVE_STATUSES,
    CheckpointKind,
    CheckpointRow,
    HealthEventRow,
    LedgerConnection,
    ProbeSampleRow,
    RequestRow,
    RequestStatus,
    StepRow,
)

RELEASES_SHOWN = 20
ROLLBACKS_SHOWN = 10
EVENTS_READ = 500
SAMPLES_READ = 5000

# Health events that settle a release's verdict, and what the page calls them.
VERDICTS: dict[str, str] = {
    EventKind.VERIFIED: "verified healthy",
    EventKind.FAILED: "failed",
    EventKind.WATCH_STARTED: "watching",
    EventKind.WATCH_SKIPPED: "not watched",
}
# The events that end a watch; a watch started after the last of them is still going on.
WATCH_ENDS = (EventKind.VERIFIED, EventKind.WATCH_ENDED, EventKind.WATCH_SKIPPED, EventKind.SUPPRESSED,
              EventKind.DRY_RUN, EventKind.ROLLBACK_FINISHED, EventKind.ROLLBACK_FAILED)


@dataclass
class Release:
    version: int
    when: str | None = None
    commit: str | None = None
    who: str | None = None
    description: str | None = None
    status: str | None = None
    current: bool = False
    checkpoint: CheckpointRow | None = None
    health: str = ""
    health_reason: str | None = None
    rolled_back_by: list[RequestRow] = field(default_factory=list)  # requests that took the app off this release
    rollback_of: int | None = None  # for a rollback release: the version it went back to
    made_by: RequestRow | None = None  # for a rollback release: the request that made it


@dataclass
class Rollback:
    request: RequestRow
    steps: list[StepRow]

    @property
    def target(self) -> int | None:
        return ((self.request.get("plan") or {}).get("target") or {}).get("version")

    @property
    def source(self) -> int | None:
        return ((self.request.get("plan") or {}).get("current") or {}).get("version")

    @property
    def release_version(self) -> int | None:
        return (self.request.get("result") or {}).get("release_version")

    @property
    def loses(self) -> str:
        step = (self.request.get("plan") or {}).get("db_step")
        return "nothing: code and config only" if not step else str(step.get("summary") or self.request["db"])


@dataclass
class AppFacts:
    app: str
    releases: list[Release]  # newest first
    rollbacks: list[Rollback]  # newest first
    samples: list[ProbeSampleRow]  # oldest first
    events: list[HealthEventRow]  # oldest first
    in_progress: bool
    api_note: str | None = None  # why Heroku's release list is missing, when it is
    read_at: float = field(default_factory=time.time)

    def release(self, version: int | None) -> Release | None:
        return next((r for r in self.releases if r.version == version), None)


def apps(conn: LedgerConnection) -> list[dict[str, Any]]:
    """Every app the ledger knows, with the time of its latest record, most recent first."""
    rows = conn.cursor(row_factory=dict_row).execute(
        f"""SELECT app, max(at) AS last FROM (
                SELECT app, created_at AS at FROM {ledger.SCHEMA}.checkpoints
                UNION ALL SELECT app, created_at FROM {ledger.SCHEMA}.requests
                UNION ALL SELECT app, at FROM {ledger.SCHEMA}.health_events) AS everything
            GROUP BY app ORDER BY last DESC, app""").fetchall()
    return [{"app": r["app"], "last": r["last"].isoformat()} for r in rows]


def gather(conn: LedgerConnection, app: str, heroku_releases: list[dict[str, Any]] | None,
           api_note: str | None = None, watch_horizon: float = 3600.0) -> AppFacts:
    """The app's facts. `heroku_releases` is the Platform API's list (newest first), or None."""
    checkpoints = ledger.list_checkpoints(conn, app, limit=200)
    events = list(reversed(ledger.health_events(conn, app, limit=EVENTS_READ)))
    requests_ = [r for r in ledger.list_requests(conn, app, limit=ROLLBACKS_SHOWN) if not r["dry_run"]]
    rollbacks = [Rollback(r, ledger.steps(conn, r["id"])) for r in requests_]
    samples = ledger.probe_samples(conn, app, limit=SAMPLES_READ)

    releases = _releases(heroku_releases, checkpoints, events, rollbacks)
    running = any(r.request["status"] in ACTIVE_STATUSES for r in rollbacks)
    return AppFacts(app=app, releases=releases, rollbacks=rollbacks, samples=samples, events=events,
                    in_progress=running or _watching(events, watch_horizon), api_note=api_note)


def _releases(heroku_releases: list[dict[str, Any]] | None, checkpoints: list[CheckpointRow],
              events: list[HealthEventRow], rollbacks: list[Rollback]) -> list[Release]:
    found: dict[int, Release] = {}

    def release(version: int) -> Release:
        return found.setdefault(version, Release(version))

    for cp in reversed(checkpoints):  # oldest first, so the newest deploy checkpoint wins
        if cp["kind"] == CheckpointKind.DEPLOY and cp["release_version"] is not None:
            r = release(cp["release_version"])
            r.checkpoint, r.commit, r.when = cp, cp.get("slug_commit"), r.when or cp["created_at"]
    for event in events:
        version = event["release_version"]
        if version is None:
            continue
        r = release(version)
        if event["kind"] in VERDICTS:
            r.health, r.health_reason = VERDICTS[event["kind"]], event["reason"]
        elif event["kind"] in (EventKind.SUPPRESSED, EventKind.DRY_RUN, EventKind.ROLLBACK_FAILED):
            r.health_reason = f"{r.health_reason}; {event['reason']}" if r.health_reason else event["reason"]
    for rollback in rollbacks:
        if rollback.source is not None and rollback.request["status"] != RequestStatus.REFUSED:
            release(rollback.source).rolled_back_by.append(rollback.request)
        if rollback.release_version is not None:
            r = release(rollback.release_version)
            r.made_by, r.rollback_of = rollback.request, rollback.target
    for item in heroku_releases or []:
        r = release(item["version"])
        slug = item.get("slug")
        slug = slug if isinstance(slug, dict) else {}
        r.when = item.get("created_at") or r.when
        r.who = (item.get("user") or {}).get("email")
        r.description = item.get("description")
        r.status = item.get("status")
        r.current = bool(item.get("current"))
        r.commit = r.commit or slug.get("commit")
        r.rollback_of = r.rollback_of or rollback_target(r.description)
    for r in found.values():
        if r.checkpoint and r.checkpoint.get("verified_healthy_at") and r.health != "failed":
            r.health = "verified healthy"
    if heroku_releases is None and found:
        newest = max(found)
        found[newest].current = True
    return sorted(found.values(), key=lambda r: r.version, reverse=True)[:RELEASES_SHOWN]


def _watching(events: list[HealthEventRow], horizon: float) -> bool:
    """Whether the newest watch has not said its last word (and is not older than `horizon` seconds,
    in case the worker holding it died)."""
    last = next((e for e in reversed(events) if e["kind"] in WATCH_ENDS or e["kind"] == EventKind.WATCH_STARTED), None)
    if last is None or last["kind"] != EventKind.WATCH_STARTED:
        return False
    return time.time() - datetime.fromisoformat(last["at"]).timestamp() < horizon
