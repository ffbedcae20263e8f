"""`backout check [--require reversible|expand-only] [--json]`: the verdict and the deploy dangers
of the migrations pending against DATABASE_URL, for CI before a deploy. Exit 1 when they break
BACKOUT_REQUIRE (or --require), 0 otherwise.

The JSON document: {"tool", "database" (password masked), "applied", "pending", "require",
"violation", "ok", "verdict", "text", "reason", "deciding": [{"migration", "sql", "class",
"reason", ...}], "dangers": [{"migration", "kind", "message"}], "down_drops", "migrations"}.
"""

from __future__ import annotations

import argparse
import sys

from backout.cli.arguments import add_json
from backout.output import dump_json
from backout.settings import REQUIRE_POLICIES, Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--require", choices=REQUIRE_POLICIES, help="the policy to enforce (default: BACKOUT_REQUIRE)")
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from backout.verdict.check import check

    report = check(settings, require=args.require)
    if args.json:
        dump_json(report.to_json())
    else:
        pending = ", ".join(report.pending) or "none"
        print(f"{report.tool} migrations pending against {report.database}: {pending}")
        for line in report.verdict.lines():
            print(line)
        if report.require:
            print(f"policy BACKOUT_REQUIRE={report.require}: " + ("broken" if report.violation else "met"))
    if report.violation:
        print(f"backout: {report.violation}", file=sys.stderr)
        return 1
    return 0
