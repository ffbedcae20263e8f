"""Rollbacks under fire, each fault tried again and again on the sandbox app `shop` (see
tests/rollback/test_rollback.py): 429/503 bursts around the rollback POST, a POST that took effect
but was answered 503, the worker killed with its whole process tree mid-job, Redis flushed after
the enqueue, and concurrent requests for the same and for different targets. Every request ends
done, exactly once: one rollback release per request that needed one.
"""

from __future__ import annotations

import threading

import pytest

from backout import enqueue_rollback
from backout.http_retry import RetryPolicy
from backout.worker.recovery import requeue_lost
from tests.faults.conftest import Trials
from tests.rollback.support import APP, Shop
from tests.rollback.test_rollback import _kill_tree
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _target(i: int) -> int:
    """Alternate between two releases, so that every try makes a rollback release."""
    return 3 if i % 2 == 0 else 5


def _rolled_back_once(shop: Shop, request_id: str, version: int, releases_before: int) -> None:
    request = shop.request(request_id)
    assert request["status"] == "succeeded", (request, shop.steps(request_id), shop.worker_log()[-2000:])
    assert shop.client.current_release(APP)["description"] == f"Rollback to v{version}"
    assert len(shop.rollback_releases(version)) == releases_before + 1, shop.client.list_releases(APP)[:4]


def test_a_rollback_post_answered_503_after_it_took_effect_is_completed(shop: Shop, trials: Trials) -> None:
    faults = shop.sandbox.faults

    def trial(i: int) -> None:
        version = _target(i)
        before = len(shop.rollback_releases(version))
        faults.script(429, times=2, method="GET", path=r"/releases", retry_after=0.1)
        # The POST takes effect but is answered 503 (slowly); then every read of the releases that
        # would show it took effect is answered 503 too, until the client's retries run out.
        post = faults.script(503, times=1, method="POST", path=r"/releases$", after=True, delay=1.5)
        request_id = enqueue_rollback(APP, f"v{version}", settings=shop.settings)

        def then_reads_fail() -> None:
            wait_for(lambda: faults.hits(post), timeout=60, poll=0.01, what="the rollback POST")
            faults.script(503, times=RetryPolicy().max_attempts, method="GET", path=r"/releases$")

        storm = threading.Thread(target=then_reads_fail)
        storm.start()
        shop.run_worker()  # in this thread: RQ's worker sets signal handlers
        storm.join(60)
        assert shop.request(request_id)["status"] == "failed"  # the job saw only 503s
        # The sweep finds the rollback release Heroku made, and the job follows it to the end.
        assert request_id in requeue_lost(shop.settings, shop.redis)
        shop.run_worker()
        _rolled_back_once(shop, request_id, version, before)
        assert ("reconcile", "done") in shop.steps(request_id)

    trials.run(trial, default=2)


def test_bursts_of_429_and_503_around_the_post_are_ridden_out(shop: Shop, trials: Trials) -> None:
    faults = shop.sandbox.faults

    def trial(i: int) -> None:
        version = _target(i)
        before = len(shop.rollback_releases(version))
        faults.script(429, times=3, method="POST", path=r"/releases$", retry_after=0.1)
        faults.script(503, times=2, method="GET", path=r"/releases/")
        faults.script(503, times=2, method="GET", path=r"/config-vars")
        request_id = enqueue_rollback(APP, f"v{version}", settings=shop.settings)
        shop.run_worker()
        _rolled_back_once(shop, request_id, version, before)

    trials.run(trial, default=2)


def test_a_worker_killed_with_its_tree_mid_job_is_finished_once(shop: Shop, trials: Trials) -> None:
    shop.delay_file.write_text("2")

    def trial(i: int) -> None:
        version = _target(i)
        before = len(shop.rollback_releases(version))
        request_id = enqueue_rollback(APP, f"v{version}", settings=shop.settings)
        worker = shop.start_worker()
        wait_for(lambda: ("release_phase", "started") in shop.steps(request_id), timeout=60, what="the release phase")
        _kill_tree(worker.pid)  # Heroku's SIGKILL: worker, work horse and scheduler at once
        worker.wait(10)
        replacement = shop.start_worker("--burst")
        assert replacement.wait(120) == 0, shop.worker_log()[-3000:]
        _rolled_back_once(shop, request_id, version, before)
        assert shop.steps(request_id).count(("code_rollback", "done")) == 1

    trials.run(trial, default=1)


def test_redis_flushed_after_the_enqueue(shop: Shop, trials: Trials) -> None:
    def trial(i: int) -> None:
        version = _target(i)
        before = len(shop.rollback_releases(version))
        request_id = enqueue_rollback(APP, f"v{version}", settings=shop.settings)
        shop.redis.flushdb()  # Redis restarted without persistence
        shop.run_worker()     # the sweep at the worker's start enqueues it again from the ledger
        _rolled_back_once(shop, request_id, version, before)

    trials.run(trial, default=2)


def test_concurrent_requests_for_the_same_and_different_targets(shop: Shop, trials: Trials) -> None:
    def trial(i: int) -> None:
        version, other = _target(i), _target(i + 1)
        same = [enqueue_rollback(APP, f"v{version}", settings=shop.settings) for _ in range(3)]
        different = enqueue_rollback(APP, f"v{other}", settings=shop.settings)
        again = enqueue_rollback(APP, f"v{version}", settings=shop.settings)
        shop.run_worker()
        asked = [*same, different, again]
        assert all(shop.request(r)["status"] == "succeeded" for r in asked), [shop.request(r) for r in asked]
        # Run one after the other, they end where the last one asked, each doing its work once.
        assert shop.client.current_release(APP)["description"] == f"Rollback to v{version}"
        for request_id in asked:
            assert shop.steps(request_id).count(("code_rollback", "done")) <= 1

    trials.run(trial, default=1)
