"""`backout web [--host H] [--port P]`: the page a team reads during an incident."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from backout.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    on_dyno = bool(os.environ.get("PORT"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 5000),
                   help="port to listen on (default $PORT, else 5000; 0 picks a free one)")
    p.add_argument("--host", default="0.0.0.0" if on_dyno else "127.0.0.1",
                   help="address to listen on (default 0.0.0.0 when $PORT is set, as on a dyno, else 127.0.0.1)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from backout.web.server import make_server

    server = make_server(settings, args.host, args.port)
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    print(f"backout web on http://{shown}:{port}/ (any user name; the password is BACKOUT_WEB_PASSWORD)", flush=True)
    # Heroku stops a dyno with SIGTERM: stop answering and exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
