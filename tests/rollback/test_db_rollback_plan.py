"""Planning a database step on a real ledger: which checkpoint the database goes back to, what the
plan refuses before anything changes (and why, by name), what it says will be lost; and keeping
the ledger current when a restore replaces the database it lives in."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from backout import ledger
from backout import settings as settings_module
from backout.backups import pg_dump
from backout.errors import PlanRefused
from backout.rollback.database import ledger_copy
from backout.rollback.database.step import plan_db_step, restore_point

pytestmark = pytest.mark.integration

APP = "shop"


def _checkpoint(conn: psycopg.Connection, version: int, previous: int | None, *, kind: str = "deploy",
                status: str = "complete", backup: dict | None = None, strategy: str = "pg_dump") -> dict:
    cp = ledger.create_checkpoint(conn, app=APP, kind=kind, release_version=version, release_id=None, slug_id=None,
                                  slug_commit=None, previous_release_version=previous, backup_strategy=strategy,
                                  migration_tool="none")
    lsn = conn.execute("SELECT pg_current_wal_lsn()::text AS lsn").fetchone()["lsn"]
    return ledger.update_checkpoint(conn, cp["id"], status=status, backup=backup, migrations_before=[],
                                    migrations_after=[], down_scripts=[], wal_lsn=lsn)


def _settings(database: str, tmp_path: Path, **extra: str) -> settings_module.Settings:
    return settings_module.load({"DATABASE_URL": database, "BACKOUT_BACKUP": "pg_dump",
                                 "BACKOUT_BACKUP_DIR": str(tmp_path), **extra})


def test_the_restore_point_is_the_deploy_that_replaced_the_target(database: str) -> None:
    with ledger.connect(database) as conn:
        cp3 = _checkpoint(conn, 3, 2)
        failed = _checkpoint(conn, 4, 3, status="failed")  # v4 never ran: its deploy failed
        cp5 = _checkpoint(conn, 5, 3)
        cp6 = _checkpoint(conn, 6, 5)
        # v6 was rolled back to v3 as v7 (a safety checkpoint taken while v6 ran), then v8 deployed.
        safety6 = _checkpoint(conn, 6, None, kind="safety")
        cp8 = _checkpoint(conn, 8, 7)
        point, why = restore_point(conn, APP, cp3, 3, current_version=8)
        assert point["id"] == cp5["id"] and "deployed over v3: the database as v3 left it" in why
        assert restore_point(conn, APP, cp5, 5, 8)[0]["id"] == cp6["id"]
        point, why = restore_point(conn, APP, cp6, 6, 8)
        assert point["id"] == safety6["id"] and "taken while v6 ran" in why
        # No checkpoint of a later deploy: the target's own, whose migrations its release phase runs again.
        point, why = restore_point(conn, APP, cp8, 8, current_version=9)
        assert point["id"] == cp8["id"] and "runs them again" in why
        # ... unless the target is what runs now: then there is nothing to go back to.
        with pytest.raises(PlanRefused, match="v8 is the release shop runs, so its database is the current one"):
            restore_point(conn, APP, cp8, 8, current_version=8)
        # A safety checkpoint named with --to is its own restore point.
        point, why = restore_point(conn, APP, safety6, 6, current_version=9)
        assert point["id"] == safety6["id"] and "the safety checkpoint named" in why
        for target, version in ((None, 1), (failed, 4)):
            with pytest.raises(PlanRefused, match=f"no complete checkpoint of shop holds the database of v{version}"):
                restore_point(conn, APP, target, version, current_version=9)


def test_the_plan_refuses_what_it_cannot_restore(database: str, tmp_path: Path) -> None:
    settings = _settings(database, tmp_path)
    with ledger.connect(database) as conn:
        _checkpoint(conn, 5, 4, backup={"strategy": "none"}, strategy="none")
        with pytest.raises(PlanRefused, match="holds no copy of the data .*BACKOUT_BACKUP=none"):
            plan_db_step(settings, conn, APP, None, "restore", target_version=4, current_version=6)

    with psycopg.connect(database, autocommit=True) as app:
        app.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    backup = pg_dump.dump(database, tmp_path / "cp.dump.zst")
    with ledger.connect(database) as conn:
        cp = _checkpoint(conn, 7, 6, backup={"strategy": "pg_dump", **backup})
        step = plan_db_step(settings, conn, APP, None, "restore", target_version=6, current_version=8)
        assert step["restore_point"]["id"] == cp["id"] and step["restore"]["mode"] == "schema"
        assert "database swap: the ledger (schema backout) lives in this database" in step["restore"]["not_possible"][0]
        assert step["loss"]["wal_bytes_since"] > 0 and step["loss"]["since"] == cp["created_at"]
        assert step["safety_checkpoint"] == {"backup": "pg_dump"}
        assert "the backup file is present, with its recorded size, and readable" in step["checked_here"]

        Path(backup["path"]).write_bytes(Path(backup["path"]).read_bytes()[:-10])
        with pytest.raises(PlanRefused, match="was changed or cut short"):
            plan_db_step(settings, conn, APP, None, "restore", target_version=6, current_version=8)
        Path(backup["path"]).unlink()
        step = plan_db_step(settings, conn, APP, None, "restore", target_version=6, current_version=8)
        assert "the backup file (it is not on this machine)" in step["checked_by_worker"]



def test_a_plan_made_where_the_database_is_not_reachable_leaves_the_checks_to_the_worker(database: str,
                                                                                        tmp_path: Path) -> None:
    with psycopg.connect(database, autocommit=True) as app:
        app.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    backup = pg_dump.dump(database, tmp_path / "cp.dump.zst")
    settings = settings_module.load({"BACKOUT_DATABASE_URL": database, "BACKOUT_BACKUP": "pg_dump",
                                     "DATABASE_URL": "postgres://nobody@127.0.0.1:9/nowhere"})
    with ledger.connect(database) as conn:
        _checkpoint(conn, 7, 6, backup={"strategy": "pg_dump", **backup})
        step = plan_db_step(settings, conn, APP, None, "restore", target_version=6, current_version=8)
    assert step["restore"]["mode"] is None and "decided by the worker" in step["restore"]["reason"]
    assert "the app's database (not reachable from here)" in step["checked_by_worker"]
    assert step["loss"]["method"].startswith("not estimated")


def test_a_data_api_restore_puts_the_current_ledger_back_and_keeps_what_others_wrote(database: str) -> None:
    """What `restore_heroku` does around the Data API restore, with the restore played by hand: the
    ledger rewound to an older copy, others writing into it meanwhile, then the merge."""
    with ledger.connect(database) as conn:
        old = _checkpoint(conn, 3, 2)
        request = ledger.create_request(conn, app=APP, target="v3", db="restore", dry_run=False, requested_by="t")
        ledger.record_step(conn, request["id"], "plan", "done")
    with psycopg.connect(database, autocommit=True) as conn:
        older = ledger_copy.snapshot(conn)  # the ledger the backup holds
    with ledger.connect(database) as conn:
        ledger.update_checkpoint(conn, old["id"], verified_healthy_at="now")
        for n in range(3):
            ledger.record_step(conn, request["id"], f"step {n}", "done")
        current = ledger_copy.snapshot(conn)  # read out before the restore
    # The restore: the ledger as the backup has it.
    ledger_copy.replace_into(database, older)
    with ledger.connect(database) as conn:
        assert len(ledger.steps(conn, request["id"])) == 1
        # Someone writes while the restored (old) ledger is in place: its id clashes with ours.
        ledger.record_step(conn, request["id"], "written meanwhile", "done")
        ledger.record_health_event(conn, app=APP, release_version=3, kind="probe", verdict="pass")

    merged = ledger_copy.merge(database, current)

    assert merged["steps"] == 4
    with ledger.connect(database) as conn:
        steps = [s["step"] for s in ledger.steps(conn, request["id"])]
        assert steps == ["plan", "step 0", "step 1", "step 2", "written meanwhile"]
        assert ledger.get_checkpoint(conn, old["id"])["verified_healthy_at"] is not None
        assert len(ledger.health_events(conn, APP)) == 1
        # New steps get ids after every id in use.
        ledger.record_step(conn, request["id"], "after", "done")
        assert [s["step"] for s in ledger.steps(conn, request["id"])][-1] == "after"
    older.close()
    current.close()


def test_heroku_and_pitr_restores_are_checked_against_the_apis(sandbox, database: str, tmp_path: Path) -> None:
    from backout.backups.heroku import database_addon
    from backout.heroku import HerokuClient

    with HerokuClient(sandbox.token, sandbox.url, sandbox.url) as client:
        client.create_app(APP)
        client.create_addon(APP, "heroku-postgresql:essential-0")
        addon = database_addon(client, APP)
        backup = client.capture_backup(addon["addon_id"])
        client.wait_transfer(APP, backup["num"], poll=0.1)
        settings = _settings(database, tmp_path, **sandbox.env)
        with ledger.connect(database) as conn:
            _checkpoint(conn, 5, 4, strategy="heroku", backup={"strategy": "heroku", "transfer_num": backup["num"],
                                                              "addon_id": addon["addon_id"]})
            step = plan_db_step(settings, conn, APP, None, "restore", target_version=4, current_version=6,
                                heroku=client)
            assert step["restore"]["mode"] == "data-api" and step["safety_checkpoint"] == {"backup": "heroku"}
            assert "in place: the app waits for the whole restore" in step["restore"]["reason"]

            _checkpoint(conn, 7, 6, strategy="heroku", backup={"strategy": "heroku", "transfer_num": 99})
            with pytest.raises(PlanRefused, match="Heroku backup b099 of shop no longer exists"):
                plan_db_step(settings, conn, APP, None, "restore", target_version=6, current_version=8, heroku=client)

            _checkpoint(conn, 9, 8, strategy="pitr", backup={"strategy": "pitr", "time": "2026-01-01T00:00:00Z",
                                                            "addon_id": addon["addon_id"]})
            with pytest.raises(PlanRefused, match="is on heroku-postgresql:essential-0, which Heroku cannot roll back"):
                plan_db_step(settings, conn, APP, None, "restore", target_version=8, current_version=10, heroku=client)
