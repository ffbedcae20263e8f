"""`backout status --app A [--json]`: where an app stands.

The current release, the recent releases with the checkpoint taken for each, the running and recent
rollback requests, and the last health verdict (from the ledger's health events).

The JSON document has these keys (stable): `app`, `current_release` (a release, or null),
`releases` (newest first: `version`, `id`, `status`, `current`, `eligible_for_rollback`,
`description`, `created_at`, `slug_id`, `checkpoint`: null or `{id, kind, status, created_at,
verified_healthy_at, backup_strategy, reversible}`), `rollbacks` (newest first: `request_id`,
`status`, `to`, `db`, `dry_run`, `requested_by`, `created_at`, `started_at`, `finished_at`,
`release_version`, `error`), `running` (the request ids still queued or running) and `health`
(null, or the last verdict: `verdict`, `reason`, `release_version`, `kind`, `at`).
"""

from __future__ import annotations

from typing import Any, TypedDict

from backout import ledger
from backout.errors import HerokuAPIError, PlanRefused
from backout.heroku import ApiObject, HerokuClient
from backout.ledger.records import ACTIVE_STATUSES, CheckpointKind, CheckpointRow, RequestRow
from backout.release_version import slug_id
from backout.settings import Settings


class ReleaseCheckpoint(TypedDict):
    """A release's deploy checkpoint, as the status document shows it."""

    id: str
    kind: str
    status: str
    created_at: str
    verified_healthy_at: str | None
    backup_strategy: str
    reversible: bool


class ReleaseStatus(TypedDict):
    version: int
    id: str
    status: str | None
    current: bool
    eligible_for_rollback: bool | None
    description: str | None
    created_at: str | None
    slug_id: str | None
    checkpoint: ReleaseCheckpoint | None


class RollbackStatus(TypedDict):
    request_id: str
    status: str
    to: str
    db: str
    dry_run: bool
    requested_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    release_version: int | None
    error: str | None


class HealthStatus(TypedDict):
    verdict: str | None
    reason: str | None
    release_version: int | None
    kind: str
    at: str


class AppStatus(TypedDict):
    """The status document (see the module's docstring)."""

    app: str
    current_release: ReleaseStatus | None
    releases: list[ReleaseStatus]
    rollbacks: list[RollbackStatus]
    running: list[str]
    health: HealthStatus | None


RELEASES_SHOWN = 10
ROLLBACKS_SHOWN = 10


def app_status(settings: Settings, app: str) -> AppStatus:
    """The status document of `app` (see the module's docstring for its keys)."""
    settings.require("BACKOUT_DATABASE_URL", "HEROKU_API_KEY")
    assert settings.ledger_url is not None
    with HerokuClient.from_settings(settings) as client:
        try:
            releases = client.list_releases(app)[:RELEASES_SHOWN]
        except HerokuAPIError as exc:
            if exc.status == 404:
                raise PlanRefused(f"unknown app {app!r}: {exc.message}") from None
            raise
    conn = ledger.connect(settings.ledger_url)
    try:
        checkpoints: dict[int, CheckpointRow] = {}
        for checkpoint in ledger.list_checkpoints(conn, app, limit=200):
            if checkpoint["kind"] == CheckpointKind.DEPLOY and checkpoint["release_version"] is not None:
                checkpoints.setdefault(checkpoint["release_version"], checkpoint)
        requests_ = ledger.list_requests(conn, app, limit=ROLLBACKS_SHOWN)
        running = ledger.list_requests(conn, app, statuses=ACTIVE_STATUSES, limit=100)
        verdict = next((e for e in ledger.health_events(conn, app, limit=100) if e["verdict"]), None)
    finally:
        conn.close()
    shown = [_release(r, checkpoints.get(r["version"])) for r in releases]
    return {
        "app": app,
        "current_release": next((r for r in shown if r["current"]), None),
        "releases": shown,
        "rollbacks": [_rollback(r) for r in requests_],
        "running": [r["id"] for r in running if not r["dry_run"]],
        "health": None if verdict is None else {
            "verdict": verdict["verdict"], "reason": verdict["reason"], "release_version": verdict["release_version"],
            "kind": verdict["kind"], "at": verdict["at"],
        },
    }


def _release(release: ApiObject, checkpoint: CheckpointRow | None) -> ReleaseStatus:
    return {
        "version": release["version"],
        "id": release["id"],
        "status": release.get("status"),
        "current": bool(release.get("current")),
        "eligible_for_rollback": release.get("eligible_for_rollback"),
        "description": release.get("description"),
        "created_at": release.get("created_at"),
        "slug_id": slug_id(release),
        "checkpoint": None if checkpoint is None else {
            "id": checkpoint["id"], "kind": checkpoint["kind"], "status": checkpoint["status"],
            "created_at": checkpoint["created_at"], "verified_healthy_at": checkpoint["verified_healthy_at"],
            "backup_strategy": checkpoint["backup_strategy"], "reversible": checkpoint["reversible"],
        },
    }


def _rollback(request: RequestRow) -> RollbackStatus:
    result = request["result"] or {}
    return {
        "request_id": request["id"],
        "status": request["status"],
        "to": request["target"],
        "db": request["db"],
        "dry_run": request["dry_run"],
        "requested_by": request["requested_by"],
        "created_at": request["created_at"],
        "started_at": request["started_at"],
        "finished_at": request["finished_at"],
        "release_version": result.get("release_version"),
        "error": request["error"],
    }
