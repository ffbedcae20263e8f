"""The health policy as pure logic: verdicts, counts, grace, window, crashes and the guards."""

from backout.health.policy import (
    COUNTED,
    FAILED,
    GRACE,
    IGNORED_STALE,
    PASSED,
    RECOVERED,
    VERIFIED,
    Facts,
    Policy,
    WatchState,
    decide,
    due_verified,
    judge_round,
    observe,
    observe_crash,
)
from backout.health.probes import ERROR, FAIL, PASS, ProbeResult
from backout.release_version import rollback_target

POLICY = Policy(grace=10, interval=1, threshold=3, error_threshold=5, window=20, cooldown=100)


def result(outcome, reason="r", release=None, url="http://a/health"):
    return ProbeResult(url, outcome, reason, 200 if outcome == PASS else 500, release)


def round_of(*outcomes, release=None):
    return judge_round([result(o, f"{o}-reason", release, f"http://a/{i}") for i, o in enumerate(outcomes)], 42)


def test_a_wrong_answer_outweighs_no_answer_outweighs_a_pass():
    assert round_of(PASS, ERROR, FAIL).verdict == FAIL
    assert round_of(PASS, ERROR).verdict == ERROR
    assert round_of(PASS, PASS).verdict == PASS
    assert round_of(FAIL).reason == "fail-reason"
    assert "http://a/0: fail-reason; http://a/1: fail-reason" == round_of(FAIL, FAIL).reason


def test_release_match_counts_only_the_watched_release():
    old = judge_round([result(FAIL, release=41)], 42)
    assert old.verdict == "stale" and "answered by v41, not v42" in old.reason
    assert judge_round([result(FAIL, release=42)], 42).verdict == FAIL
    # no release said (a router error page): counted
    assert judge_round([result(FAIL, release=None)], 42).verdict == FAIL
    # a mix: the stale one is left out
    assert judge_round([result(FAIL, release=41), result(PASS, release=42)], 42).verdict == PASS
    # commits compare with the release's slug commit, short or long
    assert judge_round([result(FAIL, release="abc1234")], 42, "abc1234def").verdict == FAIL
    assert judge_round([result(FAIL, release="fff0000")], 42, "abc1234def").verdict == "stale"


def test_failures_in_grace_are_not_counted():
    state = WatchState(started_at=0)
    step = observe(POLICY, state, round_of(FAIL), at=9.5)
    assert step.kind == GRACE and "grace period" in step.reason
    assert observe(POLICY, state, round_of(PASS), at=9.9).kind == PASSED
    assert state.failures == 0


def test_failed_after_exactly_the_threshold():
    state = WatchState(started_at=0)
    kinds = [observe(POLICY, state, round_of(FAIL), at=10 + i).kind for i in range(3)]
    assert kinds == [COUNTED, COUNTED, FAILED]
    final = observe(POLICY, WatchState(started_at=0), round_of(FAIL), at=10)
    assert final.reason == "failed probe 1 of 3: fail-reason"


def test_failed_step_tells_the_run():
    state = WatchState(started_at=0)
    for i in range(2):
        observe(POLICY, state, round_of(FAIL), at=11 + i)
    step = observe(POLICY, state, round_of(FAIL), at=13)
    assert step.kind == FAILED
    assert step.reason.startswith("3 failed probes in a row (threshold 3)")
    assert step.detail["first_counted_at"] == 11 and len(step.detail["run"]) == 3


def test_a_blip_shorter_than_the_threshold_is_forgiven():
    state = WatchState(started_at=0)
    assert observe(POLICY, state, round_of(FAIL), at=11).kind == COUNTED
    assert observe(POLICY, state, round_of(ERROR), at=12).kind == COUNTED
    step = observe(POLICY, state, round_of(PASS), at=13)
    assert step.kind == RECOVERED and "1 failed and 1 unanswered probe" in step.reason
    assert (state.failures, state.errors) == (0, 0)
    assert [observe(POLICY, state, round_of(FAIL), at=14 + i).kind for i in range(2)] == [COUNTED, COUNTED]


def test_errors_have_their_own_threshold():
    state = WatchState(started_at=0)
    kinds = [observe(POLICY, state, round_of(ERROR), at=10 + i).kind for i in range(5)]
    assert kinds == [COUNTED] * 4 + [FAILED]
    assert "error threshold 5" in observe(POLICY, WatchState(0, errors=4), round_of(ERROR), at=10).reason


def test_failures_and_errors_both_count_until_a_pass():
    state = WatchState(started_at=0)
    steps = [observe(POLICY, state, round_of(v), at=10 + i).kind for i, v in enumerate([FAIL, ERROR, FAIL, ERROR, FAIL])]
    assert steps[-1] == FAILED and state.failures == 3 and state.errors == 2


def test_stale_rounds_do_not_touch_the_counts():
    state = WatchState(started_at=0, failures=2)
    step = observe(POLICY, state, judge_round([result(FAIL, release=41)], 42), at=15)
    assert step.kind == IGNORED_STALE and state.failures == 2


def test_verified_after_grace_and_window_on_a_pass():
    state = WatchState(started_at=0)
    assert observe(POLICY, state, round_of(PASS), at=29.9).kind == PASSED
    assert observe(POLICY, state, round_of(PASS), at=30).kind == VERIFIED
    # a failing run at the end of the window delays verification until a pass
    state = WatchState(started_at=0)
    assert observe(POLICY, state, round_of(FAIL), at=31).kind == COUNTED
    assert observe(POLICY, state, round_of(PASS), at=32).kind == VERIFIED


def test_verified_without_probes_after_the_window():
    state = WatchState(started_at=0)
    assert due_verified(POLICY, state, 29, probes=False) is None
    assert due_verified(POLICY, state, 30, probes=False).kind == VERIFIED
    assert due_verified(POLICY, state, 30, probes=True) is None


def test_a_crashed_dyno_of_the_release_fails_it_at_once():
    dynos = [
        {"name": "web.1", "state": "crashed", "release": {"version": 42}},
        {"name": "web.2", "state": "up", "release": {"version": 42}},
        {"name": "web.3", "state": "crashed", "release": {"version": 41}},
    ]
    step = observe_crash(42, dynos, "GET /apps/a/dynos")
    assert step.kind == FAILED and step.detail["crashed"] == ["web.1"]
    assert "dyno web.1 of v42 crashed" in step.reason
    assert observe_crash(43, dynos, "x") is None
    assert observe_crash(42, [{"name": "web.1", "state": "up", "release": {"version": 42}}], "x") is None


TARGET = {"id": "cp_01", "release_version": 41, "verified_healthy_at": "2026-01-01T00:00:00+00:00"}


def facts(**kw):
    base = dict(app="a", release_version=42, now=1000.0, target=TARGET)
    base.update(kw)
    return Facts(**base)


def test_rollback_with_the_db_step_the_policy_allows():
    for policy_value, db in (("code", "none"), ("code+down", "down"), ("code+restore", "restore")):
        d = decide(Policy(auto_rollback=policy_value), facts())
        assert (d.action, d.db) == ("rollback", db)
        assert d.target == {"checkpoint": "cp_01", "version": 41, "verified_healthy_at": TARGET["verified_healthy_at"]}
        assert d.reason == f"Roll back to v41 (cp_01) with --db {db}"


def test_guards_in_order():
    p = Policy(cooldown=100)
    off = decide(Policy(auto_rollback="off"), facts())
    assert off.action == "suppress" and "BACKOUT_AUTO_ROLLBACK is off" in off.reason and off.needs_person
    rb = decide(p, facts(is_rollback_release=True, rollback_of=41))
    assert rb.action == "suppress" and "v42 is a rollback to v41 and is still failing" in rb.reason
    twice = decide(p, facts(earlier_request="rb_1"))
    assert twice.action == "suppress" and "already requested (rb_1)" in twice.reason
    cool = decide(p, facts(last_auto_rollback_at=950.0))
    assert cool.action == "suppress" and "50s ago, within the 100s cooldown" in cool.reason
    assert decide(p, facts(last_auto_rollback_at=850.0)).action == "rollback"
    none = decide(p, facts(target=None))
    assert none.action == "suppress" and "no release before v42 was verified healthy" in none.reason


def test_dry_run_says_what_it_would_do_and_still_applies_the_guards():
    d = decide(Policy(dry_run=True, auto_rollback="code+down"), facts())
    assert d.action == "dry_run" and d.reason == "dry run (BACKOUT_HEALTH_DRY_RUN): would roll back to v41 (cp_01) with --db down"
    assert decide(Policy(dry_run=True), facts(target=None)).action == "suppress"


def test_rollback_of_reads_herokus_description():
    assert rollback_target("Rollback to v41") == 41
    assert rollback_target("Rollback to v7 (by backout)") == 7
    assert rollback_target("Deploy abc123") is None and rollback_target(None) is None
