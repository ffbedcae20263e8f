"""A receiver for Heroku app webhook deliveries of dyno events (`api:dyno`).

Heroku signs each delivery with the webhook's secret: `Heroku-Webhook-Hmac-SHA256` is the
base64 HMAC-SHA256 of the raw body. A delivery that is signed right and says a dyno changed state
is published on the monitors' Redis channel, so whichever worker watches that app acts on a
crash at once instead of at its next dyno listing. Anything unsigned or wrongly signed is refused
with 401 and changes nothing.

The signature covers the body only, so a delivery captured once could be sent again as it is. A
delivery is therefore accepted once: its id (the signed body's `webhook_metadata.delivery.id`,
else the `Heroku-Webhook-Id` header) is remembered in Redis, and a delivery published more than
REPLAY_WINDOW seconds away from now is refused, so the ids need only be remembered that long.
Heroku retries a delivery that was not answered 2xx with the same id, so an id is remembered only
once the delivery was acted on. A malformed request gets 400, never a traceback.

The receiver binds every interface (0.0.0.0): on Heroku the router reaches a web dyno on `$PORT`
that way only; the signature, not the address, keeps strangers out.

Run by `backout worker` when BACKOUT_HEALTH_WEBHOOK_PORT is set, and by `backout web` on
`POST /webhooks/dyno` when BACKOUT_HEALTH_WEBHOOK_SECRET is set. On Heroku only web dynos get
traffic, so let the web page receive them (`web: backout web`), or run the worker as the web
process (`web: BACKOUT_HEALTH_WEBHOOK_PORT=$PORT backout worker`), or leave it off: the monitor
lists the dynos every interval anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from backout.health.watches import WatchRegistry
from backout.settings import Settings
from backout.timestamps import parse_time

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
SIGNATURE_HEADER = "Heroku-Webhook-Hmac-SHA256"
DELIVERY_HEADER = "Heroku-Webhook-Id"
# A delivery published further than this from now (either way, for clock skew) is refused.
REPLAY_WINDOW = 300
# Where the ids of accepted deliveries are remembered, for twice the window.
_SEEN_KEY = "backout:dyno-webhook:seen:{}"


def signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the right signature of `body` (compared in constant time)."""
    return header is not None and bool(header) and hmac.compare_digest(signature(secret, body), header.strip())


def dyno_event(payload: Any) -> dict[str, Any] | None:
    """The dyno state change in a delivery, as the monitors' message, or None if it is not one."""
    if not isinstance(payload, dict) or payload.get("resource") != "dyno":
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    app = (data.get("app") or {}).get("name") if isinstance(data.get("app"), dict) else None
    release = data.get("release")
    version = release.get("version") if isinstance(release, dict) else None
    if not isinstance(app, str) or not isinstance(data.get("state"), str):
        return None
    return {"type": "dyno", "app": app, "name": data.get("name"), "state": data["state"],
            "release_version": version if isinstance(version, int) else None, "action": payload.get("action")}


def receive(secret: str, registry: WatchRegistry, connection: redis.Redis, body: bytes, signed: str | None,
            delivery_header: str | None) -> tuple[int, str]:
    """Handle one delivery; returns the status and text to answer with. `backout web` calls this
    too, so the receiver can share the web dyno's port."""
    if not body or len(body) > MAX_BODY:
        return 400, "a webhook delivery has a JSON body of at most 1 MB"
    if not verify(secret, body, signed):
        log.warning("refused a webhook delivery with a missing or wrong %s", SIGNATURE_HEADER)
        return 401, f"missing or wrong {SIGNATURE_HEADER}"
    try:
        payload = json.loads(body)
    except ValueError:
        return 400, "the body is not JSON"
    delivery = delivery_id(payload, delivery_header)
    if delivery is None or not fresh(payload):
        log.warning("refused a webhook delivery without an id or published more than %ds ago", REPLAY_WINDOW)
        return 400, f"a delivery needs its id and a published_at within {REPLAY_WINDOW}s of now"
    key = _SEEN_KEY.format(delivery)
    try:
        if not connection.set(key, 1, nx=True, ex=2 * REPLAY_WINDOW):
            log.warning("refused webhook delivery %s: it was received before (a replay)", delivery)
            return 409, f"delivery {delivery} was received before"
        event = dyno_event(payload)
        if event is not None:
            registry.wake(event)
            log.info("dyno %s of %s is %s", event["name"], event["app"], event["state"])
    except redis.RedisError as exc:
        log.warning("could not take webhook delivery %s: %s", delivery, type(exc).__name__)
        try:
            connection.delete(key)  # so that Heroku's retry of it is taken
        except redis.RedisError:
            pass
        return 503, "cannot reach Redis; deliver again later"
    return 202, "accepted"


def delivery_id(payload: Any, header: str | None) -> str | None:
    """The delivery's id: the signed one in the body when there is one, else the header's."""
    meta = payload.get("webhook_metadata") if isinstance(payload, dict) else None
    delivery = meta.get("delivery") if isinstance(meta, dict) else None
    signed = delivery.get("id") if isinstance(delivery, dict) else None
    if isinstance(signed, str) and signed:
        return signed
    return header.strip() if header and header.strip() else None


def fresh(payload: Any, now: datetime | None = None) -> bool:
    """Whether the delivery says it was published within REPLAY_WINDOW of now."""
    published = payload.get("published_at") if isinstance(payload, dict) else None
    if not isinstance(published, str):
        return False
    try:
        when = parse_time(published)
    except ValueError:
        return False
    return abs(((now or datetime.now(timezone.utc)) - when).total_seconds()) <= REPLAY_WINDOW


def serve(settings: Settings, connection: redis.Redis, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the receiver on a thread; returns the server (`shutdown()` stops it)."""
    secret = settings.health.webhook_secret
    if not secret:
        from backout.errors import ConfigError

        raise ConfigError("BACKOUT_HEALTH_WEBHOOK_SECRET", "is not set but BACKOUT_HEALTH_WEBHOOK_PORT is",
                          "the secret the app webhook signs deliveries with")
    registry = WatchRegistry(connection)
    key: str = secret

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that announces more body than it sends does not hold a thread

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length <= 0 or length > MAX_BODY:
                return self._answer(400, "a webhook delivery has a JSON body of at most 1 MB")
            self._answer(*receive(key, registry, connection, self.rfile.read(length),
                                  self.headers.get(SIGNATURE_HEADER), self.headers.get(DELIVERY_HEADER)))

        def do_GET(self) -> None:  # noqa: N802
            self._answer(200, "backout dyno webhook receiver")

        def _answer(self, status: int, text: str) -> None:
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="backout-dyno-webhook", daemon=True).start()
    return server
