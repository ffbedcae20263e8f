"""The health jobs on the `backout-routine` queue.

`watch_release(app, release_version)` is enqueued by the release hook after a release phase that
succeeded. It registers the watch that the worker's monitor carries out (see `backout.monitor`),
records it in the ledger and tells people. It is idempotent: the same release registered twice is
watched once, and a watch of an older release than the one already watched is ignored.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job

from backout import ledger, redis_conn
from backout.errors import BadInput, HerokuAPIError
from backout.health.actions import release_commits
from backout.health.policy import EventKind, Policy
from backout.health.watches import WatchRegistry, new_record
from backout.notify import notify
from backout.redact import redact
from backout.release_version import parse_release_version
from backout.settings import Settings, load

log = logging.getLogger(__name__)

DYNO_EVENTS = ("api:dyno",)


def watch_release(app: str, release_version: int | str) -> dict[str, Any]:
    """Register the health watch of `app`'s release `release_version` (an int, or "v42")."""
    settings = load()
    version = _version(release_version)
    if not isinstance(app, str) or not app.strip():
        raise BadInput("watch_release needs the app's name")
    settings.require("REDIS_URL", "BACKOUT_DATABASE_URL")
    assert settings.redis_url is not None and settings.ledger_url is not None
    started_at = _scheduled_at()
    conn = ledger.connect(settings.ledger_url)
    try:
        if not settings.health.urls and not settings.heroku_api_key:
            reason = ("nothing to watch: set BACKOUT_HEALTH_URL (what to probe) or HEROKU_API_KEY (dyno crashes); "
                      f"v{version} is not verified")
            ledger.record_health_event(conn, app=app, release_version=version, kind=EventKind.WATCH_SKIPPED, reason=reason)
            log.warning("%s: %s", app, reason)
            return {"app": app, "release_version": version, "watching": False, "reason": reason}
        record = new_record(app, version, started_at, settings.health.urls, **release_commits(conn, app, version))
        # Before registering: the monitor may start (and record) the moment the watch exists.
        webhook = _ensure_dyno_webhook(settings, app)
        connection = redis_conn.connect(settings.redis_url)
        try:
            registered = WatchRegistry(connection).register(record)
        finally:
            connection.close()
        if not registered:
            log.info("%s v%s: already watched (or a newer release is); nothing to do", app, version)
            return {"app": app, "release_version": version, "watching": False, "reason": "already watched"}
        text = _describe(settings, app, version, webhook)
        ledger.record_health_event(conn, app=app, release_version=version, kind=EventKind.WATCH_STARTED, reason=text,
                                   detail={"urls": list(settings.health.urls), "started_at": started_at,
                                           "policy": _policy_detail(settings), "dyno_webhook": webhook})
        notify(settings, "health.watch_started", text, {"app": app, "release_version": version,
                                                        "urls": list(settings.health.urls)})
        return {"app": app, "release_version": version, "watching": True, "started_at": started_at}
    finally:
        conn.close()


def _version(value: int | str) -> int:
    version = parse_release_version(value)
    if version is None:
        raise BadInput(f"release version {value!r} is not understood; expected a number or vNN")
    return version


def _scheduled_at() -> float:
    """When the hook asked for the watch (the job's enqueue time): grace counts from the release."""
    job = get_current_job()
    enqueued = getattr(job, "enqueued_at", None) if job is not None else None
    if enqueued is None:
        return time.time()
    from datetime import timezone

    if enqueued.tzinfo is None:  # RQ stores naive UTC
        enqueued = enqueued.replace(tzinfo=timezone.utc)
    return min(enqueued.timestamp(), time.time())


def _ensure_dyno_webhook(settings: Settings, app: str) -> str | None:
    """Subscribe the receiver (BACKOUT_HEALTH_WEBHOOK_URL) to the app's dyno events, once."""
    url = settings.health.webhook_url
    if not url or not settings.heroku_api_key:
        return None
    from backout.heroku import HerokuClient

    try:
        with HerokuClient.from_settings(settings) as client:
            for hook in client.webhooks(app):
                if hook.get("url") == url and set(DYNO_EVENTS) <= set(hook.get("include") or []):
                    return "present"
            client.create_webhook(app, url, DYNO_EVENTS, level="sync", secret=settings.health.webhook_secret)
            return "created"
    except HerokuAPIError as exc:
        # Polling the dynos still catches crashes, a round later; the watch goes on.
        log.warning("could not subscribe to %s's dyno events: %s", app, redact(str(exc), settings.secrets()))
        return "failed"


def _policy_detail(settings: Settings) -> dict[str, Any]:
    p = Policy.from_settings(settings)
    return {"grace": p.grace, "interval": p.interval, "threshold": p.threshold, "error_threshold": p.error_threshold,
            "window": p.window, "cooldown": p.cooldown, "auto_rollback": p.auto_rollback, "dry_run": p.dry_run}


def _describe(settings: Settings, app: str, version: int, webhook: str | None) -> str:
    policy = Policy.from_settings(settings)
    what = []
    if settings.health.urls:
        what.append("probing " + ", ".join(settings.health.urls))
    if settings.heroku_api_key:
        what.append("dyno crashes" + (" (webhook and polling)" if webhook in ("present", "created") else ""))
    if settings.sentry_api_token:
        what.append("Sentry errors")
    mode = " in dry-run mode" if policy.dry_run else ""
    return f"watching {app} v{version}{mode}: {' and '.join(what)}; {policy.describe()}"
