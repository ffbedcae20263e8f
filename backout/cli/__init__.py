"""The `backout` command: one module per subcommand in this package, each with `add_arguments`
(its flags) and `run` (parse, call library functions that scripts can call too, render).

Only the chosen subcommand's module is imported, so `backout --help` stays fast and a release
phase or worker does not load the sandbox, the demo or the web page. `run` takes the parsed
arguments and the settings and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from types import ModuleType
from typing import NoReturn, Sequence

from backout import __version__, log
from backout.errors import BackoutError
from backout.redact import redact, secrets_from_env

# (name, one-line help, module in this package)
COMMANDS: list[tuple[str, str, str]] = [
    ("release", "release-phase hook: checkpoint, run the migrate command, schedule the health watch", "release"),
    ("worker", "RQ worker with scheduler and health monitor", "worker"),
    ("rollback", "plan and enqueue a rollback of code, config and database", "rollback"),
    ("checkpoints", "list an app's checkpoints, newest first", "checkpoints"),
    ("drill", "restore the newest checkpoint into a scratch database and check it", "drill"),
    ("status", "releases, checkpoints, health and recent rollback jobs of an app", "status"),
    ("health", "probe an app once now and print the verdict", "health"),
    ("check", "the verdict and deploy dangers of the migrations pending against DATABASE_URL, for CI", "check"),
    ("web", "serve the page a team reads during an incident: releases, health chart, rollbacks", "web"),
    ("sandbox", "run the local Heroku (Platform API and Data API) on loopback", "sandbox"),
    ("demo", "play the whole story end to end on this machine", "demo"),
    ("package-rollback", "take back a bad package release: GitHub tag and release, PyPI, changelog, users",
     "package_rollback"),
]


# Exceptions of these libraries mean a service did not answer or refused us: exit 1, one line.
_SERVICE_ERRORS = ("requests.", "urllib3.", "redis.", "psycopg.")


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a usage error in one line that says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def command_module(name: str) -> ModuleType:
    """The module of subcommand `name` (a name from COMMANDS)."""
    module = next(module for command, _, module in COMMANDS if command == name)
    return importlib.import_module(f"{__name__}.{module}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the subcommand it names gets its flags (and its module loaded),
    without, every subcommand does."""
    parser = Parser(
        prog="backout",
        description="Make Heroku deploys undoable: checkpoints, rollback jobs, health-triggered rollback.",
        epilog="Exit status: 0 done, 1 failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"backout {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, help_text, _ in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is None or chosen == name:
            command_module(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.subcommand:
        parser.print_help()
        return 2
    log.setup()
    try:
        from backout import settings as settings_module

        settings = settings_module.load()
        status: int = command_module(args.subcommand).run(args, settings)
        return status
    except BackoutError as exc:
        print(f"backout: {redact(str(exc), secrets_from_env(dict(os.environ)))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("backout: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A service that cannot be reached is a failure to report in a line, not a bug to show
        # with a traceback; anything else is a bug and keeps its traceback.
        if not (isinstance(exc, OSError) or type(exc).__module__.startswith(_SERVICE_ERRORS)):
            raise
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "", secrets_from_env(dict(os.environ)))
        print(f"backout: {args.subcommand} failed: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1


def entry() -> NoReturn:
    """The `backout` program: `main`, then the process ends at once.

    Finalizing the interpreter (tearing down every module psycopg, zstandard and the rest loaded)
    takes about 0.1 s here after the work is done: time a release phase is waited for, spent on
    nothing. So output, logs and Sentry's queue are flushed and the process exits without it,
    unless a thread that is not a daemon still runs (the interpreter would wait for it) or main
    raised (the traceback is printed the usual way).
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    logging.shutdown()
    sentry = sys.modules.get("sentry_sdk")
    if sentry is not None and sentry.get_client().is_active():
        sentry.flush(timeout=5)
    os._exit(status)
