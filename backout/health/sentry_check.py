"""The optional Sentry check: does the new release raise more errors than the one it replaced?

Sentry tags every event with its release, and sentry-sdk names the release after the commit on
Heroku (HEROKU_BUILD_COMMIT / HEROKU_SLUG_COMMIT), which is what the release hook records in the
checkpoint. The check counts the error events of the new release since it started, and those of
the previous release over the same length of time after it started, through Sentry's Discover
API (`GET /api/0/organizations/{org}/events/?field=count()`), and fails the release when its rate
is more than BACKOUT_HEALTH_SENTRY_RATIO times the previous one (and at least MIN_ERRORS errors:
three errors after a quiet release are not a regression).

Turned on by BACKOUT_SENTRY_API_TOKEN (scopes event:read, project:read), BACKOUT_SENTRY_ORG and
BACKOUT_SENTRY_PROJECT (slugs); BACKOUT_SENTRY_API_URL for self-hosted Sentry.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import requests

from backout.errors import BackoutError
from backout.health.policy import FAILED, EventKind, Step
from backout.health.watches import WatchRecord
from backout.settings import Settings

MIN_ERRORS = 10
TIMEOUT = 10.0


class SentryAPIError(BackoutError):
    pass


class SentryCheck:
    """The Sentry check of one configuration. The Discover API wants the project's numeric id,
    which is asked for once per SentryCheck: the health monitor keeps one for all its watches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._project_id: str | None = None
        self._lock = threading.Lock()

    def error_count(self, release: str, start: float, end: float) -> int:
        """Error events of `release` in the project between two wall-clock times."""
        settings = self.settings
        data = _get(settings, f"/api/0/organizations/{settings.sentry_org}/events/", {
            "field": "count()",
            "query": f'event.type:error release:"{release}"',
            "project": self._project(),
            "start": _iso(start),
            "end": _iso(end),
        })
        rows = data.get("data") if isinstance(data, dict) else None
        if not rows:
            return 0
        value = rows[0].get("count()")
        if not isinstance(value, (int, float)):
            raise SentryAPIError(f"Sentry's answer has no count(): {str(rows[0])[:200]}")
        return int(value)

    def check_release(self, record: WatchRecord, now: float) -> Step | None:
        """A FAILED step when the watched release's error rate is a regression, else a step to record
        (kind `sentry`) with both counts; None when there is nothing to compare (no commits known)."""
        commit = record.get("commit")
        previous = record.get("previous") or {}
        if not commit or not previous.get("commit") or previous.get("started_at") is None:
            return None
        ratio = self.settings.health.sentry_ratio
        started = float(record["started_at"])
        span = max(1.0, now - started)
        # The previous release is measured over as long a span, or as long as it ran if shorter.
        previous_span = max(1.0, min(span, started - float(previous["started_at"])))
        new_count = self.error_count(commit, started, now)
        old_count = self.error_count(previous["commit"], float(previous["started_at"]),
                                     float(previous["started_at"]) + previous_span)
        new_rate, old_rate = new_count / span, old_count / previous_span
        detail = {"release_errors": new_count, "release_seconds": round(span, 1), "previous_errors": old_count,
                  "previous_seconds": round(previous_span, 1), "ratio": ratio,
                  "previous_version": previous.get("version")}
        summary = (f"{new_count} Sentry errors in {span:.0f}s of v{record['release_version']} against {old_count} in "
                   f"{previous_span:.0f}s of v{previous.get('version')}")
        if new_count >= MIN_ERRORS and new_rate > ratio * old_rate:
            return Step(FAILED, f"{summary}: more than {ratio:g}x the previous rate", detail)
        return Step(EventKind.SENTRY, summary, detail)

    def _project(self) -> str:
        with self._lock:
            if self._project_id is not None:
                return self._project_id
        settings = self.settings
        if (settings.sentry_project or "").isdigit():
            project_id = settings.sentry_project or ""
        else:
            project = _get(settings, f"/api/0/projects/{settings.sentry_org}/{settings.sentry_project}/", {})
            project_id = str(project.get("id") or "") if isinstance(project, dict) else ""
            if not project_id:
                raise SentryAPIError(f"Sentry project {settings.sentry_org}/{settings.sentry_project} has no id")
        with self._lock:
            self._project_id = project_id
        return project_id


def _get(settings: Settings, path: str, params: dict[str, str]) -> Any:
    try:
        response = requests.get(settings.sentry_api_url.rstrip("/") + path, params=params, timeout=TIMEOUT,
                                headers={"Authorization": f"Bearer {settings.sentry_api_token}"})
    except requests.RequestException as exc:
        raise SentryAPIError(f"cannot reach Sentry's API: {type(exc).__name__}") from None
    if response.status_code == 401:
        raise SentryAPIError("Sentry refused BACKOUT_SENTRY_API_TOKEN (401); it needs event:read and project:read")
    if response.status_code >= 400:
        detail = ""
        try:
            body = response.json()
            detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
        except ValueError:
            pass
        raise SentryAPIError(f"Sentry's API answered {response.status_code} for {path}: {detail[:200]}")
    try:
        return response.json()
    except ValueError:
        raise SentryAPIError(f"Sentry's API answered {path} with something that is not JSON") from None


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
