"""What several subcommands share: the `--app` and `--json` arguments, and printing a command's
document as JSON or as text for people."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from backout.output import dump_json


def add_app(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", required=True, help="the Heroku app")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def show(args: argparse.Namespace, document: Any, render: Callable[[Any], str]) -> None:
    """Print the document: as one JSON document with --json, else as `render` writes it for people."""
    if args.json:
        dump_json(document)
    else:
        print(render(document))
