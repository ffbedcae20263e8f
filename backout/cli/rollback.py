"""`backout rollback --app A --to T ...`: plan and enqueue a rollback, and follow it with `--wait`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backout.cli.arguments import add_app, add_json
from backout.errors import PlanRefused
from backout.ledger.records import RequestStatus
from backout.output import Progress, dump_json
from backout.rollback.enqueue import RequestDocument, enqueue_rollback, follow, request_document
from backout.rollback.plan import describe
from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_app(p)
    p.add_argument("--to", required=True, metavar="T",
                   help="vNN, a checkpoint id, or `previous` (the last checkpoint verified healthy)")
    p.add_argument("--db", choices=("none", "down", "restore"), default="none",
                   help="what to do with the database (default: none)")
    p.add_argument("--files", choices=("none", "restore"), default="none",
                   help="restore the uploaded files (BACKOUT_FILES) to the checkpoint's time (default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--confirm", metavar="APP", help="the app's name, required for a database or files step")
    p.add_argument("--wait", action="store_true", help="follow the job to the end; exit 1 if it fails")
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        request_id = enqueue_rollback(args.app, args.to, db=args.db, dry_run=args.dry_run,
                                      confirm=args.confirm, settings=settings, files=args.files)
    except PlanRefused as exc:
        if args.json:
            dump_json({"request_id": None, "app": args.app, "to": args.to, "db": args.db,
                       "dry_run": args.dry_run, "status": RequestStatus.REFUSED, "error": str(exc)})
        raise
    if args.wait and not args.dry_run:
        progress = Progress(sys.stderr) if not args.json else (lambda message: None)
        try:
            follow(settings, request_id, progress)
        except KeyboardInterrupt:
            print(f"backout: stopped following; the rollback goes on. `backout status --app {args.app}` shows it",
                  file=sys.stderr)
            return 130
    document = request_document(settings, request_id)
    if args.json:
        dump_json(document)
    else:
        _print_human(document, args)
    if args.dry_run or not args.wait:
        return 0
    return 0 if document["status"] == RequestStatus.SUCCEEDED else 1


def _print_human(document: RequestDocument, args: argparse.Namespace) -> None:
    status, app = document["status"], document["app"]
    if args.dry_run:
        print(describe(document["plan"]))
        print(f"dry run {document['request_id']}: nothing was changed")
        return
    if not args.wait:
        print(describe(document["plan"]), file=sys.stderr)
        print(document["request_id"])
        return
    result = document["result"] or {}
    if status == RequestStatus.SUCCEEDED and result.get("rolled_back"):
        print(f"succeeded: {app} runs release v{result['release_version']}, "
              f"a rollback to v{result['target_version']} (verified)")
    elif status == RequestStatus.SUCCEEDED:
        db = _database_done(result.get("db"))
        print(f"succeeded: {app} already ran v{result.get('target_version')}'s code and config, so they were not "
              f"rolled back" + (f"; the database was rolled back: {db}" if db else "; nothing rolled back"))
    else:
        print(f"failed: {document['error']}")


def _database_done(db: dict[str, Any] | None) -> str:
    """What a database step did, from its result; '' when none ran."""
    if not db:
        return ""
    if "undone" in db:
        undone = db["undone"]
        return (f"undid {len(undone)} {db.get('tool', '')} migration(s) ({', '.join(undone)})" if undone
                else "no migration to undo")
    mode = db.get("mode") or (db.get("choice") or {}).get("mode")
    return f"restored checkpoint {db.get('restore_point')}" + (f" ({mode})" if mode else "")
