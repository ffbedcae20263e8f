"""Auto-rollback end to end: the sandbox (a local Heroku whose dynos are real processes), a real web
app whose health can be switched, the real release hook as each release's release phase, real
`backout worker` processes (RQ worker + health monitor), real Redis and a real ledger.

Nobody types a command: the hook schedules the watch, the monitor judges the release, the worker
rolls it back, and the ledger and the notifications tell the story.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from backout import ledger
from backout.heroku import HerokuClient
from backout.timestamps import epoch
from tests.health_support import Notifications, events
from tests.support import (
    child_env,
    deploy_slug,
    health_app_files,
    start_worker,
    stop_workers,
    wait_for,
)

pytestmark = pytest.mark.integration

# The app is support.HEALTH_WEB: its code says whether a release is good, bad or crashing, and the
# file named by HEALTH_MODE_FILE lets a test make every release fail.
PROCESSES = {"web": "python web.py", "release": "backout release -- true"}
HEALTH = {
    "BACKOUT_HEALTH_INTERVAL": "0.2",
    "BACKOUT_HEALTH_THRESHOLD": "3",
    "BACKOUT_HEALTH_GRACE": "1.5",
    "BACKOUT_HEALTH_WINDOW": "1",
    "BACKOUT_HEALTH_TIMEOUT": "1",
    "BACKOUT_HEALTH_COOLDOWN": "0",
    "BACKOUT_HEALTH_RELEASE_HEADER": "X-Release",
}


class Story:
    """One sandbox app with backout installed the way the README says, and its workers."""

    def __init__(self, sandbox: Any, database: str, redis_url: str, tmp_path: Path, notes: Notifications,
                 name: str = "shop", **worker_env: str) -> None:
        self.sandbox, self.ledger_url, self.redis_url, self.tmp = sandbox, database, redis_url, tmp_path
        self.name, self.notes = name, notes
        self.client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
        self.mode_file = tmp_path / "health-mode"
        app = self.client.create_app(name)
        self.web_url = app["web_url"]
        self.client.update_config_vars(name, {
            "DATABASE_URL": database, "REDIS_URL": redis_url, "BACKOUT_BACKUP": "none",
            "BACKOUT_MIGRATIONS": "none", "HEALTH_MODE_FILE": str(self.mode_file), **sandbox.env, **HEALTH,
        })
        self.env = child_env({
            **sandbox.env, **HEALTH, "BACKOUT_DATABASE_URL": database, "REDIS_URL": redis_url,
            "BACKOUT_HEALTH_URL": self.web_url + "health", "BACKOUT_NOTIFY_URL": notes.url,
            "BACKOUT_LOG_LEVEL": "INFO", **worker_env,
        })
        self.workers: list[subprocess.Popen] = []

    def start_worker(self) -> subprocess.Popen:
        proc = start_worker(self.env, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        stop_workers(self.workers)
        self.client.close()

    def deploy(self, code: str) -> dict:
        done = deploy_slug(self.client, self.name, PROCESSES, health_app_files(code),
                           commit=f"{code}-{time.time_ns()}")
        assert done["status"] == "succeeded", done
        return done

    def events_of(self, version: int) -> list[dict]:
        return [e for e in events(self.ledger_url, self.name) if e["release_version"] == version]

    def kinds_of(self, version: int) -> list[str]:
        return [e["kind"] for e in self.events_of(version)]

    def requests(self) -> list[dict]:
        conn = ledger.connect(self.ledger_url)
        try:
            return ledger.list_requests(conn, self.name)
        finally:
            conn.close()

    def current(self) -> dict:
        return self.client.current_release(self.name)

    def log(self) -> str:
        return "\n".join((self.tmp / f"worker-{i}.log").read_text(errors="replace") for i in range(len(self.workers)))


@pytest.fixture
def story(sandbox, database, redis_url, tmp_path, notes):
    s = Story(sandbox, database, redis_url, tmp_path, notes)
    yield s
    s.stop()


def good_release_verified(story: Story) -> dict:
    good = story.deploy("good")
    wait_for(lambda: "verified" in story.kinds_of(good["version"]), timeout=30, what=f"v{good['version']} verified")
    return good


def test_a_bad_release_is_rolled_back_after_exactly_the_threshold_by_one_of_two_workers(story: Story):
    # Two workers (two dynos of `worker: backout worker`): one watch, one verdict, one rollback.
    story.start_worker()
    story.start_worker()
    good = good_release_verified(story)
    bad = story.deploy("bad")
    v = bad["version"]
    wait_for(lambda: story.requests(), timeout=30, what="the rollback request")
    request = wait_for(lambda: (r := story.requests()[0])["status"] in ("succeeded", "failed") and r, timeout=60,
                       what="the rollback to finish")
    assert request["status"] == "succeeded", (request, story.log()[-3000:])

    # The app is back on the good release's code, with nobody typing anything.
    current = story.current()
    assert current["description"] == f"Rollback to v{good['version']}"
    assert current["slug"]["id"] == good["slug"]["id"]

    # The ledger tells the story: two counted failures, the third fails the release, one request.
    story_kinds = story.kinds_of(v)
    counted = [k for k in story_kinds if k in ("counted", "failed")]
    assert counted == ["counted", "counted", "failed"], story_kinds
    # After the request: the watch follows the rollback to its end, or hands over to the watch
    # the rollback release's own release phase scheduled, whichever comes first.
    after = story_kinds[story_kinds.index("rollback_requested") + 1:]
    assert after in ([], ["rollback_finished"], ["watch_ended"]), story_kinds
    failed = next(e for e in story.events_of(v) if e["kind"] == "failed")
    assert failed["reason"].startswith("3 failed probes in a row (threshold 3): status 500")
    assert failed["detail"]["failures"] == 3
    requested = next(e for e in story.events_of(v) if e["kind"] == "rollback_requested")
    assert requested["detail"]["db"] == "none" and requested["detail"]["target"]["version"] == good["version"]
    assert request["requested_by"] == "health-monitor" and request["db"] == "none"
    assert request["id"] == requested["detail"]["request_id"]

    # The rollback release gets its own watch, and passes it.
    wait_for(lambda: "verified" in story.kinds_of(current["version"]), timeout=30, what="the rollback release verified")
    assert len(story.requests()) == 1
    for version in (good["version"], v, current["version"]):
        assert story.kinds_of(version).count("watch_started") == 1
    assert story.kinds_of(good["version"]).count("verified") == 1
    assert story.kinds_of(v).count("failed") == 1 and story.kinds_of(v).count("rollback_requested") == 1
    # The notifications tell the same story, each once though two workers run.
    # The job notifies just after it records the request's end, which the test may already have read.
    wait_for(lambda: story.notes.events.count("health.verified") == 2 and "rollback.succeeded" in story.notes.events,
             what="the notifications")
    told = story.notes.events
    assert told.count("health.watch_started") == 3 and told.count("health.rollback_started") == 1
    assert told.count("rollback.succeeded") == 1  # sent by the rollback job
    assert told.index("health.verified") < told.index("health.rollback_started") < told.index("rollback.succeeded")
    started = story.notes.texts("health.rollback_started")[0]
    assert f"shop v{v} failed its health checks" in started and f"rolling back to v{good['version']}" in started


def test_a_rollback_release_that_also_fails_is_left_to_a_person(story: Story):
    story.start_worker()
    good = good_release_verified(story)
    story.mode_file.write_text("fail")  # from now on every release fails: the code is not the cause
    bad = story.deploy("bad")
    # The Platform API is down when the monitor first asks for the rollback (every retry answered
    # 503): the request is tried again at the next failed probe, not given up.
    outage = story.sandbox.faults.script(503, times=5, method="GET", path=r"^/apps/shop$", retry_after=0)
    wait_for(lambda: story.requests() and story.requests()[0]["status"] == "succeeded", timeout=60,
             what="the first rollback")
    assert story.sandbox.faults.hits(outage) == 5
    bad_kinds = story.kinds_of(bad["version"])
    assert bad_kinds.index("rollback_error") < bad_kinds.index("rollback_requested")
    error = next(e for e in story.events_of(bad["version"]) if e["kind"] == "rollback_error")
    assert "503" in error["reason"] and "trying again" in error["reason"]
    rollback = story.current()
    assert rollback["description"] == f"Rollback to v{good['version']}"
    wait_for(lambda: "suppressed" in story.kinds_of(rollback["version"]), timeout=30,
             what="the rollback release's failure")
    suppressed = next(e for e in story.events_of(rollback["version"]) if e["kind"] == "suppressed")
    assert f"v{rollback['version']} is a rollback to v{good['version']} and is still failing" in suppressed["reason"]
    assert suppressed["detail"]["needs_person"] is True
    time.sleep(1.0)
    assert len(story.requests()) == 1  # no second rollback
    assert story.current()["version"] == rollback["version"]
    assert bad["version"] < rollback["version"]
    wait_for(lambda: "health.rollback_suppressed" in story.notes.events, what="a person told")
    assert "a person must look" in story.notes.texts("health.rollback_suppressed")[0]


def test_a_crashing_release_is_caught_at_once_by_its_dynos(sandbox, database, redis_url, tmp_path, notes):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A 20 s grace: probes would not count for 20 s, and then only after threshold x interval;
    # a release whose dynos crash does not wait for either.
    story = Story(sandbox, database, redis_url, tmp_path, notes, name="crashy", BACKOUT_HEALTH_GRACE="20",
                  BACKOUT_HEALTH_WEBHOOK_PORT=str(port), BACKOUT_HEALTH_WEBHOOK_SECRET="dyno-webhook-secret-0123456789",
                  BACKOUT_HEALTH_WEBHOOK_URL=f"http://127.0.0.1:{port}/dyno-events")
    try:
        story.start_worker()
        good = story.deploy("good")
        _verify_by_hand(story, good["version"])
        crash = story.deploy("crash")
        v = crash["version"]
        wait_for(lambda: "failed" in story.kinds_of(v), timeout=15, what="the crash noticed")
        failed = next(e for e in story.events_of(v) if e["kind"] == "failed")
        assert "crashed" in failed["reason"] and "web.1" in failed["reason"], failed
        request = wait_for(lambda: story.requests() and story.requests()[0]["status"] in ("succeeded", "failed")
                           and story.requests()[0], timeout=60, what="the rollback")
        assert request["status"] == "succeeded", story.log()[-3000:]
        assert epoch(failed["at"]) - epoch(story.events_of(v)[0]["at"]) < 20  # inside the grace
        assert story.current()["description"] == f"Rollback to v{good['version']}"
        # The watch subscribed the receiver to the app's dyno events, once.
        hooks = story.client.webhooks("crashy")
        assert [(h["url"], h["include"]) for h in hooks] == [(story.env["BACKOUT_HEALTH_WEBHOOK_URL"], ["api:dyno"])]
    finally:
        story.stop()


def _verify_by_hand(story: Story, version: int) -> None:
    """Wait for the watch to start, then mark the release verified as its window would."""
    wait_for(lambda: "watch_started" in story.kinds_of(version), timeout=30, what="the watch")
    conn = ledger.connect(story.ledger_url)
    try:
        ledger.mark_release_verified(conn, story.name, version)
    finally:
        conn.close()
