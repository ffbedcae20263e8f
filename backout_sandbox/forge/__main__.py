"""`python -m backout_sandbox.forge --port 5011 --demo DIR`: serve the forge in the foreground."""

from __future__ import annotations

import argparse
from typing import Sequence

from backout_sandbox.core.main import add_arguments, run, serve_until_stopped
from backout_sandbox.forge.demo import demo_package
from backout_sandbox.forge.server import DEFAULT_PORT, DEFAULT_STATE, start


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run("forge sandbox", lambda: _serve(args.port, args.state or DEFAULT_STATE, args.demo))


def _parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m backout_sandbox.forge",
                                    description="Serve the GitHub REST subset and PyPI JSON API on loopback.")
    add_arguments(found, DEFAULT_PORT, DEFAULT_STATE)
    found.add_argument("--demo", metavar="DIR", help="also create a demo package with a bad release in DIR")
    return found


def _serve(port: int, state: str, demo_dir: str | None) -> int:
    forge = start(port=port, state_path=state)
    banner = [f"forge sandbox on {forge.url} (state {state})",
              f"  export BACKOUT_GITHUB_API_URL={forge.url} BACKOUT_PYPI_URL={forge.url}"]
    if demo_dir:
        try:
            demo = demo_package(forge, demo_dir)
        except BaseException:
            forge.stop()
            raise
        banner += [f"  export GITHUB_TOKEN={demo['token']}",
                   f"  backout package-rollback --repo {demo['repo']} --bad {demo['bad']} --checkout "
                   f"{demo['checkout']} --dry-run",
                   f"  yank on the sandbox's PyPI: curl -X POST {forge.url}/_sandbox/pypi/{demo['project']}/"
                   f"{demo['bad']}/yank -d '{{\"reason\": \"broken\"}}'"]
    return serve_until_stopped(banner, forge.stop)


if __name__ == "__main__":
    raise SystemExit(main())
