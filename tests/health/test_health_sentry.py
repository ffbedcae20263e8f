"""The Sentry check against a real local HTTP server speaking Sentry's API."""

from __future__ import annotations

import time

import pytest

from backout import settings as settings_module
from backout.health.policy import FAILED
from backout.health.sentry_check import SentryAPIError, SentryCheck
from tests.health_support import (
    FAST,
    HealthApp,
    Notifications,
    deploy_checkpoint,
    events,
    kinds,
    monitors,
    run_watch_job,
    use_env,
)
from tests.stub_http import Reply, StubServer
from tests.support import wait_for

pytestmark = pytest.mark.integration

TOKEN = "sntrys_test_token_value"


class FakeSentryData:
    """Error counts per release, served the way Sentry's Discover API answers."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.queries: list[dict] = []

    def __call__(self, request):
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"detail": "Invalid token"})
        if request.path == "/api/0/projects/acme/web/":
            return Reply(200, {"id": "4242", "slug": "web"})
        if request.path == "/api/0/organizations/acme/events/":
            q = {k: v[0] for k, v in request.query.items()}
            self.queries.append(q)
            assert q["field"] == "count()" and q["project"] == "4242"
            assert q["start"] < q["end"] and q["start"].endswith(tuple("0123456789"))
            release = q["query"].split('release:"', 1)[1].rstrip('"')
            assert q["query"].startswith("event.type:error ")
            return Reply(200, {"data": [{"count()": self.counts.get(release, 0)}], "meta": {"fields": {"count()": "integer"}}})
        return Reply(404, {"detail": "not found"})


def sentry_settings(url: str, **extra: str) -> settings_module.Settings:
    return settings_module.load({"BACKOUT_SENTRY_API_TOKEN": TOKEN, "BACKOUT_SENTRY_ORG": "acme",
                                 "BACKOUT_SENTRY_PROJECT": "web", "BACKOUT_SENTRY_API_URL": url, **extra})


def record(now: float) -> dict:
    return {"app": "shop", "release_version": 8, "started_at": now - 60, "commit": "bbbb222",
            "previous": {"version": 7, "commit": "aaaa111", "started_at": now - 3600}}


def test_a_regression_fails_the_release():
    data = FakeSentryData({"bbbb222": 40, "aaaa111": 3})
    with StubServer(data) as server:
        now = time.time()
        step = SentryCheck(sentry_settings(server.url)).check_release(record(now), now)
    assert step.kind == FAILED
    assert step.reason.startswith("40 Sentry errors in 60s of v8 against 3 in 60s of v7: more than 2x")
    # both releases were counted over spans of the same length
    new, old = data.queries[0], data.queries[1]
    assert 'release:"bbbb222"' in new["query"] and 'release:"aaaa111"' in old["query"]


def test_no_regression_and_too_few_errors_to_matter():
    with StubServer(FakeSentryData({"bbbb222": 20, "aaaa111": 15})) as server:
        now = time.time()
        assert SentryCheck(sentry_settings(server.url)).check_release(record(now), now).kind == "sentry"
    with StubServer(FakeSentryData({"bbbb222": 9, "aaaa111": 0})) as server:
        now = time.time()
        step = SentryCheck(sentry_settings(server.url)).check_release(record(now), now)
    assert step.kind == "sentry" and step.detail["release_errors"] == 9  # fewer than MIN_ERRORS


def test_unknown_commits_mean_nothing_to_compare():
    assert SentryCheck(sentry_settings("http://127.0.0.1:1")).check_release(
        {"app": "a", "release_version": 2, "started_at": 0, "commit": None, "previous": None}, 10) is None


def test_a_refused_token_is_a_clear_error_without_the_token():
    with StubServer(FakeSentryData({})) as server:
        settings = settings_module.load({"BACKOUT_SENTRY_API_TOKEN": "wrong-token-value", "BACKOUT_SENTRY_ORG": "acme",
                                         "BACKOUT_SENTRY_PROJECT": "web", "BACKOUT_SENTRY_API_URL": server.url})
        with pytest.raises(SentryAPIError) as info:
            SentryCheck(settings).error_count("abc", 0, 10)
    assert "refused BACKOUT_SENTRY_API_TOKEN" in str(info.value) and "wrong-token-value" not in str(info.value)


def test_the_monitor_fails_a_release_on_a_sentry_regression(monkeypatch, database, redis_url):
    data = FakeSentryData({"bbbb222": 500, "aaaa111": 1})
    app, notes = HealthApp(), Notifications()
    try:
        with StubServer(data) as sentry:
            settings = use_env(monkeypatch, {
                "BACKOUT_DATABASE_URL": database, "REDIS_URL": redis_url, "BACKOUT_HEALTH_URL": app.url,
                "BACKOUT_NOTIFY_URL": notes.url, **FAST, "BACKOUT_HEALTH_WINDOW": "3", "BACKOUT_HEALTH_DRY_RUN": "1",
                "BACKOUT_SENTRY_API_TOKEN": TOKEN, "BACKOUT_SENTRY_ORG": "acme", "BACKOUT_SENTRY_PROJECT": "web",
                "BACKOUT_SENTRY_API_URL": sentry.url})
            deploy_checkpoint(database, "shop", 7, verified=True, commit="aaaa111")
            deploy_checkpoint(database, "shop", 8, commit="bbbb222", previous=7)
            run_watch_job(redis_url, settings, "shop", 8)
            with monitors(settings, redis_url):
                wait_for(lambda: "dry_run" in kinds(database, "shop"), what="the Sentry verdict")
        failed = next(e for e in events(database, "shop") if e["kind"] == "failed")
        assert "500 Sentry errors" in failed["reason"] and "against 1 in" in failed["reason"]
        assert failed["detail"]["previous_version"] == 7
        assert "counted" not in kinds(database, "shop")  # the probes all passed
    finally:
        app.close()
        notes.close()
