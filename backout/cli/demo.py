"""`backout demo [--keep]`: the whole story end to end on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from backout import demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="leave the sandbox, worker and app running")


def run(args: argparse.Namespace, settings: Any) -> int:
    # The demo builds its own environment: the caller's settings are not used.
    return demo.play(keep=args.keep)
