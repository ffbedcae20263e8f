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

import base64
import hmac
import logging
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from backout.errors import BadInput
from backout.redact import mask_url
from backout_sandbox import data_routes, platform_routes
from backout_sandbox.addons import AddOns
from backout_sandbox.databases import Databases
from backout_sandbox.dynos import Backoff
from backout_sandbox.faults import Faults
from backout_sandbox.platform import Platform
from backout_sandbox.ratelimit import RateLimiter
from backout_sandbox.routing import ApiError, Request, Response, Router
from backout_sandbox.signed_urls import Signer
from backout_sandbox.store import Store, new_id
from backout_sandbox.transfers import Transfers

log = logging.getLogger(__name__)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
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
            route, params = self.router.match(req.method, req.path)
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
        except ApiError as exc:
            response = Response(exc.status, exc.body(), exc.headers)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "backout-sandbox"
    timeout = 60  # an idle keep-alive connection is closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the client's
        # delayed ACK hold every answer back 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)

    def _serve(self) -> None:
        path, query = Request.parse_target(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        req = Request(self.command, path, query, self.headers, self.rfile, length)
        response = self.server.api.handle(req)  # type: ignore[attr-defined]
        req.drain()
        try:
            self.send_response(response.status)
            if response.stream is None:
                payload = response.payload()
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            chunked = "Content-Length" not in response.headers
            for key, value in response.headers.items():
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in response.stream:
                if chunked:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


@dataclass
class Sandbox:
    """A running sandbox. `env` holds what a client needs to talk to it."""

    url: str
    port: int
    token: str
    faults: Faults
    state_path: Path
    work_dir: Path
    _server: ThreadingHTTPServer = field(repr=False)
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
        route, _ = self._api.router.match(method, path)
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
        self._server.shutdown()
        self._server.server_close()
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
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    except OSError as exc:
        raise BadInput(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pass --port 0 for a free port "
                       "or stop what uses it") from None
    server.daemon_threads = True
    bound = server.server_address[1]
    url = f"http://127.0.0.1:{bound}"
    token = token or str(secrets.token_hex(20))
    signer = Signer(store.data["signing_key"], url)
    faults = Faults()
    limiter = RateLimiter(rate_limit, rate_window)
    databases = Databases(postgres_url, store.data["pitr"], work_dir, store.save)
    platform = Platform(store, work_dir, signer, faults, release_timeout=release_timeout, backoff=backoff,
                        stop_timeout=stop_timeout, boot_timeout=boot_timeout)
    addons = AddOns(platform, databases)
    transfers = Transfers(addons, work_dir)
    router = Router()
    platform_routes.register(router, platform, addons, limiter)
    data_routes.register(router, platform, transfers, faults)
    api = Api(router, token, limiter, faults)
    server.api = api  # type: ignore[attr-defined]
    sandbox = Sandbox(url, bound, token, faults, state_path, work_dir, server, api, platform, addons, transfers, databases)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="sandbox http",
                     daemon=True).start()
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
        raise BadInput(f"the sandbox cannot reach PostgreSQL at {mask_url(url)} ({str(exc).strip()}); start it "
                       "(scripts/setup does) or give another server with --postgres-url") from None


def serve(port: int = 5010, state_path: Path | None = None, token: str | None = None,
          postgres_url: str | None = None) -> int:
    """Serve in the foreground until SIGINT or SIGTERM, then stop the dynos (`backout sandbox`)."""
    given = token
    sandbox = start(port=port, state_path=state_path or DEFAULT_STATE, token=given,
                    postgres_url=postgres_url or DEFAULT_POSTGRES_URL)
    out = sys.stdout
    out.write(f"backout sandbox: the Platform API and Data API on {sandbox.url}\n")
    out.write(f"state: {sandbox.state_path}   logs, slugs, backups: {sandbox.work_dir}\n\n")
    out.write("Point backout (or any Heroku API client) at it:\n")
    out.write(f"  export BACKOUT_HEROKU_API_URL={sandbox.url}\n")
    out.write(f"  export BACKOUT_HEROKU_DATA_URL={sandbox.url}\n")
    if given:
        out.write("  # HEROKU_API_KEY: the token already in your environment is the one the sandbox accepts\n")
    else:
        out.write(f"  export HEROKU_API_KEY={sandbox.token}\n")
    out.write("and the Heroku CLI (heroku ps, logs, releases, config, addons, pg:info, rollback, ...):\n")
    out.write(f"  export HEROKU_HOST={sandbox.url}\n")
    out.write(f"  export HEROKU_DATA_HOST={urlsplit(sandbox.url).hostname}\n")
    out.write("\nCtrl-C stops it (and its dynos); the state file keeps apps and releases for the next start.\n")
    out.flush()
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(1):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        out.write("backout sandbox: stopping dynos\n")
        out.flush()
        sandbox.stop()
    return 0
