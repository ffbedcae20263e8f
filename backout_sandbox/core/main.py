"""What both sandboxes' `main()` share: their common arguments, serving in the foreground, and how a
start that cannot be done ends."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Callable, Sequence, TextIO

from backout_sandbox.core.errors import StartError


def parser(prog: str, description: str, port: int, state: str) -> argparse.ArgumentParser:
    """The arguments every sandbox takes: where it listens and where it keeps its state."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, default=port, help=f"port on 127.0.0.1 (default {port}; 0 picks one)")
    parser.add_argument("--state", default=state, help=f"state file (default {state})")
    return parser


def serve_until_stopped(banner: Sequence[str], stop: Callable[[], None], goodbye: str | None = None,
                        out: TextIO | None = None) -> int:
    """Print `banner`, wait for SIGINT or SIGTERM, print `goodbye`, then `stop()`. Returns 0."""
    out = out or sys.stdout
    out.write("".join(f"{line}\n" for line in banner))
    out.flush()
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(1):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if goodbye:
            out.write(f"{goodbye}\n")
            out.flush()
        stop()
    return 0


def run(main: Callable[[], int]) -> int:
    """Run a sandbox's main: a StartError is one line on stderr and exit status 2."""
    try:
        return main()
    except StartError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
