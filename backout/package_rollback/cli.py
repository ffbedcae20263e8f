"""`backout package-rollback`: plan, confirm, run (or re-check) a package rollback and print it."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import psycopg

from .. import ledger
from ..errors import BadInput
from ..output import Progress, dump_json
from ..settings import Settings
from . import report
from .plan import Options
from .run import check_confirm, find_request, plan_request, run_request, start
from .runbook import GIT_STEPS, prepare_checkout


def command(args: argparse.Namespace, settings: Settings) -> int:
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


def _recheck(args: argparse.Namespace, settings: Settings, conn: psycopg.Connection | None, options: Options) -> int:
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


def _all_git_done(history: list[dict]) -> bool:
    done = {row["step"] for row in history if row["status"] in ("done", "skipped")}
    return all(step in done for step in GIT_STEPS)


def _emit(args: argparse.Namespace, doc: dict) -> None:
    if args.json:
        dump_json(doc)
    else:
        print(report.text(doc))
