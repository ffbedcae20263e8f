"""Probes against a real local HTTP server: pass, fail (wrong answer) and error (no answer)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from backout.health.probes import ERROR, FAIL, PASS, Prober, ProbeSpec
from tests.stub_http import Reply, StubServer

pytestmark = pytest.mark.integration


def probe(url: str, **spec) -> object:
    prober = Prober(ProbeSpec(**spec))
    try:
        return prober.probe(url)
    finally:
        prober.close()


def test_status_in_range_passes_and_outside_fails():
    with StubServer(lambda r: Reply(204 if r.path == "/ok" else 503, "")) as server:
        ok = probe(server.url + "/ok")
        bad = probe(server.url + "/bad")
    assert (ok.outcome, ok.status, ok.reason) == (PASS, 204, "status 204")
    assert (bad.outcome, bad.status) == (FAIL, 503)
    assert bad.reason == "status 503, expected 200-399"


def test_custom_status_ranges():
    with StubServer(lambda r: Reply(302, "", {"X": "1"})) as server:  # a 302 without Location
        result = probe(server.url, expect=((200, 204), (302, 302)))
    assert result.outcome == PASS


def test_body_text_and_json_field():
    replies = {
        "/text": Reply(200, "all systems go"),
        "/json": Reply(200, {"status": "ok", "checks": {"db": True, "queue": [1, 2]}}),
        "/degraded": Reply(200, {"status": "degraded"}),
        "/html": Reply(200, "<html>oops</html>"),
    }
    with StubServer(lambda r: replies[r.path]) as server:
        assert probe(server.url + "/text", body="systems go").outcome == PASS
        missing = probe(server.url + "/text", body="healthy")
        assert missing.outcome == FAIL and "does not contain 'healthy'" in missing.reason
        assert probe(server.url + "/json", json=("status", "ok")).outcome == PASS
        assert probe(server.url + "/json", json=("checks.db", "true")).outcome == PASS
        assert probe(server.url + "/json", json=("checks.queue.1", "2")).outcome == PASS
        degraded = probe(server.url + "/degraded", json=("status", "ok"))
        assert degraded.outcome == FAIL and degraded.reason == "JSON field status is 'degraded', expected 'ok'"
        absent = probe(server.url + "/json", json=("checks.cache", "true"))
        assert absent.outcome == FAIL and "has no field checks.cache" in absent.reason
        html = probe(server.url + "/html", json=("status", "ok"))
        assert html.outcome == FAIL and "not JSON" in html.reason


def test_redirects_followed_or_refused():
    def handle(r):
        if r.path == "/old":
            return Reply(301, "", {"Location": "/health"})
        if r.path == "/loop":
            return Reply(302, "", {"Location": "/loop"})
        return Reply(200, "ok")

    with StubServer(handle) as server:
        followed = probe(server.url + "/old", body="ok")
        refused = probe(server.url + "/old", follow_redirects=False)
        looping = probe(server.url + "/loop")
    assert followed.outcome == PASS and followed.status == 200
    assert refused.outcome == FAIL and "redirects are refused" in refused.reason and "/health" in refused.reason
    assert looping.outcome == FAIL and "more than 5 redirects" in looping.reason


def test_refused_connection_is_an_error_not_a_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = probe(f"http://127.0.0.1:{port}/health")
    assert result.outcome == ERROR
    assert result.reason == "connection refused"
    assert result.status is None


def test_dns_failure_is_an_error():
    result = probe("http://backout-no-such-host.invalid/health", timeout=3)
    assert result.outcome == ERROR
    assert result.reason == "DNS lookup of backout-no-such-host.invalid failed"


def test_timeout_is_an_error_and_bounded():
    release = threading.Event()

    def slow(_):
        release.wait(5)
        return Reply(disconnect=True)  # the prober hung up long ago; writing would break the pipe

    with StubServer(slow) as server:
        started = time.monotonic()
        result = probe(server.url, timeout=0.3)
        took = time.monotonic() - started
        release.set()
    assert result.outcome == ERROR and result.reason.startswith("timed out after 0.3s")
    assert took < 2


def test_dropped_connection_is_an_error():
    with StubServer(lambda r: Reply(disconnect=True)) as server:
        result = probe(server.url)
    assert result.outcome == ERROR and "dropped" in result.reason


def test_release_reported_by_header_or_json_field():
    def handle(r):
        if r.path == "/h":
            return Reply(200, "ok", {"X-Release": "v42"})
        if r.path == "/j":
            return Reply(503, {"meta": {"release": 43}})
        return Reply(200, {"meta": {"release": "abc123"}})

    with StubServer(handle) as server:
        by_header = probe(server.url + "/h", release_header="X-Release")
        by_field = probe(server.url + "/j", release_field="meta.release")
        by_commit = probe(server.url + "/c", release_field="meta.release")
        unreported = probe(server.url + "/h", release_field="meta.release")
    assert by_header.release == 42
    assert (by_field.outcome, by_field.release) == (FAIL, 43)  # a failure still says who answered
    assert by_commit.release == "abc123"
    assert unreported.release is None


def test_connections_are_reused_between_probes():
    with StubServer(lambda r: Reply(200, "ok")) as server:
        prober = Prober(ProbeSpec())
        try:
            results = [prober.probe(server.url + "/health") for _ in range(20)]
        finally:
            prober.close()
        ports = {request.client_port for request in server.requests}
    assert all(r.outcome == PASS for r in results)
    assert len(ports) == 1  # one keep-alive connection served all twenty probes


def test_to_dict_is_json_friendly():
    with StubServer(lambda r: Reply(200, "ok")) as server:
        d = probe(server.url).to_dict()
    assert d["outcome"] == PASS and d["status"] == 200 and isinstance(d["elapsed"], float)
