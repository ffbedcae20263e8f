"""`backout health --app A [--json]`: one probe round now, with the verdict."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from typing import Any

from backout.health.check import check
from backout.health.policy import Policy
from backout.health.probes import PASS
from backout.cli.arguments import add_app, add_json, show
from backout.health.watches import WatchPhase
from backout.output import table
from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_app(p)
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    document = check(settings, args.app)
    show(args, document, render)
    return 0 if document["verdict"] in (PASS, "stale") else 1


def render(document: dict[str, Any]) -> str:
    """The check for people: the probes, the dynos, the verdict, the watch and the policy's answer."""
    release = document["release"]
    lines = [f"{document['app']} " + (f"v{release['version']} ({release['description']})" if release
                                      else "(release unknown: no HEROKU_API_KEY)")]
    if document["probes"]:
        lines += ["", table(["URL", "RESULT", "STATUS", "RELEASE", "TIME", "REASON"], [
            [p["url"], p["outcome"], p["status"], _release_text(p["release"]), f"{p['elapsed']:.3f}s", p["reason"]]
            for p in document["probes"]])]
    if document["dynos"] is not None:
        dynos = ", ".join(f"{d['name']} {d['state']} (v{d['release_version']})" for d in document["dynos"])
        lines += ["", "dynos: " + (dynos or "none running")]
    if document["sentry"]:
        lines += ["sentry: " + document["sentry"]["reason"]]
    lines += ["", f"verdict: {document['verdict']}: {document['reason']}"]
    watch = document["watch"]
    if watch:
        since = time.strftime("%H:%M:%S", time.localtime(watch["started_at"]))
        phase = "rolling back" if watch.get("phase") == WatchPhase.ROLLING_BACK else "watching"
        lines.append(f"watch: {phase} v{watch['release_version']} since {since}, held by {watch.get('owner') or 'no worker yet'}")
    else:
        lines.append("watch: none running for this app")
    policy = document["policy"]
    auto = policy["auto_rollback"] + (f" (--db {policy['db']})" if policy["db"] else
                                      " (--db chosen by the verdict)" if policy["auto_rollback"] == "auto" else "")
    lines.append(f"policy: auto-rollback {auto}{', dry run' if policy['dry_run'] else ''}; "
                 + Policy(**{f.name: policy[f.name] for f in fields(Policy)}).describe())
    decision = document["decision"]
    if decision:
        verb = {"rollback": "would", "dry_run": "would (dry run)", "suppress": "would not roll back:"}[decision["action"]]
        if decision["action"] == "suppress":
            lines.append(f"if it keeps failing, backout {verb} {decision['reason']}")
        else:
            target = decision["target"]
            lines.append(f"if it keeps failing, backout {verb} roll back to v{target['version']} "
                         f"({target['checkpoint']}) with --db {decision['db']}")
    return "\n".join(lines)


def _release_text(release: Any) -> str:
    if release is None:
        return ""
    return f"v{release}" if isinstance(release, int) else str(release)
