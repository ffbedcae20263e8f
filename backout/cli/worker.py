"""`backout worker [--burst]`: the RQ worker, its scheduler and the health monitor."""

from __future__ import annotations

import argparse

from backout.settings import Settings
from backout.worker import main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return main.run(settings, burst=args.burst)
