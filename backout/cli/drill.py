"""`backout drill --app A [--checkpoint ID] [--json]`: restore a checkpoint into a scratch database and
check it (see `backout.drill`); exit 0 when it restored with every table's rows, 1 when not."""

from __future__ import annotations

import argparse
import sys

from backout import ledger
from backout.cli.arguments import add_app, add_json
from backout.drill import drill
from backout.output import Progress, dump_json
from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_app(p)
    p.add_argument("--checkpoint", metavar="ID", help="the checkpoint to drill (default: the newest pg_dump one)")
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("BACKOUT_DATABASE_URL", "DATABASE_URL")
    with ledger.connect(settings.ledger_url or "") as conn:
        result = drill(settings, conn, args.app, Progress(sys.stderr), checkpoint_id=args.checkpoint)
    if args.json:
        dump_json({"app": args.app, **result})
    else:
        print(f"drilled {result['checkpoint_id']}: restored in {result['seconds']:.1f}s, {result['tables']} tables "
              f"and {result['rows']} rows as in the archive")
    return 0
