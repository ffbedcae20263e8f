"""`backout status`: releases with their checkpoints, rollback requests, the last health verdict."""

from __future__ import annotations

import json

import pytest

from backout import cli, enqueue_rollback, ledger
from tests.rollback.support import APP, Shop, shop_checkpoint

pytestmark = pytest.mark.integration

KEYS = {"app", "current_release", "releases", "rollbacks", "running", "health"}


def test_status_tells_where_the_app_stands(shop: Shop, capsys: pytest.CaptureFixture) -> None:
    checkpoint = shop_checkpoint(shop.database, 3, verified=True)
    done = enqueue_rollback(APP, "v3", settings=shop.settings)
    shop.run_worker()
    waiting = enqueue_rollback(APP, "v4", settings=shop.settings)  # queued, no worker runs it
    conn = ledger.connect(shop.database)
    try:
        ledger.record_health_event(conn, app=APP, release_version=6, kind="counted", reason="probe failed")
        ledger.record_health_event(conn, app=APP, release_version=6, kind="verified", verdict="healthy",
                                   reason="10 minutes of passing probes")
        ledger.record_health_event(conn, app=APP, release_version=6, kind="watch_ended", reason="done")
    finally:
        conn.close()

    assert cli.main(["status", "--app", APP, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == KEYS
    assert document["current_release"]["version"] == 6
    assert [r["version"] for r in document["releases"]] == [6, 5, 4, 3, 2, 1]
    v3 = document["releases"][3]
    assert v3["checkpoint"]["id"] == checkpoint["id"] and v3["checkpoint"]["verified_healthy_at"]
    assert document["releases"][0]["checkpoint"] is None
    assert [r["request_id"] for r in document["rollbacks"]] == [waiting, done]
    assert document["rollbacks"][1]["status"] == "succeeded" and document["rollbacks"][1]["release_version"] == 6
    assert document["running"] == [waiting]
    assert document["health"]["verdict"] == "healthy" and document["health"]["release_version"] == 6

    assert cli.main(["status", "--app", APP]) == 0
    text = capsys.readouterr().out
    assert "app shop: current release v6" in text
    assert "health: healthy for v6" in text
    assert checkpoint["id"] in text and done in text and waiting in text


def test_status_of_an_unknown_app_exits_2(shop: Shop, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["status", "--app", "nosuchapp"]) == 2
    assert "unknown app 'nosuchapp'" in capsys.readouterr().err
