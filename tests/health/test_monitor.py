"""The monitor against a real local app, real Redis, a real ledger and the watch job run by a real
RQ worker: verification, grace, blips, guards, dry run, release-match, two monitors, webhooks.

These need no Platform API (HEROKU_API_KEY is unset, so no dynos are listed and no rollback can be
enqueued); the rollbacks themselves are tested against the sandbox in test_monitor_sandbox.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timezone

import pytest
import redis

from backout import ledger
from backout.health.dyno_webhook import serve, signature
from backout.health.watches import WatchRegistry, new_record
from tests.health_support import (
    FAST,
    HealthApp,
    deploy_checkpoint,
    events,
    kinds,
    monitors,
    run_watch_job,
    use_env,
)
from tests.support import child_env, start_worker, stop_workers, wait_for

pytestmark = pytest.mark.integration

APP = "shop"


@pytest.fixture
def app():
    health_app = HealthApp()
    yield health_app
    health_app.close()


def env_for(database, redis_url, app, notes, **extra):
    return {"BACKOUT_DATABASE_URL": database, "REDIS_URL": redis_url, "BACKOUT_HEALTH_URL": app.url,
            "BACKOUT_NOTIFY_URL": notes.url, **FAST, **extra}


def test_a_healthy_release_is_verified_after_its_window(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes))
    cp = deploy_checkpoint(database, APP, 5, commit="abc1234")
    started = time.time()
    assert run_watch_job(redis_url, settings, APP, "v5")["watching"] is True
    with monitors(settings, redis_url):
        wait_for(lambda: "verified" in kinds(database, APP), what="verified")
    took = time.time() - started
    assert kinds(database, APP) == ["watch_started", "verified"]
    assert took >= 1.5  # never verified before its grace (0.5 s) and window (1 s) are over
    conn = ledger.connect(database)
    assert ledger.get_checkpoint(conn, cp["id"])["verified_healthy_at"] is not None
    conn.close()
    assert WatchRegistry(redis.Redis.from_url(redis_url)).get(APP) is None  # the watch is over
    wait_for(lambda: notes.events == ["health.watch_started", "health.verified"], what="notifications")
    assert "watching shop v5" in notes.texts("health.watch_started")[0]


def test_failures_during_grace_are_ignored(monkeypatch, database, redis_url, app, notes):
    # Grace counts from the hook's enqueue; a long one, so the monitor surely starts within it.
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_GRACE="2.5",
                                            BACKOUT_HEALTH_WINDOW="1"))
    deploy_checkpoint(database, APP, 5)
    app.mode = "fail"
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: kinds(database, APP).count("grace") >= 3, what="failures in grace")
        app.mode = "ok"
        wait_for(lambda: "verified" in kinds(database, APP), what="verified")
    seen = kinds(database, APP)
    assert "counted" not in seen and "failed" not in seen
    grace = [e for e in events(database, APP) if e["kind"] == "grace"]
    assert all("in the grace period" in e["reason"] and e["verdict"] == "fail" for e in grace)
    # Every probe is a sample for the web page's chart: the grace ones marked as not counted.
    with ledger.connect(database) as conn:
        samples = ledger.probe_samples(conn, APP)
    assert len([s for s in samples if s["outcome"] == "fail" and not s["counted"]]) >= 3
    assert any(s["outcome"] == "pass" and s["counted"] and s["status"] == 200 for s in samples)
    assert all(s["url"] == app.url and s["release_version"] == 5 for s in samples)


def test_a_blip_shorter_than_the_threshold_is_ignored(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_WINDOW="2.5"))
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: app.hits and app.hits[-1][0] > time.time() - 1 and time.time() > app.hits[0][0] + 0.8,
                 what="grace over")
        app.mode = "fail"
        wait_for(lambda: kinds(database, APP).count("counted") >= 2, what="two counted failures")
        app.mode = "ok"
        wait_for(lambda: "verified" in kinds(database, APP), what="verified")
    seen = kinds(database, APP)
    assert "failed" not in seen and "recovered" in seen
    counted = [e for e in events(database, APP) if e["kind"] == "counted"]
    assert counted[0]["reason"].startswith("failed probe 1 of 3: status 500")
    assert len(counted) == 2


def test_failure_without_a_verified_release_to_go_back_to_tells_a_person(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_WINDOW="5"))
    deploy_checkpoint(database, APP, 4)  # complete but never verified
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: time.time() > app.hits[0][0] + 0.6 if app.hits else False, what="grace over")
        app.mode = "fail"
        wait_for(lambda: "suppressed" in kinds(database, APP), what="suppressed")
    history = events(database, APP)
    failed = [e for e in history if e["kind"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"].startswith("3 failed probes in a row (threshold 3): status 500")
    suppressed = [e for e in history if e["kind"] == "suppressed"][0]
    assert "no release before v5 was verified healthy" in suppressed["reason"]
    assert suppressed["detail"]["needs_person"] is True
    wait_for(lambda: "health.rollback_suppressed" in notes.events, what="the person is told")
    conn = ledger.connect(database)
    assert ledger.list_requests(conn, APP) == []
    conn.close()


def test_dry_run_records_what_it_would_do_and_does_nothing(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_DRY_RUN="true",
                                            BACKOUT_AUTO_ROLLBACK="code+down"))
    good = deploy_checkpoint(database, APP, 4, verified=True)
    deploy_checkpoint(database, APP, 5)
    app.mode = "fail"
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: "dry_run" in kinds(database, APP), what="dry run decision")
    dry = [e for e in events(database, APP) if e["kind"] == "dry_run"][0]
    assert dry["reason"] == f"dry run (BACKOUT_HEALTH_DRY_RUN): would roll back to v4 ({good['id']}) with --db down"
    assert dry["detail"]["target"]["checkpoint"] == good["id"]
    conn = ledger.connect(database)
    assert ledger.list_requests(conn, APP) == []  # nothing was asked of the worker
    conn.close()
    assert "dry-run mode" in events(database, APP)[0]["reason"]
    wait_for(lambda: "health.dry_run" in notes.events, what="dry-run notification")


def test_probes_answered_by_another_release_are_not_counted(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_RELEASE_HEADER="X-Release",
                                            BACKOUT_HEALTH_WINDOW="1.5"))
    deploy_checkpoint(database, APP, 5)
    app.release, app.mode = "v4", "fail"  # preboot: the old release still answers, badly
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: kinds(database, APP).count("stale") >= 8, what="stale probes after grace")
        assert "counted" not in kinds(database, APP)
        app.release, app.mode = "v5", "ok"
        wait_for(lambda: "verified" in kinds(database, APP), what="verified")
    stale = [e for e in events(database, APP) if e["kind"] == "stale"][0]
    assert "answered by v4, not v5" in stale["reason"]


def test_two_monitors_share_one_watch(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_DRY_RUN="1",
                                            BACKOUT_HEALTH_WINDOW="5"))
    deploy_checkpoint(database, APP, 4, verified=True)
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url, count=2) as running:
        owner = wait_for(lambda: WatchRegistry(redis.Redis.from_url(redis_url)).owner(APP), what="an owner")
        assert owner in ("test-monitor-0", "test-monitor-1")
        time.sleep(0.8)
        holders = [m for m in running if APP in m.monitor.watches]
        assert len(holders) == 1
        app.mode = "fail"
        wait_for(lambda: "dry_run" in kinds(database, APP), what="the decision")
        time.sleep(1.0)
    assert kinds(database, APP).count("failed") == 1
    assert kinds(database, APP).count("dry_run") == 1
    # each probe round was made once, not once per monitor: ~5 rounds a second
    probes_per_second = len([h for h in app.hits if h[0] > app.hits[0][0] + 0.2]) / (app.hits[-1][0] - app.hits[0][0])
    assert probes_per_second < 7.5


def test_a_watch_moves_to_another_monitor_when_its_holder_stops(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_WINDOW="2"))
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    registry = WatchRegistry(redis.Redis.from_url(redis_url))
    with monitors(settings, redis_url, count=2) as running:
        first = wait_for(lambda: registry.owner(APP), what="an owner")
        holder = next(m for m in running if m.monitor.owner == first)
        holder.stop()
        second = wait_for(lambda: registry.owner(APP) not in (None, first) and registry.owner(APP), what="takeover")
        assert second != first
        wait_for(lambda: "verified" in kinds(database, APP), timeout=10, what="verified by the second monitor")


def test_a_newer_release_supersedes_the_watch(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_WINDOW="1.5"))
    run_watch_job(redis_url, settings, APP, 5)
    with monitors(settings, redis_url):
        wait_for(lambda: len(app.hits) >= 2, what="probes of v5")
        assert run_watch_job(redis_url, settings, APP, 6)["watching"] is True
        assert run_watch_job(redis_url, settings, APP, 5)["watching"] is False  # late and older: ignored
        wait_for(lambda: "watch_ended" in kinds(database, APP), what="v5's watch ended")
        wait_for(lambda: "verified" in kinds(database, APP), what="v6 verified")
    ended = [e for e in events(database, APP) if e["kind"] == "watch_ended"][0]
    assert ended["release_version"] == 5 and ended["reason"] == "superseded by a watch of v6"
    assert [e["release_version"] for e in events(database, APP) if e["kind"] == "verified"] == [6]


def test_the_same_release_registered_twice_is_watched_once(monkeypatch, database, redis_url, app, notes):
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes))
    assert run_watch_job(redis_url, settings, APP, 5)["watching"] is True
    assert run_watch_job(redis_url, settings, APP, 5) == {"app": APP, "release_version": 5, "watching": False,
                                                          "reason": "already watched"}
    assert kinds(database, APP) == ["watch_started"]


def test_nothing_to_watch_is_recorded_not_verified(monkeypatch, database, redis_url, app, notes):
    env = env_for(database, redis_url, app, notes)
    del env["BACKOUT_HEALTH_URL"]
    settings = use_env(monkeypatch, env)
    result = run_watch_job(redis_url, settings, APP, 5)
    assert result["watching"] is False and "set BACKOUT_HEALTH_URL" in result["reason"]
    assert kinds(database, APP) == ["watch_skipped"]
    assert WatchRegistry(redis.Redis.from_url(redis_url)).get(APP) is None


def test_a_signed_dyno_webhook_fails_the_release_at_once(monkeypatch, database, redis_url, app, notes):
    secret = "webhook-secret-0123456789abcdef"
    settings = use_env(monkeypatch, env_for(database, redis_url, app, notes, BACKOUT_HEALTH_GRACE="30",
                                            BACKOUT_HEALTH_WEBHOOK_SECRET=secret, BACKOUT_HEALTH_DRY_RUN="1"))
    deploy_checkpoint(database, APP, 4, verified=True)
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    receiver = serve(settings, redis.Redis.from_url(redis_url), 0, host="127.0.0.1")
    url = f"http://127.0.0.1:{receiver.server_address[1]}/dyno-events"
    try:
        with monitors(settings, redis_url) as running:
            wait_for(lambda: APP in running[0].monitor.watches, what="the watch held")
            body = json.dumps({"resource": "dyno", "action": "update", "data": {
                "app": {"name": APP}, "name": "web.1", "state": "crashed", "release": {"version": 5}},
                "published_at": datetime.now(timezone.utc).isoformat(),
                "webhook_metadata": {"delivery": {"id": "d-1"}}}).encode()
            # unsigned and wrongly signed deliveries are refused and change nothing
            for header in (None, signature("not-the-secret", body)):
                assert _post(url, body, header) == 401
            time.sleep(0.3)
            assert "failed" not in kinds(database, APP)
            sent = time.time()
            assert _post(url, body, signature(secret, body)) == 202
            wait_for(lambda: "dry_run" in kinds(database, APP), what="the crash acted on")
        failed = [e for e in events(database, APP) if e["kind"] == "failed"][0]
        assert failed["reason"] == "dyno web.1 of v5 crashed (seen in a dyno webhook)"
        # acted on inside the 30 s grace period, when no probe could have counted
        assert datetime.fromisoformat(failed["at"]).timestamp() - sent < 30
    finally:
        receiver.shutdown()
        receiver.server_close()


def _post(url: str, body: bytes, signature_value: str | None) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    if signature_value:
        request.add_header("Heroku-Webhook-Hmac-SHA256", signature_value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_watch_survives_its_worker_being_killed(monkeypatch, database, redis_url, app, notes, tmp_path):
    import os
    import signal

    env = env_for(database, redis_url, app, notes, BACKOUT_HEALTH_WINDOW="6")
    # `backout worker` wants the Platform API; nothing answers here, so dyno listings just fail.
    env.update(HEROKU_API_KEY="not-a-real-token", BACKOUT_HEROKU_API_URL="http://127.0.0.1:9")
    settings = use_env(monkeypatch, env)
    deploy_checkpoint(database, APP, 5)
    run_watch_job(redis_url, settings, APP, 5)
    registry = WatchRegistry(redis.Redis.from_url(redis_url))
    workers = []
    try:
        for i in range(2):
            # Each worker leads its own process group: killing one kills its RQ scheduler process too.
            workers.append(start_worker(child_env(env), tmp_path / f"w{i}.log"))
            if i == 0:
                first = wait_for(lambda: registry.owner(APP), timeout=15, what="the first worker's watch")
        holder = next(w for w in workers if f":{w.pid}:" in first)
        survivor = next(w for w in workers if w is not holder)
        assert "verified" not in kinds(database, APP)
        os.killpg(holder.pid, signal.SIGKILL)  # no goodbye: its owner key must expire by itself
        holder.wait(5)
        wait_for(lambda: "verified" in kinds(database, APP), timeout=20, what="verified after the kill")
        log = (tmp_path / f"w{workers.index(survivor)}.log").read_text()
        assert any(f":{survivor.pid}:" in line and "watches shop v5" in line for line in log.splitlines())
    finally:
        stop_workers(workers)


def test_a_late_watch_of_an_older_release_is_ignored_after_the_newer_watch_ended(redis_url):
    """Under load the newer release's watch can end (verified) before an older release's job runs."""
    registry = WatchRegistry(redis.Redis.from_url(redis_url))
    assert registry.register(new_record(APP, 6, time.time(), ["https://shop.example/up"])) is True
    assert registry.remove(APP, 6) is True  # v6's watch ended
    assert registry.register(new_record(APP, 5, time.time(), [])) is False  # late and older
    assert registry.register(new_record(APP, 6, time.time(), [])) is False  # watched once
    assert registry.get(APP) is None
    assert registry.register(new_record(APP, 7, time.time(), [])) is True
