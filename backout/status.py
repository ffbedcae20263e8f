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

import argparse
from typing import Any

from . import ledger
from .errors import HerokuAPIError, PlanRefused
from .heroku import HerokuClient
from .output import dump_json, table
from .settings import Settings

RELEASES_SHOWN = 10
ROLLBACKS_SHOWN = 10


def app_status(settings: Settings, app: str) -> dict:
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
        checkpoints: dict[int, dict] = {}
        for checkpoint in ledger.list_checkpoints(conn, app, limit=200):
            if checkpoint["kind"] == "deploy" and checkpoint["release_version"] is not None:
                checkpoints.setdefault(checkpoint["release_version"], checkpoint)
        requests_ = ledger.list_requests(conn, app, limit=ROLLBACKS_SHOWN)
        running = ledger.list_requests(conn, app, statuses=["queued", "running"], limit=100)
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
            k: verdict[k] for k in ("verdict", "reason", "release_version", "kind", "at")
        },
    }


def command(args: argparse.Namespace, settings: Settings) -> int:
    document = app_status(settings, args.app)
    if args.json:
        dump_json(document)
    else:
        print(render(document))
    return 0


def render(document: dict) -> str:
    """The status document as text a person reads."""
    current = document["current_release"]
    lines = [f"app {document['app']}: " + (f"current release v{current['version']}" if current else "no current release")]
    health = document["health"]
    lines.append("health: " + (
        f"{health['verdict']} for v{health['release_version']} at {health['at']}"
        + (f" ({health['reason']})" if health["reason"] else "") if health else "no verdict yet"))
    lines += ["", "releases:", table(
        ["version", "status", "current", "checkpoint", "verified", "description"],
        [[f"v{r['version']}", r["status"], "*" if r["current"] else "",
          (r["checkpoint"] or {}).get("id", "none"),
          "yes" if (r["checkpoint"] or {}).get("verified_healthy_at") else "",
          r["description"]] for r in document["releases"]],
    )]
    lines += ["", "rollbacks:"]
    if document["rollbacks"]:
        lines.append(table(
            ["request", "status", "to", "db", "by", "created", "release"],
            [[r["request_id"] + (" (dry run)" if r["dry_run"] else ""), r["status"], r["to"], r["db"],
              r["requested_by"], r["created_at"], f"v{r['release_version']}" if r["release_version"] else ""]
             for r in document["rollbacks"]],
        ))
    else:
        lines.append("none")
    return "\n".join(lines)


def _release(release: dict, checkpoint: dict | None) -> dict[str, Any]:
    slug = release.get("slug")
    return {
        "version": release["version"],
        "id": release["id"],
        "status": release.get("status"),
        "current": bool(release.get("current")),
        "eligible_for_rollback": release.get("eligible_for_rollback"),
        "description": release.get("description"),
        "created_at": release.get("created_at"),
        "slug_id": slug.get("id") if isinstance(slug, dict) else None,
        "checkpoint": None if checkpoint is None else {
            k: checkpoint.get(k)
            for k in ("id", "kind", "status", "created_at", "verified_healthy_at", "backup_strategy", "reversible")
        },
    }


def _rollback(request: dict) -> dict[str, Any]:
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
