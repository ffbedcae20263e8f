"""Plans: input checks that refuse before any call, config changes by name, the text people read."""

from __future__ import annotations

import pytest

from backout import ledger
from backout.errors import PlanRefused
from backout.heroku import HerokuClient
from backout.rollback.plan import build_plan, config_changes, describe
from tests.rollback.support import shop_checkpoint

# Nothing listens on port 9: a plan refused for its input must not even try the API.
OFFLINE = HerokuClient("t0ken", "http://127.0.0.1:9", "http://127.0.0.1:9")


@pytest.mark.parametrize("to", ["", "41", "v", "vx1", "v4.1", "latest", "cp_123", "prev", "v 41"])
def test_a_target_in_no_known_form_is_refused_before_any_call(to: str) -> None:
    with pytest.raises(PlanRefused, match="expected vNN"):
        build_plan(OFFLINE, None, "app-one", to)


def test_an_unknown_database_step_is_refused() -> None:
    with pytest.raises(PlanRefused, match="--db 'all' is not one of none, down, restore"):
        build_plan(OFFLINE, None, "app-one", "v3", db="all")


def test_config_changes_name_keys_never_values() -> None:
    current = {"A": "1", "B": "secret-b", "C": "3"}
    target = {"A": "1", "B": "other-secret", "D": "4"}
    changes = config_changes(current, target)
    assert changes == {"added": ["D"], "removed": ["C"], "changed": ["B"]}
    assert "secret" not in repr(changes)


def _plan(**overrides) -> dict:
    plan = {
        "app": "app-one", "to": "previous", "resolved_by": "verified-checkpoint",
        "current": {"version": 7, "id": "r7", "slug_id": "s7", "description": "Deploy abc", "created_at": None,
                    "checkpoint_id": "cp_7"},
        "target": {"version": 5, "id": "r5", "slug_id": "s5", "description": "Deploy 123", "created_at": None,
                   "checkpoint_id": "cp_5", "verified_healthy_at": "2025-01-01T00:00:00+00:00"},
        "config_changes": {"added": [], "removed": ["NEW_FLAG"], "changed": []},
        "noop": False, "db": "none", "db_step": None, "steps": ["code_rollback", "release_phase", "verify"],
    }
    plan.update(overrides)
    return plan


def test_describe_says_what_changes() -> None:
    text = describe(_plan())
    assert "current: v7  Deploy abc" in text
    assert "target:  v5  Deploy 123  (the newest release verified healthy (checkpoint cp_5))" in text
    assert "slug changes; config vars removed: NEW_FLAG" in text
    assert "database: left as it is" in text
    assert "steps:   code_rollback -> release_phase -> verify" in text


def test_describe_says_when_there_is_nothing_to_do() -> None:
    text = describe(_plan(noop=True, steps=["verify"]))
    assert "nothing to do: the app already runs the target's slug and config vars" in text


def test_config_set_by_add_ons_is_left_out() -> None:
    current = {"DATABASE_URL": "postgres://new", "FLAG": "on"}
    target = {"DATABASE_URL": "postgres://old"}
    assert config_changes(current, target, managed={"DATABASE_URL"}) == {"added": [], "removed": ["FLAG"], "changed": []}


# --- against the sandbox ------------------------------------------------------------------------


def _plan_for(shop, to: str) -> dict:
    conn = ledger.connect(shop.database)
    try:
        return build_plan(shop.client, conn, "shop", to)
    finally:
        conn.close()


@pytest.mark.integration
def test_previous_prefers_the_newest_release_verified_healthy(shop) -> None:
    shop_checkpoint(shop.database, 2, verified=True)
    verified = shop_checkpoint(shop.database, 3, verified=True)
    shop_checkpoint(shop.database, 4, verified=False)
    plan = _plan_for(shop, "previous")
    assert plan["resolved_by"] == "verified-checkpoint"
    assert plan["target"]["version"] == 3 and plan["target"]["checkpoint_id"] == verified["id"]
    assert plan["target"]["verified_healthy_at"]
    assert plan["current"]["version"] == 5 and plan["noop"] is False
    assert plan["steps"] == ["code_rollback", "release_phase", "verify"]
    # Naming the checkpoint comes to the same release.
    by_checkpoint = _plan_for(shop, verified["id"])
    assert by_checkpoint["resolved_by"] == "checkpoint" and by_checkpoint["target"]["version"] == 3


@pytest.mark.integration
def test_a_failed_release_is_not_a_target(shop) -> None:
    shop.sandbox.faults.fail_release("shop")
    with pytest.raises(AssertionError):
        shop.deploy("c")  # v6: its release phase fails
    with pytest.raises(PlanRefused, match="release v6 of 'shop' cannot be rolled back to: its status is failed"):
        _plan_for(shop, "v6")
    # and `previous` passes over it to the newest eligible release before the current one.
    assert _plan_for(shop, "previous")["target"]["version"] == 4
