"""Sentry reporting (when SENTRY_DSN is set), with every secret scrubbed before an event leaves.

The worker reports job failures (sentry-sdk's RQ integration), killed work horses and abandoned
jobs; `notify` adds a message when a rollback is done or failed. Events carry exception messages,
log breadcrumbs and the local variables of each frame, any of which can hold a token or a database
URL, so `before_send` and `before_breadcrumb` walk the whole event and mask secret values, URL
passwords and bearer tokens with `backout.redact`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import sentry_sdk
from sentry_sdk.integrations.rq import RqIntegration

from backout import __version__
from backout.redact import known_secrets, scrub
from backout.settings import Settings

log = logging.getLogger(__name__)

_active_dsn: str | None = None


def init(settings: Settings) -> bool:
    """Start reporting to SENTRY_DSN; False (and nothing started) when it is not set."""
    global _active_dsn
    if not settings.sentry_dsn:
        return False
    if _active_dsn == settings.sentry_dsn and sentry_sdk.get_client().is_active():
        return True
    secrets = _secrets(settings)
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=f"backout@{__version__}",
        integrations=[RqIntegration()],
        before_send=lambda event, hint: scrub(event, secrets),
        before_breadcrumb=lambda crumb, hint: scrub(crumb, secrets),
    )
    _active_dsn = settings.sentry_dsn
    return True


def capture_message(settings: Settings, text: str, level: Literal["error", "info"] = "info",
                    extra: dict[str, Any] | None = None) -> None:
    """Send one message to Sentry (scrubbed like every event) and wait briefly for it to leave."""
    if not init(settings):
        return
    with sentry_sdk.new_scope() as scope:
        for key, value in (extra or {}).items():
            scope.set_extra(key, value)
        sentry_sdk.capture_message(text, level=level)
    sentry_sdk.flush(timeout=5)


def _secrets(settings: Settings) -> list[str]:
    # Settings know backout's own variables; the environment may hold more (an add-on's
    # HEROKU_POSTGRESQL_..._URL, say). Frame variables are sent as repr(), which escapes some
    # characters, so each secret is also looked for in its escaped form.
    found = set(settings.secrets()) | set(known_secrets())
    return sorted(found | {repr(s)[1:-1] for s in found})
