"""`backout web`'s HTTP server: the standard library's threading server, one request per thread.

Every answer carries the security headers (a Content-Security-Policy that allows no script and no
inline style, no framing, nosniff, no referrer, no caching; HSTS when Heroku's router says the
request came over TLS). A request that Heroku's router says came over plain HTTP is redirected to
HTTPS before anything else, so a browser never sends the password in the clear. Every page needs
basic auth; the only exception is the dyno webhook (`POST /webhooks/dyno`), which proves itself
with its HMAC signature instead, so the receiver can share the web dyno's port.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg

from backout import ledger, redis_conn
from backout.errors import BackoutError, BadInput, first_line
from backout.health import dyno_webhook
from backout.health.watches import WatchRegistry
from backout.heroku import HerokuClient
from backout.ledger.records import LedgerConnection
from backout.redact import redact
from backout.settings import Settings
from backout.web import actions, auth
from backout.web.facts import RELEASES_SHOWN, apps, gather
from backout.web.views import Views, app_path

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/dyno"
MAX_FORM = 16 * 1024
RELEASES_CACHE = 10.0  # seconds: a page refreshing every 5 s in several browsers asks Heroku once
API_TIMEOUT = 5.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000"
_APP_PATH = re.compile(r"/apps/([^/]+)(/rollback)?")
_REQUEST_ID = re.compile(r"rb_[0-9A-Z]{26}")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class WebApp:
    """What `backout web` answers, apart from the socket: routing, authentication and the pages."""

    def __init__(self, settings: Settings, webhook: Callable[[bytes, Any], tuple[int, str]] | None = None) -> None:
        settings.require("BACKOUT_DATABASE_URL")
        self.settings = settings
        self.password = auth.check_password(settings.web.password)
        self.csrf_key = auth.csrf_key(self.password)
        self.views = Views([*settings.secrets(), self.password], actions=settings.web.actions)
        self.webhook = webhook
        self.throttle = auth.Throttle()
        self._releases: dict[str, tuple[float, list[dict[str, Any]] | None, str | None]] = {}
        self._lock = threading.Lock()

    def handle(self, method: str, target: str, headers: Any, body: bytes = b"", peer: str = "") -> Response:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        proto = (headers.get("X-Forwarded-Proto") or "").lower()
        host = headers.get("Host")
        if proto == "http" and host:
            return Response(308, b"", headers={"Location": f"https://{host}{target}"})
        response = self._route(method, path, query, headers, body, peer)
        response.headers.update(SECURITY_HEADERS)
        if proto == "https":
            response.headers["Strict-Transport-Security"] = HSTS
        return response

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes,
               peer: str) -> Response:
        if path == WEBHOOK_PATH and method == "POST" and self.webhook is not None:
            status, text = self.webhook(body, headers)
            return Response(status, (text + "\n").encode(), "text/plain; charset=utf-8")
        client = auth.client_address(headers.get("X-Forwarded-For"), peer)
        if self.throttle.blocked(client):
            return Response(429, b"too many wrong passwords; try again in a minute\n", "text/plain; charset=utf-8",
                            {"Retry-After": str(int(auth.FAILURE_WINDOW))})
        user = auth.basic_user(headers.get("Authorization"), self.password)
        if user is None:
            if headers.get("Authorization"):
                self.throttle.failed(client)
            return Response(401, b"authentication required\n", "text/plain; charset=utf-8",
                            {"WWW-Authenticate": f'Basic realm="{auth.REALM}", charset="UTF-8"'})
        if method == "GET" and path == "/static/backout.css":
            return Response(200, _stylesheet(), "text/css; charset=utf-8")
        if method == "GET" and path == "/":
            return self._with_ledger(lambda conn: self._page(self.views.index(apps(conn))))
        match = _APP_PATH.fullmatch(path)
        if match is None:
            return self._message(404, "not found", "There is no page here.", "/")
        app, rollback = unquote(match.group(1)), bool(match.group(2))
        if not rollback and method == "GET":
            return self._with_ledger(lambda conn: self._app_page(conn, app, query))
        if not rollback:
            return self._message(405, "method not allowed", "This page is only read.", "/")
        if method == "GET":  # the plan is there to read whether or not the page may act on it
            return self._plan(app, _one(query, "to"), _one(query, "db") or "none", user)
        if method == "POST" and not self.settings.web.actions:
            return self._message(403, "actions are off", "Rolling back from the page is off; set "
                                 "BACKOUT_WEB_ACTIONS=true to allow it, or use `backout rollback`.", _back(app))
        if method == "POST":
            return self._request(app, body, headers, user)
        return self._message(405, "method not allowed", "GET shows the plan, POST asks for the rollback.", _back(app))

    # --- pages -----------------------------------------------------------------------------------

    def _app_page(self, conn: LedgerConnection, app: str, query: dict[str, list[str]]) -> Response:
        heroku_releases, note = self._heroku_releases(app)
        health = self.settings.health
        facts = gather(conn, app, heroku_releases, note,
                       watch_horizon=health.grace + health.window + 10 * health.interval)
        if not facts.releases and not facts.rollbacks and heroku_releases is None:
            return self._message(404, "unknown app", f"The ledger has nothing about {app}.", "/")
        requested = _one(query, "requested")
        notice = None
        if requested and _REQUEST_ID.fullmatch(requested):
            notice = f"rollback {requested} requested: the worker carries it out; this page follows it"
        return self._page(self.views.app_page(facts, notice))

    def _plan(self, app: str, to: str, db: str, user: str) -> Response:
        plan, refusal = actions.preview(self.settings, app, to, db)
        csrf = auth.csrf_token(self.csrf_key, user, app) if self.settings.web.actions else ""
        return self._page(self.views.plan_page(app, to, db, plan, refusal, csrf), 200 if plan else 409)

    def _request(self, app: str, body: bytes, headers: Any, user: str) -> Response:
        origin = headers.get("Origin")
        if origin and urlsplit(origin).netloc != headers.get("Host"):
            return self._message(403, "refused", "The form was sent from another site.", _back(app))
        if len(body) > MAX_FORM:
            return self._message(413, "refused", "The form is too large.", _back(app))
        form = parse_qs(body.decode("utf-8", "replace"))
        if not auth.csrf_valid(self.csrf_key, _one(form, "csrf"), user, app):
            return self._message(403, "refused", "The form has expired or did not come from this page; open "
                                 "the plan again.", _back(app))
        to, db = _one(form, "to"), _one(form, "db") or "none"
        try:
            request_id = actions.request(self.settings, app, to, db, _one(form, "confirm"), user)
        except BadInput as exc:
            return self._message(400, "not rolled back", str(exc), _back(app))
        except BackoutError as exc:
            return self._message(503, "not rolled back", str(exc), _back(app))
        return Response(303, b"", headers={"Location": f"{_back(app)}?requested={request_id}#{request_id}"})

    # --- plumbing --------------------------------------------------------------------------------

    def _with_ledger(self, render: Callable[[psycopg.Connection[Any]], Response]) -> Response:
        assert self.settings.ledger_url is not None
        try:
            conn = ledger.connect(self.settings.ledger_url)
        except BackoutError as exc:
            return self._message(503, "the ledger does not answer", str(exc))
        try:
            return render(conn)
        except psycopg.Error as exc:
            return self._message(503, "the ledger does not answer", first_line(exc))
        finally:
            conn.close()

    def _heroku_releases(self, app: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Heroku's newest releases of `app` (cached briefly), or None and why not."""
        if not self.settings.heroku_api_key:
            return None, "HEROKU_API_KEY is not set: releases are shown from the ledger alone, without who made them"
        now = time.monotonic()
        with self._lock:
            cached = self._releases.get(app)
        if cached and now - cached[0] < RELEASES_CACHE:
            return cached[1], cached[2]
        try:
            with HerokuClient(self.settings.heroku_api_key, self.settings.heroku_api_url,
                              self.settings.heroku_data_url, timeout=API_TIMEOUT) as client:
                found: list[dict[str, Any]] | None = client.recent_releases(app, RELEASES_SHOWN)
            note = None
        except BackoutError as exc:  # an API error, or Heroku not answering
            found, note = None, f"Heroku's release list is unavailable ({first_line(exc)}); shown from the ledger alone"
        with self._lock:
            self._releases[app] = (now, found, note)
        return found, note

    def _page(self, html: str, status: int = 200) -> Response:
        return Response(status, html.encode())

    def _message(self, status: int, title: str, text: str, back: str | None = None) -> Response:
        return Response(status, self.views.message(title, text, back).encode())


def make_server(settings: Settings, host: str, port: int) -> ThreadingHTTPServer:
    """`backout web` on host:port (0 picks a free port), with the dyno webhook receiver when
    BACKOUT_HEALTH_WEBHOOK_SECRET is set; the caller runs serve_forever. ConfigError (exit 2)
    without a password."""
    app = WebApp(settings)
    secret = settings.health.webhook_secret
    if secret:
        settings.require("REDIS_URL")
        assert settings.redis_url is not None
        connection = redis_conn.connect(settings.redis_url)
        registry = WatchRegistry(connection)
        app.webhook = lambda body, headers: dyno_webhook.receive(
            secret, registry, connection, body, headers.get(dyno_webhook.SIGNATURE_HEADER),
            headers.get(dyno_webhook.DELIVERY_HEADER))
    return serve(app, host, port)


def serve(app: WebApp, host: str, port: int) -> ThreadingHTTPServer:
    """A server for `app` on host:port; the caller runs serve_forever."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "backout"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(app.handle("GET", self.path, self.headers, peer=self.client_address[0]))

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > 1024 * 1024:
                self._answer(Response(413, b"too large\n", "text/plain; charset=utf-8"))
                return
            self._answer(app.handle("POST", self.path, self.headers, self.rfile.read(length), self.client_address[0]))

        def _answer(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            # The request line only: no headers, so never the Authorization header.
            log.info("%s %s", self.address_string(), redact(format % args, app.views.secrets))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0].strip()


def _back(app: str) -> str:
    return app_path(app)


def _stylesheet() -> bytes:
    return resources.files("backout.web").joinpath("backout.css").read_bytes()
