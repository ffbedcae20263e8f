"""BACKOUT_AUTO_ROLLBACK=auto as pure policy: the branch the cost of a rollback chooses, and why."""

from __future__ import annotations

from backout.health.policy import Facts, Policy, decide

TARGET = {"id": "cp_01TARGET", "release_version": 41, "verified_healthy_at": "2026-01-01T00:00:00+00:00"}
AUTO = Policy(auto_rollback="auto")


def cost(verdict: str, text: str, loss: list | None = None, counted: bool = True) -> dict:
    return {"verdict": verdict, "text": text, "reason": "because", "loss": loss or [], "loss_counted": counted,
            "deciding": [], "down_drops": [], "releases": [42]}


def facts(c: dict | None) -> Facts:
    return Facts(app="shop", release_version=42, now=1000.0, target=TARGET, cost=c)


def test_code_only_when_the_previous_code_runs_on_the_new_schema():
    d = decide(AUTO, facts(cost("code-only", "code-only rollback safe")))
    assert (d.action, d.db, d.branch, d.needs_person) == ("rollback", "none", "code", False)
    assert d.reason == ("Roll back to v41 (cp_01TARGET) with --db none: BACKOUT_AUTO_ROLLBACK=auto chose code because "
                        "the verdict is code-only rollback safe: because; the database keeps the newer schema")
    assert d.detail()["branch"] == "code" and d.detail()["cost"]["verdict"] == "code-only"


def test_code_and_down_when_the_down_loses_nothing():
    d = decide(AUTO, facts(cost("down-needed", "down needed")))
    assert (d.action, d.db, d.branch) == ("rollback", "down", "code+down")
    assert "lose nothing written since the deploy" in d.reason


def test_a_person_when_the_down_would_lose_data_or_cannot_undo_or_was_not_counted():
    lost = [{"what": "3 rows of tags"}]
    for c in (cost("down-loses-data", "down loses data", lost), cost("irreversible", "irreversible"),
              cost("down-needed", "down needed", counted=False), cost("no-verdict", "no verdict"), None):
        d = decide(AUTO, facts(c))
        assert (d.action, d.db, d.branch, d.needs_person) == ("suppress", None, "person", True), c
        assert "rolls back nothing by itself" in d.reason and "--db restore --confirm shop" in d.reason
        assert "backout rollback --app shop --to cp_01TARGET --db down --confirm shop" in d.reason
    assert "(it would lose 3 rows of tags)" in decide(AUTO, facts(cost("down-loses-data", "x", lost))).reason


def test_the_guards_still_come_first_and_a_dry_run_says_what_auto_would_do():
    guarded = decide(AUTO, Facts(app="shop", release_version=42, now=1000.0, target=None,
                                 cost=cost("code-only", "code-only rollback safe")))
    assert guarded.action == "suppress" and "nothing known good" in guarded.reason and guarded.branch is None
    dry = decide(Policy(auto_rollback="auto", dry_run=True), facts(cost("down-needed", "down needed")))
    assert (dry.action, dry.db, dry.branch) == ("dry_run", "down", "code+down")
    assert dry.reason.startswith("dry run (BACKOUT_HEALTH_DRY_RUN): would roll back to v41")
