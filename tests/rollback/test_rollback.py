"""Rollbacks end to end: `enqueue_rollback` from a script, the job in a real RQ worker, the sandbox
(a local Heroku) and a real ledger. Each test owns its sandbox, database and Redis database.

The app `shop` has these releases (v1 is Heroku's empty initial release):

    v2 config FEATURE=old    v3 deploy slug A    v4 config FEATURE=new    v5 deploy slug B (current)

so a rollback to v3 must bring back slug A with FEATURE=old, as a new release v6 "Rollback to v3".
The slugs' release phase sleeps for as many seconds as the file `delay` says (0 when absent), so a
test can make the rollback release's phase slow.
"""

from __future__ import annotations

import gzip
import os
import signal
import time
from typing import Any

import pytest

from backout import enqueue_rollback, ledger
from backout import settings as settings_module
from backout.worker import queues
from tests.rollback.support import APP, Shop
from tests.stub_http import Reply, StubServer
from tests.support import ledger_queue_names, wait_for

pytestmark = pytest.mark.integration


def test_a_rollback_from_a_script(shop: Shop) -> None:
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    request = shop.request(request_id)
    assert request["status"] == "queued" and request["job_id"] == f"rollback-{request_id}"
    assert request["requested_by"].count("@") == 1
    assert request["plan"]["target"]["version"] == 3 and request["plan"]["current"]["version"] == 5
    assert request["plan"]["config_changes"]["changed"] == ["FEATURE"]
    assert shop.client.current_release(APP)["version"] == 5  # nothing changed before the worker ran

    shop.run_worker()

    request = shop.request(request_id)
    assert request["status"] == "succeeded", request
    current = shop.client.current_release(APP)
    assert current["description"] == "Rollback to v3" and current["version"] == 6
    assert current["slug"]["id"] == shop.slug_a
    assert shop.config()["FEATURE"] == "old"
    assert request["result"] == {"status": "succeeded", "rolled_back": True, "target_version": 3,
                                 "release_version": 6, "release_id": current["id"], "current_version": 6}
    assert shop.steps(request_id) == [
        ("plan", "done"), ("code_rollback", "started"), ("code_rollback", "done"),
        ("release_phase", "started"), ("release_phase", "done"), ("verify", "done"),
    ]
    [note] = shop.notified()
    assert note["event"] == "rollback.succeeded"
    assert note["text"].startswith("Rolled shop back to v3 as release v6")


def test_the_same_request_twice_rolls_back_once(shop: Shop) -> None:
    first = enqueue_rollback(APP, "v3", settings=shop.settings)
    # The sweep (or a retry) enqueues the same request again: it is queued once.
    assert not queues.enqueue_once(shop.redis, ledger_queue_names(shop.database)[0], queues.ROLLBACK_JOB, [first], f"rollback-{first}")
    assert queues.queue(ledger_queue_names(shop.database)[0], shop.redis).count == 1
    # A second request for the same release, made before the first ran.
    second = enqueue_rollback(APP, "v3", settings=shop.settings)
    shop.run_worker()

    assert shop.request(first)["status"] == "succeeded"
    merged = shop.request(second)
    assert merged["status"] == "succeeded"
    assert merged["result"]["rolled_back"] is False and merged["result"]["merged_into"] == first
    assert ("code_rollback", "skipped") in shop.steps(second)
    assert len(shop.rollback_releases()) == 1

    # A job delivered once more after it finished does nothing.
    from backout.jobs.rollback import run_rollback

    assert run_rollback(first)["release_version"] == 6
    assert len(shop.rollback_releases()) == 1
    assert shop.request(first)["attempts"] == 1


def test_two_concurrent_requests_run_one_after_the_other(shop: Shop) -> None:
    shop.delay_file.write_text("1")  # each rollback release's phase takes a second
    # Two idle workers: each takes one of the two requests at the same moment.
    shop.start_worker()
    shop.start_worker()
    wait_for(lambda: len(shop.redis.smembers("rq:workers")) == 2, what="two workers")
    to_v3 = enqueue_rollback(APP, "v3", settings=shop.settings)
    to_v4 = enqueue_rollback(APP, "v4", settings=shop.settings)
    wait_for(lambda: all(shop.request(r)["status"] in ("succeeded", "failed") for r in (to_v3, to_v4)),
             timeout=60, what="both rollbacks")

    first, second = shop.request(to_v3), shop.request(to_v4)
    assert (first["status"], second["status"]) == ("succeeded", "succeeded"), shop.worker_log()[-3000:]
    conn = ledger.connect(shop.database)
    try:
        spans = {}
        for request_id in (to_v3, to_v4):
            steps = ledger.steps(conn, request_id)
            begun = next(s["at"] for s in steps if s["step"] == "code_rollback")
            ended = next(s["at"] for s in steps if s["step"] == "verify")
            spans[request_id] = (begun, ended)
    finally:
        conn.close()
    # Never in parallel: one finished verifying before the other began.
    (a_begun, a_ended), (b_begun, b_ended) = sorted(spans.values())
    assert a_ended < b_begun
    # The one that waited said so, and the app ends on whichever ran last.
    waited = [r for r in (to_v3, to_v4) if ("lock", "started") in shop.steps(r)]
    assert len(waited) == 1
    last = max(spans, key=lambda r: spans[r][1])
    assert shop.client.current_release(APP)["description"] == ("Rollback to v3" if last == to_v3 else "Rollback to v4")


def test_a_worker_killed_mid_job_is_finished_once_by_the_next(shop: Shop) -> None:
    shop.delay_file.write_text("3")
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    worker = shop.start_worker()
    wait_for(lambda: ("release_phase", "started") in shop.steps(request_id), timeout=30, what="the release phase")
    # Heroku's SIGKILL: the worker, its work horse and its scheduler, all at once.
    _kill_tree(worker.pid)
    worker.wait(10)
    assert shop.request(request_id)["status"] == "running"

    # A new worker (the dyno restarted) finds the request in the ledger and finishes it.
    replacement = shop.start_worker("--burst")
    assert replacement.wait(60) == 0, shop.worker_log()[-3000:]
    request = shop.request(request_id)
    assert request["status"] == "succeeded", (request, shop.worker_log()[-3000:])
    assert request["attempts"] == 2
    assert len(shop.rollback_releases()) == 1
    assert shop.client.current_release(APP)["description"] == "Rollback to v3"
    steps = shop.steps(request_id)
    assert steps.count(("code_rollback", "done")) == 1 and ("requeue", "done") in steps
    assert "the worker running it died" in shop.worker_log()


def test_a_request_redis_lost_is_carried_out(shop: Shop) -> None:
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    shop.redis.flushdb()  # Redis restarted without persistence
    shop.run_worker()     # the worker's sweep at start re-enqueues it from the ledger
    assert shop.request(request_id)["status"] == "succeeded"
    assert ("requeue", "done") in shop.steps(request_id)
    assert shop.client.current_release(APP)["description"] == "Rollback to v3"


def test_a_request_made_while_redis_is_down_is_carried_out_later(shop: Shop) -> None:
    unreachable = settings_module.load({**shop.env, "REDIS_URL": "redis://127.0.0.1:9/0"})
    request_id = enqueue_rollback(APP, "v3", settings=unreachable)  # recorded, not enqueued
    assert shop.request(request_id)["status"] == "queued"
    assert queues.queue(ledger_queue_names(shop.database)[0], shop.redis).count == 0
    shop.run_worker()
    assert shop.request(request_id)["status"] == "succeeded"


def test_bursts_of_429_and_503_are_ridden_out(shop: Shop) -> None:
    faults = shop.sandbox.faults
    limited = faults.script(429, times=3, method="POST", path=r"/releases$", retry_after=0.2)
    unavailable = faults.script(503, times=2, method="GET", path=r"/releases/")
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    shop.run_worker()
    assert faults.hits(limited) == 3 and faults.hits(unavailable) == 2
    assert shop.request(request_id)["status"] == "succeeded"
    assert len(shop.rollback_releases()) == 1


def test_a_failing_release_phase_leaves_the_app_where_it_was(shop: Shop) -> None:
    shop.sandbox.faults.fail_release(APP)
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    shop.run_worker()
    request = shop.request(request_id)
    assert request["status"] == "failed"
    assert request["error"] == "the release phase of v6 (rollback to v3) ended failed; shop is still on v5"
    assert request["result"]["current_version"] == 5
    assert ("release_phase", "failed") in shop.steps(request_id)
    assert ("verify", "done") not in shop.steps(request_id)
    current = shop.client.current_release(APP)
    assert current["version"] == 5 and current["slug"]["id"] == shop.slug_b
    [note] = shop.notified()
    assert note["event"] == "rollback.failed" and "still on v5" in note["text"]


def _kill_tree(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send `sig` (SIGKILL unless told) to a process and every process under it."""
    def children(p: int) -> list[int]:
        try:
            found = []
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    found += [int(c) for c in f.read().split()]
            return found
        except FileNotFoundError:
            return []

    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children(p)
    for p in tree:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(c) for c in f.read().split())
    return found


def test_sigterm_lets_the_job_in_flight_finish(shop: Shop) -> None:
    shop.delay_file.write_text("2")
    worker = shop.start_worker()
    wait_for(lambda: shop.redis.smembers("rq:workers"), what="the worker")
    request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
    wait_for(lambda: ("release_phase", "started") in shop.steps(request_id), what="the release phase")
    # Heroku stops a dyno by sending SIGTERM to every process in it, work horse included.
    _kill_tree(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0, shop.worker_log()[-3000:]
    request = shop.request(request_id)
    assert request["status"] == "succeeded" and request["attempts"] == 1, shop.worker_log()[-3000:]
    assert shop.client.current_release(APP)["description"] == "Rollback to v3"


def test_a_killed_work_horse_is_reported_and_its_rollback_finished(shop: Shop) -> None:
    sentry = StubServer(lambda request: Reply(200, {}))
    try:
        shop.env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{sentry.port}/9"
        shop.delay_file.write_text("3")
        worker = shop.start_worker()
        wait_for(lambda: shop.redis.smembers("rq:workers"), what="the worker")
        time.sleep(0.5)  # its scheduler process has started
        before = _children(worker.pid)
        request_id = enqueue_rollback(APP, "v3", settings=shop.settings)
        wait_for(lambda: ("release_phase", "started") in shop.steps(request_id), what="the release phase")
        [horse] = _children(worker.pid) - before
        os.kill(horse, signal.SIGKILL)

        def reported() -> bool:
            return any(b"was killed by signal 9" in _body(r) for r in sentry.requests)

        wait_for(reported, timeout=15, what="the Sentry report")
        assert b"the work horse running job rollback-" + request_id.encode() in b"".join(_body(r) for r in sentry.requests)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        # The next worker's sweep finds the request without a live job and finishes it, once.
        assert shop.start_worker("--burst").wait(60) == 0
        assert shop.request(request_id)["status"] == "succeeded", shop.worker_log()[-3000:]
        assert len(shop.rollback_releases()) == 1
        # and the job its worker abandoned was reported too.
        assert f"rollback request {request_id} of shop re-enqueued".encode() in b"".join(_body(r) for r in sentry.requests)
    finally:
        sentry.close()


def _body(request: Any) -> bytes:
    return gzip.decompress(request.body) if request.headers.get("Content-Encoding") == "gzip" else request.body
