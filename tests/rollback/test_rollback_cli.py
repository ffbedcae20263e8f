"""`backout rollback` through the CLI: --wait brings a sandbox app back, refusals exit 2 and change
nothing, --dry-run changes nothing, --json prints one stable document."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backout import cli, ledger
from backout.worker import queues
from tests.rollback.support import APP, Shop
from tests.support import ledger_queue_names

pytestmark = pytest.mark.integration

DOCUMENT_KEYS = {"request_id", "app", "to", "db", "dry_run", "status", "requested_by", "job_id", "attempts", "plan",
                 "result", "error", "created_at", "started_at", "finished_at", "steps"}


def _backout(shop: Shop, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **shop.env}
    return subprocess.run([sys.executable, "-m", "backout", *args], env=env, capture_output=True, text=True, timeout=120)


def _requests(shop: Shop) -> list[dict]:
    conn = ledger.connect(shop.database)
    try:
        return ledger.list_requests(conn, APP)
    finally:
        conn.close()


def test_rollback_to_previous_with_wait_brings_the_app_back(shop: Shop) -> None:
    shop.start_worker()
    done = _backout(shop, "rollback", "--app", APP, "--to", "previous", "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr, shop.worker_log()[-3000:])
    # previous: no release was verified healthy, so the newest eligible release before v5, v4.
    assert done.stdout.strip() == "succeeded: shop runs release v6, a rollback to v4 (verified)"
    for line in ("code_rollback: started", "release_phase: done", "verify: done"):
        assert any(line in shown and "s] " in shown for shown in done.stderr.splitlines()), done.stderr
    current = shop.client.current_release(APP)
    assert current["description"] == "Rollback to v4" and current["slug"]["id"] == shop.slug_a
    assert shop.config()["FEATURE"] == "new"

    # Again, to v3, as one JSON document.
    done = _backout(shop, "rollback", "--app", APP, "--to", "v3", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == DOCUMENT_KEYS
    assert document["status"] == "succeeded" and document["to"] == "v3" and document["db"] == "none"
    assert document["result"]["release_version"] == 7 and document["result"]["rolled_back"] is True
    assert [s["step"] for s in document["steps"]] == [
        "plan", "code_rollback", "code_rollback", "release_phase", "release_phase", "verify"]
    assert shop.config()["FEATURE"] == "old"


def test_wait_exits_1_when_the_rollback_fails(shop: Shop) -> None:
    shop.sandbox.faults.fail_release(APP)
    shop.start_worker()
    done = _backout(shop, "rollback", "--app", APP, "--to", "v3", "--wait")
    assert done.returncode == 1
    assert done.stdout.strip() == "failed: the release phase of v6 (rollback to v3) ended failed; shop is still on v5"
    assert "release_phase: failed" in done.stderr


REFUSALS = [
    (["--app", "nosuchapp", "--to", "v3"], "unknown app 'nosuchapp'"),
    (["--app", APP, "--to", "v99"], "app 'shop' has no release v99"),
    (["--app", APP, "--to", "v1"], "release v1 of 'shop' cannot be rolled back to"),
    (["--app", APP, "--to", "cp_01ARZ3NDEKTSV4RRFFQ69G5FAV"],
     "checkpoint cp_01ARZ3NDEKTSV4RRFFQ69G5FAV is not a checkpoint of 'shop'"),
    (["--app", APP, "--to", "yesterday"], "--to 'yesterday' is not understood; expected vNN"),
    (["--app", APP, "--to", "v3", "--db", "down"],
     "--db down discards data written since the checkpoint; to allow it, add --confirm shop"),
    (["--app", APP, "--to", "v3", "--db", "restore", "--confirm", "other"], "add --confirm shop"),
    (["--app", APP, "--to", "v3", "--db", "restore", "--confirm", APP], "no complete checkpoint of shop holds the database of v3"),
]


def test_a_refused_plan_exits_2_and_changes_nothing(shop: Shop, capsys: pytest.CaptureFixture) -> None:
    for args, message in REFUSALS:
        assert cli.main(["rollback", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert _requests(shop) == []
    assert queues.queue(ledger_queue_names(shop.database)[0], shop.redis).count == 0
    assert shop.client.current_release(APP)["version"] == 5
    assert cli.main(["rollback", "--app", APP, "--to", "v99", "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "refused" and document["request_id"] is None
    assert "has no release v99" in document["error"]


def test_dry_run_prints_the_plan_and_changes_nothing(shop: Shop, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rollback", "--app", APP, "--to", "v3", "--dry-run", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "target:  v3" in out and "config vars changed: FEATURE" in out and "nothing was changed" in out
    [request] = _requests(shop)
    assert request["dry_run"] and request["status"] == "succeeded" and request["result"] == {"dry_run": True}
    assert queues.queue(ledger_queue_names(shop.database)[0], shop.redis).count == 0
    shop.run_worker()  # a worker's sweep leaves a dry run alone
    assert shop.client.current_release(APP)["version"] == 5


def test_a_target_the_app_already_runs_is_done_without_a_release(shop: Shop, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rollback", "--app", APP, "--to", "v5", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "queued" and document["plan"]["noop"] is True
    shop.run_worker()
    request = shop.request(document["request_id"])
    assert request["status"] == "succeeded" and request["result"]["rolled_back"] is False
    assert shop.client.current_release(APP)["version"] == 5


def test_a_rollback_whose_code_was_already_there_says_what_it_did_to_the_database(capsys):
    from argparse import Namespace

    from backout.cli.rollback import _print_human

    document = {"status": "succeeded", "app": APP, "request_id": "rb_1", "plan": {},
                "result": {"rolled_back": False, "target_version": 3,
                           "db": {"tool": "alembic", "undone": ["c3", "b2"], "state": ["a1"]}}}
    _print_human(document, Namespace(dry_run=False, wait=True))
    assert capsys.readouterr().out.strip() == (
        f"succeeded: {APP} already ran v3's code and config, so they were not rolled back; the database was rolled "
        "back: undid 2 alembic migration(s) (c3, b2)")
