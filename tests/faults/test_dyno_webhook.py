"""Hostile requests to the dyno webhook receiver: replays of a signed delivery, stale deliveries and
malformed requests are refused with an answer (never a traceback) and change nothing."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
import redis

from backout import settings as settings_module
from backout.health.dyno_webhook import REPLAY_WINDOW, serve, signature
from tests.faults.conftest import Trials

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-0123456789abcdef-fuzz"


@pytest.fixture
def receiver(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    settings = settings_module.load({"REDIS_URL": redis_url, "BACKOUT_HEALTH_WEBHOOK_SECRET": SECRET,
                                     "BACKOUT_HEALTH_WEBHOOK_PORT": "0"})
    connection = redis.Redis.from_url(redis_url)
    server = serve(settings, connection, 0, host="127.0.0.1")
    yield f"127.0.0.1:{server.server_address[1]}", connection
    server.shutdown()
    server.server_close()


def _delivery(delivery_id: str, published: datetime | None = None) -> bytes:
    return json.dumps({
        "resource": "dyno", "action": "update",
        "data": {"app": {"name": "shop"}, "name": "web.1", "state": "up", "release": {"version": 5}},
        "published_at": (published or datetime.now(timezone.utc)).isoformat(),
        "webhook_metadata": {"delivery": {"id": delivery_id}},
    }).encode()


def _post(address: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{address}/dyno-events", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _raw(address: str, request: bytes) -> bytes:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_signed_delivery_is_accepted_once(receiver: tuple[str, redis.Redis], trials: Trials) -> None:
    address, _ = receiver

    def trial(i: int) -> None:
        body = _delivery(f"delivery-{i}")
        headers = {"Heroku-Webhook-Hmac-SHA256": signature(SECRET, body), "Heroku-Webhook-Id": f"delivery-{i}"}
        assert [_post(address, body, headers) for _ in range(3)] == [202, 409, 409]
        # The same signed body under another header id is still the same delivery.
        assert _post(address, body, {**headers, "Heroku-Webhook-Id": f"other-{i}"}) == 409

    trials.run(trial, default=3)


def test_a_stale_or_unidentified_delivery_is_refused(receiver: tuple[str, redis.Redis]) -> None:
    address, _ = receiver
    stale = _delivery("old-one", datetime.now(timezone.utc) - timedelta(seconds=REPLAY_WINDOW + 60))
    assert _post(address, stale, {"Heroku-Webhook-Hmac-SHA256": signature(SECRET, stale)}) == 400
    anonymous = json.dumps({"resource": "dyno", "published_at": datetime.now(timezone.utc).isoformat()}).encode()
    assert _post(address, anonymous, {"Heroku-Webhook-Hmac-SHA256": signature(SECRET, anonymous)}) == 400


def test_malformed_requests_get_400(receiver: tuple[str, redis.Redis], trials: Trials) -> None:
    address, _ = receiver
    lengths = [b"abc", b"-5", b"\xd9\xa3", b"99999999999999999999999", b"1e3", b""]

    def trial(i: int) -> None:
        length = lengths[i % len(lengths)]
        answer = _raw(address, b"POST /dyno-events HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
                      + b"\r\nHeroku-Webhook-Hmac-SHA256: x\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), (length, answer[:200])
        answer = _raw(address, b"POST /dyno-events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nno")
        assert b" 401 " in answer.split(b"\r\n")[0], answer[:200]

    trials.run(trial, default=6)
