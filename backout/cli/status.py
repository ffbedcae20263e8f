"""`backout status --app A [--json]`: releases, checkpoints, health and recent rollback jobs."""

from __future__ import annotations

import argparse

from backout.cli.arguments import add_app, add_json, show
from backout.output import table
from backout.settings import Settings
from backout.status import AppStatus, app_status


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_app(p)
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    show(args, app_status(settings, args.app), render)
    return 0


def render(document: AppStatus) -> str:
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
          r["checkpoint"]["id"] if r["checkpoint"] else "none",
          "yes" if r["checkpoint"] and r["checkpoint"]["verified_healthy_at"] else "",
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
