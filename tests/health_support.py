"""Helpers for the health tests: a real local app whose health can be switched, a notification
receiver, the watch job run by a real RQ worker, and monitors running in threads."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import redis

from backout import ledger
from backout import settings as settings_module
from backout.health.monitor import Monitor
from backout.worker.main import build_worker
from backout.worker.queues import queue
from tests.stub_http import Reply, Request, StubServer
from tests.support import ledger_queue_names

FAST = {
    "BACKOUT_HEALTH_INTERVAL": "0.2",
    "BACKOUT_HEALTH_THRESHOLD": "3",
    "BACKOUT_HEALTH_GRACE": "0.5",
    "BACKOUT_HEALTH_WINDOW": "1",
    "BACKOUT_HEALTH_TIMEOUT": "1",
    "BACKOUT_HEALTH_COOLDOWN": "60",
}


class HealthApp:
    """A real HTTP app on loopback. `mode` switches its health: ok, fail (500), drop (no answer)."""

    def __init__(self, release: str | None = None) -> None:
        self.mode = "ok"
        self.release = release
        self.hits: list[tuple[float, str]] = []
        self.server = StubServer(self._respond)
        self.url = self.server.url + "/health"

    def _respond(self, request: Request) -> Reply:
        self.hits.append((time.time(), self.mode))
        headers = {"Content-Type": "application/json", **({"X-Release": self.release} if self.release else {})}
        if self.mode == "drop":
            return Reply(disconnect=True)
        if self.mode == "fail":
            return Reply(500, b'{"status": "broken"}', headers)
        return Reply(200, b'{"status": "ok"}', headers)

    def close(self) -> None:
        self.server.close()


class Notifications:
    """Receives BACKOUT_NOTIFY_URL posts."""

    def __init__(self) -> None:
        self.server = StubServer(lambda request: Reply(200, "ok"))
        self.url = self.server.url + "/hook"

    @property
    def received(self) -> list[dict[str, Any]]:
        return [request.json() for request in self.server.requests]

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
