"""Telling people: a JSON webhook (Slack-compatible `text`) and a Sentry message.

A notification must never turn a finished rollback into a failed job, so `notify` retries a few
times, logs what happened, and never raises.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import requests

from backout import sentry
from backout.redact import redact, scrub
from backout.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT = 5.0
# Seconds before the 2nd and 3rd attempt.
BACKOFF = (0.5, 2.0)


def notify(settings: Settings, event: str, text: str, detail: dict[str, Any]) -> None:
    """Send `text` to BACKOUT_NOTIFY_URL and to Sentry, each when configured.

    The webhook receives `{"text": ..., "event": ..., "detail": ...}`; Slack shows `text`. Events
    whose name ends in `failed` go to Sentry as errors, the rest as info messages.
    """
    secrets = settings.secrets()
    text = redact(text, secrets)
    detail = scrub(detail, secrets)
    if settings.notify_url:
        _post_webhook(settings.notify_url, {"text": text, "event": event, "detail": detail}, secrets)
    if settings.sentry_dsn:
        try:
            level: Literal["error", "info"] = "error" if event.endswith("failed") else "info"
            sentry.capture_message(settings, text, level=level, extra={"event": event, "detail": detail})
        except Exception as exc:  # noqa: BLE001 - a broken Sentry must not break the caller
            log.warning("could not send %s to Sentry: %s", event, redact(str(exc), secrets))


def _post_webhook(url: str, body: dict[str, Any], secrets: list[str]) -> None:
    # The webhook URL is itself a secret (Slack's carry a token), so it is never logged.
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF[attempt - 1])
        try:
            response = requests.post(url, json=body, timeout=TIMEOUT)
        except (requests.RequestException, ValueError) as exc:
            problem = type(exc).__name__
            continue
        if response.status_code < 300:
            log.info("notified the webhook of %s", body["event"])
            return
        problem = f"HTTP {response.status_code}"
        if response.status_code < 500 and response.status_code != 429:
            break  # the webhook refuses this message; asking again will not help
    log.warning("could not notify the webhook of %s: %s", body["event"], redact(problem, secrets))
