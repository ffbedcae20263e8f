"""`backout package-rollback`: plan, confirm, run (or re-check) a package rollback and print it."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


from backout import ledger
from backout.cli.arguments import add_json
from backout.errors import BadInput
from backout.ledger.records import FINISHED_STEP, LedgerConnection, StepRow
from backout.output import Progress, dump_json
from backout.package_rollback import report
from backout.package_rollback.plan import Options
from backout.package_rollback.run import (
    check_confirm,
    find_request,
    plan_request,
    run_request,
    start,
)
from backout.package_rollback.runbook import GIT_STEPS, prepare_checkout
from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the GitHub repository of the package")
    p.add_argument("--bad", required=True, metavar="V", help="the bad version, as PyPI shows it (1.2.3)")
    p.add_argument("--good", metavar="V",
                   help="the version to go back to (default: the newest older one in the changelog and GitHub "
                        "releases that is not yanked or rolled back)")
    p.add_argument("--reason", help="why the bad version is withdrawn (goes into the changelog, notes and issue)")
    p.add_argument("--tag-prefix", metavar="P", help="what comes before the version in tags (default: detected; v)")
    p.add_argument("--version-file", metavar="PATH", help="the file holding the version (default: detected)")
    p.add_argument("--changelog", metavar="PATH", help="the changelog (default: CHANGELOG.md, CHANGES.md, ...)")
    p.add_argument("--checkout", metavar="PATH",
                   help="a clone of the repository to work in (default: a temporary clone made with GITHUB_TOKEN)")
    p.add_argument("--pypi-project", metavar="NAME", help="the project on PyPI (default: from pyproject.toml/setup.cfg)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--confirm", metavar="OWNER/NAME", help="the repository again, required to delete its tag and release")
    p.add_argument("--recheck", action="store_true", help="only re-check PyPI for the yank and record it")
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = Options(repo=args.repo, bad=args.bad, good=args.good, tag_prefix=args.tag_prefix,
                      version_file=args.version_file, changelog=args.changelog, checkout=args.checkout,
                      pypi_project=args.pypi_project, reason=args.reason or "")
    options.check()
    settings.require("GITHUB_TOKEN")
    if not args.dry_run:
        settings.require("BACKOUT_DATABASE_URL")
    conn = ledger.connect(settings.ledger_url) if settings.ledger_url else None
    try:
        if args.recheck:
            return _recheck(args, settings, conn, options)
        planned = plan_request(settings, options, conn)
        history = ledger.steps(conn, planned.request["id"]) if conn is not None and planned.request else []
        notify = bool(settings.notify_url)
        if options.checkout and not _all_git_done(history):
            # A wrong or dirty checkout is bad input: refused before the ledger or GitHub change.
            with tempfile.TemporaryDirectory() as tmp:
                prepare_checkout(planned.plan, options.checkout, settings.github_token, Path(tmp))
        if args.dry_run:
            _emit(args, report.document(planned.plan, dry_run=True, request=planned.request, history=history,
                                        notify_configured=notify))
            return 0
        if not args.json:
            print(report.text(report.document(planned.plan, dry_run=False, history=history,
                                              notify_configured=notify)), file=sys.stderr)
        check_confirm(planned.plan, args.confirm)
        assert conn is not None
        request = start(settings, conn, planned, options)
        try:
            run_request(settings, conn, request, checkout=options.checkout, progress=Progress())
        finally:
            final = ledger.get_request(conn, request["id"]) or request
            _emit(args, report.document(final["plan"], dry_run=False, request=final,
                                        history=ledger.steps(conn, request["id"]), notify_configured=notify))
        return 0
    finally:
        if conn is not None:
            conn.close()


def _recheck(args: argparse.Namespace, settings: Settings, conn: LedgerConnection | None, options: Options) -> int:
    if conn is None:
        raise BadInput("--recheck reads the ledger; set DATABASE_URL or BACKOUT_DATABASE_URL")
    request = find_request(conn, options.repo, options.bad)
    if request is None or not request.get("plan"):
        raise BadInput(f"no package rollback of {options.repo} {options.bad} in the ledger to re-check; run it first")
    run_request(settings, conn, request, recheck=True, progress=Progress())
    final = ledger.get_request(conn, request["id"]) or request
    _emit(args, report.document(final["plan"], dry_run=False, request=final, history=ledger.steps(conn, request["id"]),
                                notify_configured=bool(settings.notify_url)))
    return 0


def _all_git_done(history: list[StepRow]) -> bool:
    done = {row["step"] for row in history if row["status"] in FINISHED_STEP}
    return all(step in done for step in GIT_STEPS)


def _emit(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        dump_json(doc)
    else:
        print(report.text(doc))
