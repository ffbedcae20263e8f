"""notify(): a JSON webhook with Slack's `text`, retried, logged, never raising; and a Sentry message."""

from __future__ import annotations

import gzip
import logging
import socket

import pytest
import sentry_sdk

from backout import settings as settings_module
from backout.notify import notify
from tests.stub_http import Reply, StubServer, in_order

TOKEN = "hk-0123456789abcdef-token"


def _settings(**env: str) -> settings_module.Settings:
    return settings_module.load({"HEROKU_API_KEY": TOKEN, **env})


def test_the_webhook_gets_slack_text_with_secrets_masked() -> None:
    with StubServer(lambda req: Reply(200, "ok")) as server:
        notify(_settings(BACKOUT_NOTIFY_URL=server.url + "/hook"), "rollback.succeeded",
               f"Rolled app-one back to v3 (token {TOKEN})", {"request_id": "rb_1", "release_version": 7})
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/hook")
    body = request.json()
    assert body["event"] == "rollback.succeeded"
    assert body["text"].startswith("Rolled app-one back to v3")
    assert TOKEN not in request.body.decode()
    assert body["detail"] == {"request_id": "rb_1", "release_version": 7}


def test_the_webhook_is_retried_after_5xx_and_429() -> None:
    replies = in_order([Reply(503, "busy"), Reply(429, "slow down"), Reply(200, "ok")])
    with StubServer(replies) as server:
        notify(_settings(BACKOUT_NOTIFY_URL=server.url), "rollback.failed", "Rollback failed", {})
    assert len(server.requests) == 3


def test_a_refused_webhook_is_logged_not_retried_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with StubServer(lambda req: Reply(404, "no such hook")) as server:
        with caplog.at_level(logging.WARNING, logger="backout.notify"):
            notify(_settings(BACKOUT_NOTIFY_URL=server.url + "/T0/B0/s3cr3tpath"), "rollback.failed", "x", {})
    assert len(server.requests) == 1
    assert "could not notify the webhook of rollback.failed: HTTP 404" in caplog.text
    assert "s3cr3tpath" not in caplog.text


def test_an_unreachable_webhook_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with caplog.at_level(logging.WARNING, logger="backout.notify"):
        notify(_settings(BACKOUT_NOTIFY_URL=f"http://127.0.0.1:{port}/hook"), "rollback.failed", "x", {})
    assert "could not notify the webhook of rollback.failed: ConnectionError" in caplog.text


def test_a_sentry_message_is_sent_when_sentry_dsn_is_set() -> None:
    with StubServer(lambda req: Reply(200, {})) as server:
        dsn = f"http://publickey@127.0.0.1:{server.port}/7"
        try:
            notify(_settings(SENTRY_DSN=dsn), "rollback.failed", "Rollback of app-one to v3 failed", {"app": "app-one"})
        finally:
            sentry_sdk.get_client().close()
    bodies = [gzip.decompress(r.body) if r.headers.get("Content-Encoding") == "gzip" else r.body for r in server.requests]
    assert any(b"Rollback of app-one to v3 failed" in b and b'"level":"error"' in b for b in bodies)
    assert all(r.path == "/api/7/envelope/" for r in server.requests)
