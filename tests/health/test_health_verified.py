"""What the ledger says when a verified release has no checkpoint to mark (found by `backout demo`,
whose rollback release was told it probably lacked the release hook): a rollback release takes no
checkpoint by design; any other release should have one."""

from __future__ import annotations

import pytest

from backout import ledger
from backout import settings as settings_module
from backout.health.actions import on_verified
from backout.health.policy import Step

pytestmark = pytest.mark.integration


def _verified_reason(database: str, watch: dict) -> str:
    settings = settings_module.load({"BACKOUT_DATABASE_URL": database})
    with ledger.connect(database) as conn:
        on_verified(settings, conn, watch, Step("verified", "passed its probes for 3s"))
        return ledger.health_events(conn, watch["app"])[0]["reason"]


def test_the_rollback_release_of_a_request_is_named_as_such(database):
    with ledger.connect(database) as conn:
        request = ledger.create_request(conn, app="shop", target="v4", db="down", dry_run=False,
                                        requested_by="health-monitor")
        ledger.update_request(conn, request["id"], status="succeeded",
                              result={"status": "succeeded", "target_version": 4, "release_version": 6})
    reason = _verified_reason(database, {"app": "shop", "release_version": 6})
    assert reason == (f"passed its probes for 3s; v6 is a rollback release to v4 (request {request['id']}), "
                      "which takes no checkpoint of its own")


def test_a_rollback_made_by_hand_is_known_from_the_watch(database):
    reason = _verified_reason(database, {"app": "shop", "release_version": 6, "rollback_of": 4})
    assert reason.endswith("; v6 is a rollback release to v4, which takes no checkpoint of its own")


def test_a_deploy_without_a_checkpoint_points_at_the_release_hook(database):
    reason = _verified_reason(database, {"app": "shop", "release_version": 6})
    assert reason.endswith("; no complete deploy checkpoint of v6 to mark (was the release hook in the Procfile?)")
