"""The sandbox's HTTP server: both APIs on one loopback port, Heroku's auth, errors and rate limit.

    sandbox = start(port=0, state_path=tmp / "sandbox.json", work_dir=tmp / "sandbox")
    ... BACKOUT_HEROKU_API_URL=sandbox.url BACKOUT_HEROKU_DATA_URL=sandbox.url HEROKU_API_KEY=sandbox.token
    sandbox.faults.script(503, times=2)
    sandbox.stop()

Every API request needs `Authorization: Bearer <token>` (a wrong or missing one gets 401
`unauthorized`); Platform API requests also need Heroku's `Accept: application/vnd.heroku+json;
version=3` (400 `missing_version` without it). Each token has a budget of requests (Heroku: 4500,
refilled over an hour); past it, 429 `rate_limit`. Every answer carries `Request-Id` and
`RateLimit-Remaining`. Scripted faults are applied before anything else.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg

from backout_sandbox import data_routes, platform_routes
from backout_sandbox.addons import AddOns
from backout_sandbox.core import main as core_main
from backout_sandbox.core.errors import StartError
from backout_sandbox.core.messages import HttpError, Refused, Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.core.server import HttpServer
from backout_sandbox.core.store import new_id
from backout_sandbox.databases import Databases
from backout_sandbox.dynos import Backoff
from backout_sandbox.faults import Faults
from backout_sandbox.platform import Platform
from backout_sandbox.ratelimit import RateLimiter
from backout_sandbox.routing import ApiError, refusal
from backout_sandbox.signed_urls import Signer
from backout_sandbox.store import Store
from backout_sandbox.transfers import Transfers

log = logging.getLogger(__name__)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PORT = 5010
DEFAULT_STATE = Path(".backout/sandbox.json")
VERSION_HINT = ("Please specify a version along with Heroku's API MIME type. For example, "
                "`Accept: application/vnd.heroku+json; version=3`.")


class Api:
    """Turns a request into a response: faults, routing, auth, version, rate limit, handler, errors."""

    def __init__(self, router: Router, token: str, limiter: RateLimiter, faults: Faults) -> None:
        self.router = router
        self.token = token
        self.limiter = limiter
        self.faults = faults
        # The requests served, newest last: method, path, status (the last 10,000 of them).
        self.log: deque[dict[str, Any]] = deque(maxlen=10_000)

    def handle(self, req: Request) -> Response:
        token = None
        rule = None
        try:
            if not req.path.startswith("/sandbox/"):
                rule = self.faults.take(req.method, req.path)
                if rule is not None:
                    time.sleep(rule.delay)
                    if rule.status is not None and not rule.after:
                        raise rule.error()
            route, params = self.router.match(req.method, req.raw_path)
            if not route.public:
                token = req.token = self._authenticate(req)
                if route.schema_href is not None:
                    self._check_version(req)
                if req.path != "/account/rate-limits" and not req.path.startswith("/sandbox/"):
                    allowed, _ = self.limiter.spend(token)
                    if not allowed:
                        raise ApiError(429, "rate_limit", "Your account reached the API rate limit\n"
                                       "Please wait a few minutes before making new requests")
            response = route.handler(req, **params)
            if rule is not None and rule.after and rule.status is not None:
                raise rule.error()
        except Refused as exc:
            response = refusal(exc).response()
        except HttpError as exc:
            response = exc.response()
        except Exception:
            log.exception("sandbox: %s %s failed", req.method, req.path)
            response = Response(500, {"id": "internal_server_error", "message": "Internal server error."})
        response.headers["Request-Id"] = new_id()
        response.headers["RateLimit-Remaining"] = str(self.limiter.remaining(token or ""))
        self.log.append({"method": req.method, "path": req.path, "status": response.status})
        return response

    def _authenticate(self, req: Request) -> str:
        header = req.headers.get("Authorization") or ""
        scheme, _, credentials = header.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                # The Heroku CLI's netrc style: any user, the token as password.
                given = base64.b64decode(credentials.strip()).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ApiError(401, "unauthorized", "Invalid credentials provided.")
        return given

    def _check_version(self, req: Request) -> None:
        accept = (req.headers.get("Accept") or "").replace(" ", "").lower()
        if "application/vnd.heroku+json;version=3" not in accept:
            raise ApiError(400, "missing_version", VERSION_HINT)


@dataclass
class Sandbox:
    """A running sandbox. `env` holds what a client needs to talk to it."""

    url: str
    port: int
    token: str
    faults: Faults
    state_path: Path
    work_dir: Path
    _server: HttpServer = field(repr=False)
    _api: Api = field(repr=False)
    _platform: Platform = field(repr=False)
    _addons: AddOns = field(repr=False)
    _transfers: Transfers = field(repr=False)
    _databases: Databases = field(repr=False)
    _stopped: bool = False

    @property
    def env(self) -> dict[str, str]:
        return {"BACKOUT_HEROKU_API_URL": self.url, "BACKOUT_HEROKU_DATA_URL": self.url, "HEROKU_API_KEY": self.token}

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The API requests served (the last 10,000), oldest first: {"method", "path", "status"}."""
        return list(self._api.log)

    @property
    def routes(self) -> list[tuple[str, str, str | None]]:
        """Every route served: (method, path pattern, the official schema link's href or None)."""
        return [(r.method, r.pattern, r.schema_href) for r in self._api.router.routes]

    def match(self, method: str, path: str) -> tuple[str, str, str | None]:
        """The route that serves a request (raises ApiError for none)."""
        try:
            route, _ = self._api.router.match(method, path)
        except Refused as exc:
            raise refusal(exc) from None
        return route.method, route.pattern, route.schema_href

    def log_path(self, app_name: str) -> Path:
        """The app's log: dyno output, release phases, router and dyno state changes."""
        return self.work_dir / "logs" / f"{app_name}.log"

    def stop(self, drop_databases: bool = False) -> None:
        """Stop serving and stop every dyno, release phase and transfer. The state file and the
        add-on databases stay for the next start, unless `drop_databases`, which drops them all."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stop()
        self._addons.stop()
        self._transfers.stop()
        self._platform.stop()
        if drop_databases:
            self._addons.drop_all()
        self._databases.stop(remove_pitr=drop_databases)
        self._platform.store.save()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(port: int = 0, state_path: Path | str = DEFAULT_STATE, token: str | None = None,
          postgres_url: str = DEFAULT_POSTGRES_URL, work_dir: Path | str | None = None, *,
          rate_limit: int = 4500, rate_window: float = 3600.0, release_timeout: float = 3600.0,
          stop_timeout: float = 10.0, boot_timeout: float = 60.0, backoff: Backoff | None = None) -> Sandbox:
    """Start a sandbox on 127.0.0.1:`port` (0: a free one) in background threads.

    `state_path` keeps apps, releases, config, add-ons and transfers across restarts; `work_dir`
    (default: `sandbox/` beside the state file) holds slugs, logs, release output and backups.
    `token` is the only token accepted (default: a new random one). `postgres_url` is the server
    where essential/mini/basic add-on databases are made. The other keywords tune what tests need
    faster than Heroku: the per-token request budget, release phase and dyno stop/boot timeouts,
    and the crash restart backoff."""
    state_path = Path(state_path)
    work_dir = Path(work_dir) if work_dir is not None else state_path.parent / "sandbox"
    _check_postgres(postgres_url)
    store = Store(state_path)
    api = Api(Router(), token or str(secrets.token_hex(20)), RateLimiter(rate_limit, rate_window), Faults())
    server = HttpServer(api.handle, port, name="backout-sandbox")
    url = server.url
    signer = Signer(store.data["signing_key"], url)
    faults = api.faults
    databases = Databases(postgres_url, store.data["pitr"], work_dir, store.save)
    platform = Platform(store, work_dir, signer, faults, release_timeout=release_timeout, backoff=backoff,
                        stop_timeout=stop_timeout, boot_timeout=boot_timeout)
    addons = AddOns(platform, databases)
    transfers = Transfers(addons, work_dir)
    platform_routes.register(api.router, platform, addons, api.limiter)
    data_routes.register(api.router, platform, transfers, api.faults)
    sandbox = Sandbox(url, server.port, api.token, api.faults, state_path, work_dir, server, api, platform, addons,
                      transfers, databases)
    server.start()
    try:
        addons.start()
        transfers.start()
        platform.start()
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


def _check_postgres(url: str) -> None:
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        raise StartError(f"the sandbox cannot reach PostgreSQL at {_without_password(url)} ({str(exc).strip()}); "
                         "start it (scripts/setup does) or give another server with --postgres-url") from None


def _without_password(url: str) -> str:
    """The URL with its password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`backout sandbox`'s and `python -m backout_sandbox`'s arguments."""
    core_main.add_arguments(parser, DEFAULT_PORT, str(DEFAULT_STATE))
    parser.add_argument("--postgres-url", metavar="URL",
                        help=f"server for the add-on databases (default {DEFAULT_POSTGRES_URL})")


def serve(port: int = DEFAULT_PORT, state_path: Path | str | None = None, token: str | None = None,
          postgres_url: str | None = None) -> int:
    """Serve in the foreground until SIGINT or SIGTERM, then stop the dynos (`backout sandbox`).
    `token`: the one the sandbox accepts (None: a new one, printed)."""
    sandbox = start(port=port, state_path=state_path or DEFAULT_STATE, token=token,
                    postgres_url=postgres_url or DEFAULT_POSTGRES_URL)
    banner = [f"backout sandbox: the Platform API and Data API on {sandbox.url}",
              f"state: {sandbox.state_path}   logs, slugs, backups: {sandbox.work_dir}", "",
              "Point backout (or any Heroku API client) at it:",
              f"  export BACKOUT_HEROKU_API_URL={sandbox.url}",
              f"  export BACKOUT_HEROKU_DATA_URL={sandbox.url}",
              "  # HEROKU_API_KEY: the token already in your environment is the one the sandbox accepts" if token
              else f"  export HEROKU_API_KEY={sandbox.token}", "",
              "Ctrl-C stops it (and its dynos); the state file keeps apps and releases for the next start."]
    return core_main.serve_until_stopped(banner, sandbox.stop, goodbye="backout sandbox: stopping dynos")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m backout_sandbox`: `backout sandbox` without backout. The token is HEROKU_API_KEY's, if set."""
    parser = argparse.ArgumentParser(prog="python -m backout_sandbox",
                                     description="Serve the local Heroku (Platform API and Data API) on loopback.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return core_main.run("backout sandbox", lambda: serve(args.port, args.state, os.environ.get("HEROKU_API_KEY"),
                                                          args.postgres_url))
