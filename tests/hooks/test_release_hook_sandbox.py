"""The hook end to end as the sandbox's release phase: a slug whose Procfile says
`release: backout release -- python -m alembic upgrade head`, an app with a real Postgres add-on,
the Platform API for the release facts and the Data API for `heroku` backups."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from backout import ledger
from backout.checkpoint import config_fingerprint
from backout.rollback.database import stream
from tests.hooks.support import A1, B2, BROKEN, Heroku
from tests.support import S3

pytestmark = pytest.mark.integration


def _checkpoints(url: str, app: str) -> list[dict]:
    with ledger.connect(url) as conn:
        return ledger.list_checkpoints(conn, app)


def test_deploy_failed_deploy_and_rollback_with_pg_dump(heroku: Heroku, tmp_path: Path, redis_url: str, s3: S3) -> None:
    db = heroku.app("shop", BACKOUT_BACKUP="pg_dump", REDIS_URL=redis_url, **s3.env())
    first = heroku.deploy("shop", [A1], commit="aaaa1111")
    assert first["status"] == "succeeded", first["output"]
    assert "Running upgrade  -> a1" in first["output"]
    [cp] = _checkpoints(db, "shop")
    assert cp["status"] == "complete" and cp["release_version"] == first["version"]
    assert cp["release_id"] == first["id"] and cp["slug_id"] == first["slug"]["id"]
    assert cp["slug_commit"] == "aaaa1111"
    assert cp["previous_release_version"] == first["version"] - 1  # the current one it replaces
    assert cp["config_fingerprint"] == config_fingerprint(heroku.client.config_vars("shop"))
    assert cp["database"]["addon_id"] is None  # looked up only for heroku and pitr backups
    assert cp["migrations_before"] == [] and cp["migrations_after"] == ["a1"]
    archive = s3.fetch(cp["backup"], tmp_path)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == cp["backup"]["sha256"]
    assert sum(len(chunk) for chunk in stream.chunks(archive, None)) == cp["backup"]["dump_size"]
    assert "health watch watch-shop-v" in first["output"]

    # A release whose migration fails halfway: not deployed, the database left as it was.
    broken = heroku.deploy("shop", [A1, B2, BROKEN], commit="bbbb2222")
    assert broken["status"] == "failed", broken["output"]
    assert "undoing 1 migration(s) the failed command applied: b2" in broken["output"]
    failed, _ = _checkpoints(db, "shop")
    assert failed["status"] == "failed" and failed["release_version"] == broken["version"]
    import psycopg

    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("a1",)]
        assert conn.execute("SELECT to_regclass('orders')").fetchone()[0] is None
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY 1")]
        assert columns == ["id", "name"]
    assert heroku.client.current_release("shop")["version"] == first["version"]

    # A good deploy, then a rollback to the first one: Heroku runs the release phase again.
    second = heroku.deploy("shop", [A1, B2], commit="cccc3333")
    assert second["status"] == "succeeded", second["output"]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users DROP COLUMN email")  # as a down migration would have
        conn.execute("UPDATE alembic_version SET version_num = 'a1'")
    rollback = heroku.settle("shop", heroku.client.rollback("shop", first["id"]))
    assert rollback["status"] == "succeeded", rollback["output"]
    assert rollback["description"] == f"Rollback to v{first['version']}"
    assert f"rolls back to v{first['version']}, and no migration is pending: no new checkpoint" in rollback["output"]
    assert "Running upgrade" not in rollback["output"]  # the migrate command found nothing to do
    versions = [c["release_version"] for c in _checkpoints(db, "shop")]
    assert versions == [second["version"], broken["version"], first["version"]]


def test_heroku_backup_strategy_captures_a_data_api_backup(heroku: Heroku, tmp_path: Path) -> None:
    db = heroku.app("shop-heroku", BACKOUT_BACKUP="heroku")
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 2000) g")
    release = heroku.deploy("shop-heroku", [A1], commit="dddd4444")
    assert release["status"] == "succeeded", release["output"]
    [cp] = _checkpoints(db, "shop-heroku")
    assert cp["status"] == "complete"
    backup = cp["backup"]
    addon = next(a for a in heroku.client.attachments("shop-heroku") if a["name"] == "DATABASE")["addon"]
    assert backup["strategy"] == "heroku" and backup["addon_id"] == addon["id"]
    assert cp["database"]["addon_id"] == addon["id"]
    transfer = heroku.client.transfer("shop-heroku", backup["transfer_num"])
    assert transfer["succeeded"] is True and transfer["uuid"] == backup["transfer_id"]
    # The recorded link gives the backup itself: a pg_dump archive of the database before a1.
    archive = requests.get(backup["backup_url"], timeout=30)
    assert archive.status_code == 200 and archive.content[:5] == b"PGDMP"
    assert "backup: " in release["output"] and "succeeded" in release["output"]


def test_pitr_strategy_marks_time_and_lsn(heroku: Heroku, tmp_path: Path) -> None:
    db = heroku.app("shop-pitr", plan="standard-0", BACKOUT_BACKUP="pitr")
    release = heroku.deploy("shop-pitr", [A1], commit="eeee5555")
    assert release["status"] == "succeeded", release["output"]
    [cp] = _checkpoints(db, "shop-pitr")
    backup = cp["backup"]
    assert cp["status"] == "complete" and backup["strategy"] == "pitr"
    assert backup["time"].endswith("Z") and backup["time"] <= cp["completed_at"].replace("+00:00", "Z")
    assert backup["lsn"] and cp["wal_lsn"]
    addon = next(a for a in heroku.client.attachments("shop-pitr") if a["name"] == "DATABASE")["addon"]
    assert backup["addon_id"] == addon["id"]


def test_a_platform_api_that_refuses_the_token_fails_the_release(heroku: Heroku, tmp_path: Path) -> None:
    db = heroku.app("shop-badkey", BACKOUT_BACKUP="none")
    heroku.client.update_config_vars("shop-badkey", {"HEROKU_API_KEY": "not-the-token"})
    release = heroku.deploy("shop-badkey", [A1], commit="ffff6666")
    assert release["status"] == "failed"
    assert "cannot read release" in release["output"] and "not-the-token" not in release["output"]
    assert _checkpoints(db, "shop-badkey") == []


def test_a_heroku_backup_that_cannot_be_captured_stops_the_release(heroku: Heroku, tmp_path: Path) -> None:
    db = heroku.app("shop-nobackup", BACKOUT_BACKUP="heroku")
    heroku.box.faults.script(422, method="POST", path=r"/backups$", error_id="invalid_params",
                             message="You have reached the maximum number of manual backups")
    release = heroku.deploy("shop-nobackup", [A1], commit="abab7777")
    assert release["status"] == "failed", release["output"]
    assert "maximum number of manual backups" in release["output"]
    assert "checkpoint failed: the release is not deployed" in release["output"]
    [cp] = _checkpoints(db, "shop-nobackup")
    assert cp["status"] == "failed" and "maximum number of manual backups" in cp["error"]
    import psycopg

    with psycopg.connect(db) as conn:  # the migrate command never ran
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None


def test_a_heroku_backup_needs_an_addon_attached_as_database(heroku: Heroku, tmp_path: Path) -> None:
    heroku.client.create_app("shop-detached")
    heroku.client.create_addon("shop-detached", "heroku-postgresql:essential-0", attachment_name="ANALYTICS_DB")
    db = heroku.client.config_vars("shop-detached")["ANALYTICS_DB_URL"]
    heroku.client.update_config_vars("shop-detached", {
        "HEROKU_API_KEY": heroku.box.token, "BACKOUT_BACKUP": "heroku", "DATABASE_URL": db,
        "BACKOUT_MIGRATIONS": "alembic", "BACKOUT_MIGRATIONS_PATH": "alembic.ini",
    })
    release = heroku.deploy("shop-detached", [A1], commit="cdcd8888")
    assert release["status"] == "failed", release["output"]
    assert "backout: app shop-detached has no add-on attached as DATABASE" in release["output"]
    assert _checkpoints(db, "shop-detached") == []
