"""The `backout` command: parses arguments and calls library functions that scripts can call too.

Each subcommand names its handler as "module:function"; the module is imported only when that
subcommand runs, so `backout --help` stays fast and a worker does not load the sandbox.
A handler takes the parsed arguments and the settings and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from . import __version__, log
from .errors import BackoutError
from .redact import redact, secrets_from_env

Handler = Callable[[argparse.Namespace, object], int]


def _release(p: argparse.ArgumentParser) -> str:
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                   help="the migrate command to run after the checkpoint, after `--`")
    return "backout.hooks.release:command"


def _worker(p: argparse.ArgumentParser) -> str:
    p.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    return "backout.worker.main:command"


def _rollback(p: argparse.ArgumentParser) -> str:
    p.add_argument("--app", required=True, help="the Heroku app")
    p.add_argument("--to", required=True, metavar="T",
                   help="vNN, a checkpoint id, or `previous` (the last checkpoint verified healthy)")
    p.add_argument("--db", choices=("none", "down", "restore"), default="none",
                   help="what to do with the database (default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--confirm", metavar="APP", help="the app's name, required for a database step")
    p.add_argument("--wait", action="store_true", help="follow the job to the end; exit 1 if it fails")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return "backout.rollback:command"


def _checkpoints(p: argparse.ArgumentParser) -> str:
    p.add_argument("--app", required=True, help="the Heroku app")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return "backout.checkpoints:command"


def _status(p: argparse.ArgumentParser) -> str:
    p.add_argument("--app", required=True, help="the Heroku app")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return "backout.status:command"


def _health(p: argparse.ArgumentParser) -> str:
    p.add_argument("--app", required=True, help="the Heroku app")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return "backout.health:command"


def _sandbox(p: argparse.ArgumentParser) -> str:
    p.add_argument("--port", type=int, default=5010, help="port on 127.0.0.1 (default 5010; 0 picks a free one)")
    p.add_argument("--state", metavar="FILE", help="where the sandbox keeps its state (default .backout/sandbox.json)")
    p.add_argument("--postgres-url", metavar="URL",
                   help="server for the add-on databases (default postgres://postgres@127.0.0.1:5432/postgres)")
    return "backout.sandbox.server:command"


def _demo(p: argparse.ArgumentParser) -> str:
    p.add_argument("--keep", action="store_true", help="leave the sandbox, worker and app running")
    return "backout.demo:command"


def _package_rollback(p: argparse.ArgumentParser) -> str:
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the GitHub repository of the package")
    p.add_argument("--bad", required=True, metavar="V", help="the bad version, as PyPI shows it (1.2.3)")
    p.add_argument("--good", metavar="V",
                   help="the version to go back to (default: the newest older one in the changelog and GitHub "
                        "releases that is not yanked or rolled back)")
    p.add_argument("--reason", help="why the bad version is withdrawn (goes into the changelog, notes and issue)")
    p.add_argument("--tag-prefix", metavar="P", help="what comes before the version in tags (default: detected; v)")
    p.add_argument("--version-file", metavar="PATH", help="the file holding the version (default: detected)")
    p.add_argument("--changelog", metavar="PATH", help="the changelog (default: CHANGELOG.md, CHANGES.md, ...)")
    p.add_argument("--checkout", metavar="PATH",
                   help="a clone of the repository to work in (default: a temporary clone made with GITHUB_TOKEN)")
    p.add_argument("--pypi-project", metavar="NAME", help="the project on PyPI (default: from pyproject.toml/setup.cfg)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--confirm", metavar="OWNER/NAME", help="the repository again, required to delete its tag and release")
    p.add_argument("--recheck", action="store_true", help="only re-check PyPI for the yank and record it")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return "backout.package_rollback.cli:command"


COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], str]]] = [
    ("release", "release-phase hook: checkpoint, run the migrate command, schedule the health watch", _release),
    ("worker", "RQ worker with scheduler and health monitor", _worker),
    ("rollback", "plan and enqueue a rollback of code, config and database", _rollback),
    ("checkpoints", "list an app's checkpoints, newest first", _checkpoints),
    ("status", "releases, checkpoints, health and recent rollback jobs of an app", _status),
    ("health", "probe an app once now and print the verdict", _health),
    ("sandbox", "run the local Heroku (Platform API and Data API) on loopback", _sandbox),
    ("demo", "play the whole story end to end on this machine", _demo),
    ("package-rollback", "take back a bad package release: GitHub tag and release, PyPI, changelog, users",
     _package_rollback),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backout",
        description="Make Heroku deploys undoable: checkpoints, rollback jobs, health-triggered rollback.",
        epilog="Exit status: 0 done, 1 failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"backout {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name, help_text, add in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=add(p))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    log.setup()
    try:
        from . import settings as settings_module

        settings = settings_module.load()
        module_name, function_name = args.handler.split(":")
        handler: Handler = getattr(importlib.import_module(module_name), function_name)
        return handler(args, settings)
    except BackoutError as exc:
        import os

        print(f"backout: {redact(str(exc), secrets_from_env(dict(os.environ)))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("backout: interrupted", file=sys.stderr)
        return 130
