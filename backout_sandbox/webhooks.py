"""App webhook deliveries: real HTTP POSTs signed the way Heroku signs them.

Every event an app webhook subscribed to (`api:release`, `api:dyno`, `api:formation`, `api:addon`,
`api:addon-attachment`, `api:app`) is POSTed to its URL as Heroku's JSON envelope, with
`Heroku-Webhook-Hmac-SHA256` = base64(HMAC-SHA256(secret, body)). A `notify` webhook gets one
attempt; a `sync` one is retried with growing delays until it answers 2xx or the attempts run out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import requests

from backout_sandbox.core.store import new_id, now

log = logging.getLogger(__name__)

VERSION = "application/vnd.heroku+json; version=3"


def signature(secret: str, body: bytes) -> str:
    """The value of Heroku-Webhook-Hmac-SHA256 for a body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class Webhooks:
    def __init__(self, subscribers: Callable[[str, str], list[dict[str, Any]]], actor: dict[str, str],
                 sync_attempts: int = 5, retry_delay: float = 0.5, timeout: float = 5.0) -> None:
        self._subscribers = subscribers  # (app id, entity) -> webhooks subscribed
        self._actor = actor
        self._sync_attempts = sync_attempts
        self._retry_delay = retry_delay
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")
        self._stopped = threading.Event()

    def emit(self, app_id: str, entity: str, action: str, data: dict[str, Any],
             previous: dict[str, Any] | None = None) -> None:
        """Queue the event for every webhook of the app that includes `entity`; returns at once."""
        if self._stopped.is_set():
            return
        event = {"id": new_id(), "entity": entity, "action": action, "data": data,
                 "previous": previous or {}, "at": now()}
        for hook in self._subscribers(app_id, entity):
            try:
                self._pool.submit(self._deliver, dict(hook), event)
            except RuntimeError:  # the pool is shut down: the sandbox is stopping
                return

    def stop(self) -> None:
        self._stopped.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, hook: dict[str, Any], event: dict[str, Any]) -> None:
        delivery_id = new_id()
        attempts = self._sync_attempts if hook.get("level") == "sync" else 1
        for attempt in range(attempts):
            if self._stopped.is_set():
                return
            body = json.dumps({
                "id": event["id"],
                "action": event["action"],
                "actor": self._actor,
                "created_at": event["at"],
                "data": event["data"],
                "previous_data": event["previous"],
                "published_at": now(),
                "resource": event["entity"].split(":", 1)[1],
                "sequence": None,
                "updated_at": event["at"],
                "version": VERSION,
                "webhook_metadata": {
                    "attempt": {"id": new_id()},
                    "delivery": {"id": delivery_id},
                    "event": {"id": event["id"], "include": event["entity"]},
                    "webhook": {"id": hook["id"]},
                },
            }).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "Heroku-Webhooks",
                       "Heroku-Webhook-Id": delivery_id,
                       "Heroku-Webhook-Hmac-SHA256": signature(hook["secret"], body)}
            if hook.get("authorization"):
                headers["Authorization"] = hook["authorization"]
            try:
                answer = requests.post(hook["url"], data=body, headers=headers, timeout=self._timeout)
                if 200 <= answer.status_code < 300:
                    return
                outcome = f"status {answer.status_code}"
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            log.info("webhook %s delivery %s attempt %d failed: %s", hook["id"], delivery_id, attempt + 1, outcome)
            if attempt + 1 < attempts and self._stopped.wait(self._retry_delay * 2 ** attempt):
                return
