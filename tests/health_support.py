"""Helpers for the health tests: a real local app whose health can be switched, a notification
receiver, the watch job run by a real RQ worker, and monitors running in threads."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from requests.structures import CaseInsensitiveDict

from backout import ledger
from backout import settings as settings_module
from backout.health.monitor import Monitor
from backout.worker.main import build_worker
from backout.worker.queues import queue
from tests.support import ledger_queue_names
from tests.stub_http import Reply, Request

FAST = {
    "BACKOUT_HEALTH_INTERVAL": "0.2",
    "BACKOUT_HEALTH_THRESHOLD": "3",
    "BACKOUT_HEALTH_GRACE": "0.5",
    "BACKOUT_HEALTH_WINDOW": "1",
    "BACKOUT_HEALTH_TIMEOUT": "1",
    "BACKOUT_HEALTH_COOLDOWN": "60",
}


class _Loopback:
    """A threaded HTTP/1.1 server on a free loopback port that stops at once when closed."""

    def __init__(self, respond: Callable[[str, str, Any, bytes], tuple[int, dict[str, str], bytes] | None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                answer = respond(self.command, self.path, self.headers, self.rfile.read(length) if length else b"")
                if answer is None:  # drop the connection without a word, as a dying app does
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class QuickStub(_Loopback):
    """stub_http's StubServer contract (a handler from Request to Reply) on a _Loopback, which
    stops at once: the probe tests start a server each, and half a second to stop adds up."""

    def __init__(self, handler: Callable[[Request], Reply]) -> None:
        def respond(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
            parts = urlsplit(path)
            reply = handler(Request(method, parts.path, parse_qs(parts.query), CaseInsensitiveDict(headers.items()),
                                    body))
            if reply.disconnect:
                return None
            data, headers = reply.encoded()
            return reply.status, dict(headers), data

        super().__init__(respond)

    def __enter__(self) -> "QuickStub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HealthApp:
    """A real HTTP app on loopback. `mode` switches its health: ok, fail (500), drop (no answer)."""

    def __init__(self, release: str | None = None) -> None:
        self.mode = "ok"
        self.release = release
        self.hits: list[tuple[float, str]] = []
        self.server = _Loopback(self._respond)
        self.url = self.server.url + "/health"

    def _respond(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        self.hits.append((time.time(), self.mode))
        headers = {"Content-Type": "application/json", **({"X-Release": self.release} if self.release else {})}
        if self.mode == "drop":
            return None
        if self.mode == "fail":
            return 500, headers, b'{"status": "broken"}'
        return 200, headers, b'{"status": "ok"}'

    def close(self) -> None:
        self.server.close()


class Notifications:
    """Receives BACKOUT_NOTIFY_URL posts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.server = _Loopback(self._respond)
        self.url = self.server.url + "/hook"

    def _respond(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.received.append(json.loads(body))
        return 200, {}, b"ok"

    @property
    def events(self) -> list[str]:
        return [r["event"] for r in self.received]

    def texts(self, event: str) -> list[str]:
        return [r["text"] for r in self.received if r["event"] == event]

    def close(self) -> None:
        self.server.close()


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> settings_module.Settings:
    """Put `env` in the process environment (jobs read their settings from it) and load it."""
    for name in settings_module.setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_module.load()


def run_watch_job(redis_url: str, settings: settings_module.Settings, app: str, version: int | str) -> Any:
    """Enqueue the hook's job the way the hook does, and run it in a real (simple) RQ worker."""
    connection = redis.Redis.from_url(redis_url)
    assert settings.ledger_url is not None
    job = queue(ledger_queue_names(settings.ledger_url)[1], connection).enqueue(
        "backout.jobs.health.watch_release", app, version)
    worker = build_worker(connection, settings, simple=True)
    worker.work(burst=True, logging_level="WARNING")
    job.refresh()
    assert job.get_status() == "finished", job.latest_result().exc_string if job.latest_result() else job.get_status()
    return job.return_value()


class RunningMonitor:
    """A Monitor on its own thread, with its own Redis connection, like one worker's."""

    def __init__(self, settings: settings_module.Settings, redis_url: str, owner: str | None = None) -> None:
        self.connection = redis.Redis.from_url(redis_url)
        self.monitor = Monitor(settings, self.connection, owner=owner)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.monitor.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the monitor did not stop"
        self.connection.close()


def events(ledger_url: str, app: str) -> list[dict]:
    """The app's health events, oldest first."""
    conn = ledger.connect(ledger_url)
    try:
        return list(reversed(ledger.health_events(conn, app, limit=1000)))
    finally:
        conn.close()


def kinds(ledger_url: str, app: str) -> list[str]:
    return [e["kind"] for e in events(ledger_url, app)]


def deploy_checkpoint(ledger_url: str, app: str, version: int, verified: bool = False, commit: str | None = None,
                      previous: int | None = None) -> dict:
    """A complete deploy checkpoint, as the release hook leaves one."""
    conn = ledger.connect(ledger_url)
    try:
        cp = ledger.create_checkpoint(conn, app=app, kind="deploy", release_version=version, release_id=None,
                                      slug_id=None, slug_commit=commit, previous_release_version=previous,
                                      backup_strategy="none", migration_tool="none")
        cp = ledger.update_checkpoint(conn, cp["id"], status="complete", completed_at="now")
        if verified:
            ledger.mark_release_verified(conn, app, version)
            cp = ledger.get_checkpoint(conn, cp["id"])
        return cp
    finally:
        conn.close()


@contextmanager
def monitors(settings: settings_module.Settings, redis_url: str, count: int = 1) -> Iterator[list[RunningMonitor]]:
    running = [RunningMonitor(settings, redis_url, owner=f"test-monitor-{i}") for i in range(count)]
    try:
        yield running
    finally:
        for m in running:
            if m.thread.is_alive():
                m.stop()
