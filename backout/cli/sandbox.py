"""`backout sandbox [--port P]`: the local Heroku in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from backout.cli import tcp_port
from backout.settings import Settings
from backout_sandbox import server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=tcp_port, default=5010, help="port on 127.0.0.1 (default 5010; 0 picks a free one)")
    p.add_argument("--state", metavar="FILE", help="where the sandbox keeps its state (default .backout/sandbox.json)")
    p.add_argument("--postgres-url", metavar="URL",
                   help="server for the add-on databases (default postgres://postgres@127.0.0.1:5432/postgres)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The token already in the environment, if any, is the one the sandbox accepts.
    return server.serve(port=args.port, state_path=Path(args.state) if args.state else None,
                        token=settings.heroku_api_key, postgres_url=args.postgres_url)
