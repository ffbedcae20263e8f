"""The ledger against a real PostgreSQL: schema creation, checkpoints, requests, steps, health, locks."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from backout import ledger
from backout.errors import BackoutError

pytestmark = pytest.mark.integration


def _checkpoint(conn, app="my-app", version=5, kind="deploy", **extra):
    fields = dict(app=app, kind=kind, release_version=version, release_id=f"rel-{version}", slug_id="slug-1",
                  slug_commit="abc123", previous_release_version=version - 1, backup_strategy="pg_dump",
                  migration_tool="alembic")
    fields.update(extra)
    return ledger.create_checkpoint(conn, **fields)


def test_ids_sort_by_creation_time():
    ids = [ledger.new_id("cp") for _ in range(500)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 500
    assert all(i.startswith("cp_") and len(i) == 29 for i in ids)
    earlier = ledger.new_id("rb")
    time.sleep(0.002)
    assert ledger.new_id("rb") > earlier


def test_connect_creates_the_schema_and_is_idempotent(database):
    with ledger.connect(database) as conn:
        tables = {r["table_name"] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'backout'").fetchall()}
        assert {"checkpoints", "requests", "steps", "health_events", "schema_version"} <= tables
        version = conn.execute("SELECT version FROM backout.schema_version").fetchall()
        assert version == [{"version": ledger.SCHEMA_VERSION}]
    with ledger.connect(database) as conn:
        assert conn.execute("SELECT count(*) AS n FROM backout.schema_version").fetchone()["n"] == 1


def test_two_processes_creating_the_schema_at_once(database):
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start():
        try:
            barrier.wait()
            ledger.connect(database).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with ledger.connect(database) as conn:
        assert conn.execute("SELECT count(*) AS n FROM backout.schema_version").fetchone()["n"] == 1


def test_a_newer_schema_is_refused(database):
    with ledger.connect(database) as conn:
        conn.execute("UPDATE backout.schema_version SET version = version + 1")
    with pytest.raises(BackoutError, match="newer than this backout"):
        ledger.connect(database)


def test_unreachable_ledger_gives_one_clear_line_without_the_password():
    with pytest.raises(BackoutError) as info:
        ledger.connect("postgresql://someone:hunter22@127.0.0.1:1/nowhere")
    message = str(info.value)
    assert "cannot connect to the ledger database" in message
    assert "hunter22" not in message
    assert "\n" not in message


def test_checkpoint_lifecycle_with_json_friendly_rows(database):
    with ledger.connect(database) as conn:
        cp = _checkpoint(conn)
        assert cp["status"] == "running"
        assert cp["id"].startswith("cp_")
        assert cp["created_at"].endswith("+00:00")
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text AS l").fetchone()["l"]
        saved = [{"tool": "alembic", "id": "b2", "name": "add", "down": "DROP TABLE t",
                  "transactional": True, "reversible": True, "files": {}}]
        done = ledger.update_checkpoint(
            conn, cp["id"], status="complete", wal_lsn=lsn, config_fingerprint="f" * 64,
            backup={"path": "/x.dump.zst", "size": 10, "sha256": "00"}, migrations_before=["a1"],
            migrations_after=["a1", "b2"], down_scripts=saved, irreversible=[], completed_at="now",
            database={"url": "postgres://u:********@h/d", "name": "d"},
        )
        assert done["status"] == "complete"
        assert done["wal_lsn"] == lsn
        assert done["reversible"] is True
        assert done["down_scripts"] == saved
        assert done["completed_at"] >= done["created_at"]
        json.dumps(done)  # every value is JSON-friendly
        assert ledger.get_checkpoint(conn, cp["id"]) == done
        assert ledger.get_checkpoint(conn, "cp_missing") is None

        marked = ledger.update_checkpoint(conn, cp["id"], irreversible=["c3"])
        assert marked["reversible"] is False


def test_update_checkpoint_rejects_bad_fields_and_statuses(database):
    with ledger.connect(database) as conn:
        cp = _checkpoint(conn)
        with pytest.raises(ValueError, match="status"):
            ledger.update_checkpoint(conn, cp["id"], status="done")
        with pytest.raises(ValueError, match="app"):
            ledger.update_checkpoint(conn, cp["id"], app="other")
        with pytest.raises(BackoutError, match="not in the ledger"):
            ledger.update_checkpoint(conn, "cp_nope", status="failed")
        with pytest.raises(ValueError, match="kind"):
            _checkpoint(conn, kind="weekly")


def test_listing_finding_and_verifying_checkpoints(database):
    with ledger.connect(database) as conn:
        made = {}
        for version in (3, 4, 5):
            cp = _checkpoint(conn, version=version)
            made[version] = ledger.update_checkpoint(conn, cp["id"], status="complete", completed_at="now")
        failed = _checkpoint(conn, version=6)
        ledger.update_checkpoint(conn, failed["id"], status="failed", error="disk full")
        _checkpoint(conn, app="other-app", version=9)

        listed = ledger.list_checkpoints(conn, "my-app")
        assert [c["release_version"] for c in listed] == [6, 5, 4, 3]
        assert [c["release_version"] for c in ledger.list_checkpoints(conn, "my-app", limit=2)] == [6, 5]

        assert ledger.checkpoint_for_release(conn, "my-app", 4)["id"] == made[4]["id"]
        assert ledger.checkpoint_for_release(conn, "my-app", 6) is None  # failed, never complete
        assert ledger.latest_verified_checkpoint(conn, "my-app") is None

        ledger.mark_release_verified(conn, "my-app", 3)
        ledger.mark_release_verified(conn, "my-app", 4)
        first = ledger.get_checkpoint(conn, made[4]["id"])["verified_healthy_at"]
        ledger.mark_release_verified(conn, "my-app", 4)
        assert ledger.get_checkpoint(conn, made[4]["id"])["verified_healthy_at"] == first

        assert ledger.latest_verified_checkpoint(conn, "my-app")["release_version"] == 4
        assert ledger.latest_verified_checkpoint(conn, "my-app", before_version=4)["release_version"] == 3
        assert ledger.latest_verified_checkpoint(conn, "my-app", before_version=3) is None
        assert ledger.latest_verified_checkpoint(conn, "other-app") is None


def test_safety_checkpoints_are_not_release_checkpoints(database):
    with ledger.connect(database) as conn:
        cp = _checkpoint(conn, version=7, kind="safety", request_id="rb_1")
        ledger.update_checkpoint(conn, cp["id"], status="complete")
        ledger.mark_release_verified(conn, "my-app", 7)
        assert ledger.checkpoint_for_release(conn, "my-app", 7) is None
        assert ledger.get_checkpoint(conn, cp["id"])["verified_healthy_at"] is None
        assert ledger.get_checkpoint(conn, cp["id"])["request_id"] == "rb_1"


def test_requests_and_their_steps(database):
    with ledger.connect(database) as conn:
        req = ledger.create_request(conn, app="my-app", target="v41", db="down", dry_run=False,
                                    requested_by="cli", plan={"release": 41}, params={"confirm": "my-app"})
        assert req["status"] == "queued" and req["id"].startswith("rb_")
        assert req["kind"] == "heroku" and req["attempts"] == 0 and req["plan"] == {"release": 41}
        other = ledger.create_request(conn, app="other-app", target="previous", db="none", dry_run=True,
                                      requested_by="monitor")

        running = ledger.update_request(conn, req["id"], status="running", started_at="now", job_id="j1",
                                        attempts=1)
        assert running["status"] == "running" and running["job_id"] == "j1" and running["attempts"] == 1
        assert running["updated_at"] > req["updated_at"]
        with pytest.raises(ValueError, match="status"):
            ledger.update_request(conn, req["id"], status="paused")
        with pytest.raises(BackoutError, match="not in the ledger"):
            ledger.update_request(conn, "rb_nope", status="failed")

        assert [r["id"] for r in ledger.list_requests(conn)] == [other["id"], req["id"]]
        assert [r["id"] for r in ledger.list_requests(conn, app="my-app")] == [req["id"]]
        assert [r["id"] for r in ledger.list_requests(conn, statuses=["queued"])] == [other["id"]]
        assert ledger.list_requests(conn, app="my-app", statuses=["queued", "failed"]) == []
        assert len(ledger.list_requests(conn, limit=1)) == 1

        ledger.record_step(conn, req["id"], "plan", "done", {"releases": [41]})
        ledger.record_step(conn, req["id"], "down_migration", "started")
        ledger.record_step(conn, req["id"], "down_migration", "failed", {"error": "boom"})
        story = ledger.steps(conn, req["id"])
        assert [(s["step"], s["status"]) for s in story] == [
            ("plan", "done"), ("down_migration", "started"), ("down_migration", "failed")]
        assert story[0]["detail"] == {"releases": [41]}
        with pytest.raises(ValueError, match="status"):
            ledger.record_step(conn, req["id"], "plan", "ok")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            ledger.record_step(conn, "rb_nope", "plan", "done")

        finished = ledger.update_request(conn, req["id"], status="succeeded", finished_at="now",
                                         result={"release": 43})
        assert finished["result"] == {"release": 43}
        json.dumps(finished)
        assert ledger.get_request(conn, req["id"]) == finished
        assert ledger.get_request(conn, "rb_nope") is None


def test_health_events_newest_first(database):
    with ledger.connect(database) as conn:
        ledger.record_health_event(conn, app="my-app", release_version=5, kind="probe", verdict="pass")
        ledger.record_health_event(conn, app="my-app", release_version=5, kind="verdict", verdict="fail",
                                   reason="3 failed probes", detail={"status": 503})
        ledger.record_health_event(conn, app="other-app", release_version=1, kind="probe")
        events = ledger.health_events(conn, "my-app")
        assert [e["kind"] for e in events] == ["verdict", "probe"]
        assert events[0]["detail"] == {"status": 503} and events[0]["reason"] == "3 failed probes"
        assert events[0]["id"].startswith("he_")
        assert len(ledger.health_events(conn, "my-app", limit=1)) == 1


def test_app_lock_is_exclusive_per_app(database):
    ledger.connect(database).close()
    with ledger.app_lock(database, "my-app") as held:
        assert held is True
        with ledger.app_lock(database, "my-app", wait=False) as second:
            assert second is False
        with ledger.app_lock(database, "other-app", wait=False) as other:
            assert other is True
        started = time.monotonic()
        with ledger.app_lock(database, "my-app", timeout=0.2) as waited:
            assert waited is False
        assert time.monotonic() - started >= 0.15
    with ledger.app_lock(database, "my-app", wait=False) as again:
        assert again is True


def test_app_lock_waits_for_the_holder(database):
    order: list[str] = []
    inside = threading.Event()

    def holder():
        with ledger.app_lock(database, "my-app"):
            inside.set()
            time.sleep(0.3)
            order.append("first released")

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(5)
    with ledger.app_lock(database, "my-app", timeout=10) as held:
        order.append("second held")
        assert held is True
    t.join()
    assert order == ["first released", "second held"]


def test_app_lock_goes_away_with_its_connection(database):
    """A crashed holder does not keep the app locked: the session lock dies with the session."""
    key = ledger.app_lock_key("my-app")
    holder = psycopg.connect(database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (key,))
    with ledger.app_lock(database, "my-app", wait=False) as held:
        assert held is False
    holder.close()
    with ledger.app_lock(database, "my-app", timeout=5) as held:
        assert held is True
