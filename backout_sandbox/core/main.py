"""What both sandboxes' `main()` share: their common arguments, serving in the foreground, and how a
start that cannot be done ends."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Callable, Sequence, TextIO

from backout_sandbox.core.errors import StartError


def add_arguments(parser: argparse.ArgumentParser, port: int, state: str) -> None:
    """The arguments every sandbox takes: where it listens and where it keeps its state."""
    parser.add_argument("--port", type=_tcp_port, default=port, help=f"port on 127.0.0.1 (default {port}; 0 picks a free one)")
    parser.add_argument("--state", metavar="FILE", help=f"where the sandbox keeps its state (default {state})")


def _tcp_port(text: str) -> int:
    """An argparse type: a TCP port number, 0 for a free one."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; give 1-65535, or 0 to pick a free one")
    return int(text)


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


def run(name: str, serve: Callable[[], int]) -> int:
    """Run a sandbox's `serve`: a StartError is one line on stderr and exit status 2, as backout's own
    bad input is."""
    try:
        return serve()
    except StartError as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return 2
