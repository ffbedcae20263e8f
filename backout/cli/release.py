"""`backout release [-- CMD ...]`: the release-phase hook."""

from __future__ import annotations

import argparse
import signal
import sys

from backout.backups import pg_dump
from backout.output import Progress
from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                   help="the migrate command to run after the checkpoint, after `--`")


def run(args: argparse.Namespace, settings: Settings) -> int:
    argv = list(args.command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    # Before the hook is imported (psycopg alone takes longer than dumping a small database).
    dump = pg_dump.start_early(settings)
    # The dump's pump thread needs the interpreter for a moment per 256 KiB read; while this thread
    # imports and talks to the ledger it would wait up to 5 ms (the default switch interval) each
    # time, holding pg_dump to about 50 MB/s.
    sys.setswitchinterval(0.0005)
    try:
        from backout.hooks import release

        signal.signal(signal.SIGTERM, release.terminated)
        return release.run(settings, argv, Progress(), dump=dump)
    finally:
        if dump is not None:
            dump.stop()
