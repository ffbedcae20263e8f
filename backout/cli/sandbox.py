"""`backout sandbox [--port P]`: the local Heroku in the foreground."""

from __future__ import annotations

import argparse

from backout.errors import BadInput
from backout.settings import Settings
from backout_sandbox import server
from backout_sandbox.core.errors import StartError


def add_arguments(p: argparse.ArgumentParser) -> None:
    server.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The token already in the environment, if any, is the one the sandbox accepts.
    try:
        return server.serve(port=args.port, state_path=args.state, token=settings.heroku_api_key,
                            postgres_url=args.postgres_url)
    except StartError as exc:
        raise BadInput(str(exc)) from None
