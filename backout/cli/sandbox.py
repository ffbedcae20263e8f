"""`backout sandbox [--port P]`: the local Heroku in the foreground; `backout sandbox create A` and
`backout sandbox deploy --app A DIR`: an app and a release in it, through its Platform API."""

from __future__ import annotations

import argparse
from pathlib import Path

from backout import deploy
from backout.errors import BadInput
from backout.heroku import HerokuClient
from backout.settings import HEROKU_API_URL, Settings
from backout_sandbox import server
from backout_sandbox.core.errors import StartError


def add_arguments(p: argparse.ArgumentParser) -> None:
    server.add_arguments(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION",
                               description="without an action, the sandbox serves in the foreground")
    create = actions.add_parser("create", help="create an app, with add-ons (heroku apps:create, addons:create)",
                                description="Create an app in the running sandbox, and its add-ons.")
    create.add_argument("app", metavar="A", help="the app's name")
    create.add_argument("--addon", action="append", default=[], metavar="SERVICE:PLAN",
                        help="an add-on to create with it, e.g. heroku-postgresql:essential-0 (repeatable)")
    deploy_parser = actions.add_parser(
        "deploy", help="deploy a directory with its Procfile as a new release (the sandbox's git push heroku main)",
        description="Pack DIR (with its Procfile) into a slug, release it, and follow the release phase.")
    deploy_parser.add_argument("--app", required=True, metavar="A", help="the app")
    deploy_parser.add_argument("directory", metavar="DIR", help="the app's directory, with its Procfile")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action is None:
        # The token already in the environment, if any, is the one the sandbox accepts.
        try:
            return server.serve(port=args.port, state_path=args.state, token=settings.heroku_api_key,
                                postgres_url=args.postgres_url)
        except StartError as exc:
            raise BadInput(str(exc)) from None
    if settings.heroku_api_url == HEROKU_API_URL:
        raise BadInput("BACKOUT_HEROKU_API_URL is not set, so this would go to Heroku itself; export the lines "
                       "`backout sandbox` prints (BACKOUT_HEROKU_API_URL, BACKOUT_HEROKU_DATA_URL, HEROKU_API_KEY)")
    with HerokuClient.from_settings(settings) as client:
        if args.action == "create":
            deploy.create_app(client, args.app, args.addon, _step)
            return 0
        release = deploy.deploy(client, args.app, Path(args.directory), _step, _release_line)
        version, status = release["version"], release["status"]
        if status != "succeeded":
            _step(f"v{version} {status}: the release phase did not succeed, so {args.app} stays on its current "
                  f"release (heroku releases:output v{version} -a {args.app} shows it again)")
            return 1
        web_url = client.app_info(args.app).get("web_url")
        _step(f"v{version} {status}" + (f": {web_url} deployed" if web_url else ""))
        return 0


def _step(line: str) -> None:
    print(f"-----> {line}", flush=True)


def _release_line(line: str) -> None:
    print(f"       {line}", flush=True)
