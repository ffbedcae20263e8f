"""Database rollbacks end to end: a sandbox app whose releases run `backout release` in their release
phase (real checkpoints of its real Postgres add-on), then `backout rollback ... --db down|restore
--confirm APP --wait` through the CLI with a real `backout worker`, for each kind of backup. The
database comes back to the checkpoint (per-table checksums and `pg_dump --schema-only`), a safety
checkpoint is listed by `backout checkpoints`, and the ledger is never rewound."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backout import ledger
from tests.hooks.support import A1, B2, Heroku, slug_files
from tests.rollback.support import checksums, schema
from tests.support import S3, child_env, start_worker, stop_workers
from tests.test_readme import code_lines

pytestmark = pytest.mark.integration


def state(url: str) -> tuple[dict, str]:
    return checksums(url), schema(url)


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


class App:
    """A sandbox app with a Postgres add-on and backout's config, and the CLI and worker around it."""

    def __init__(self, heroku: Heroku, name: str, tmp_path: Path, redis_url: str, backup: str,
                 plan: str = "essential-0", storage: dict[str, str] | None = None) -> None:
        self.heroku, self.name, self.tmp = heroku, name, tmp_path
        client = heroku.client
        client.create_app(name)
        client.create_addon(name, f"heroku-postgresql:{plan}")
        # The release phase runs on a dyno: pg_dump archives go to object storage.
        config = {"BACKOUT_BACKUP": backup, **(storage or {}),
                  "BACKOUT_MIGRATIONS": "alembic", "BACKOUT_MIGRATIONS_PATH": "alembic.ini"}
        client.update_config_vars(name, {"HEROKU_API_KEY": heroku.box.token, **config})
        self.db = client.config_vars(name)["DATABASE_URL"]
        code = tmp_path / "worker-code"  # the worker runs the app's code, as a worker dyno does
        for path, text in slug_files([A1, B2]).items():
            (code / path).parent.mkdir(parents=True, exist_ok=True)
            (code / path).write_text(text)
        self.env = child_env({**heroku.box.env, **config, "BACKOUT_MIGRATIONS_PATH": str(code / "alembic.ini"),
                              "DATABASE_URL": self.db, "REDIS_URL": redis_url, "BACKOUT_HEALTH_INTERVAL": "0.5",
                              "BACKOUT_LOG_LEVEL": "INFO"})
        self.worker: subprocess.Popen | None = None

    def deploy(self, revisions: list[tuple], commit: str) -> dict:
        release = self.heroku.deploy(self.name, revisions, commit=commit)
        assert release["status"] == "succeeded", release["output"]
        return release

    def backout(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "backout", *args], env=self.env, capture_output=True,
                              text=True, timeout=240)

    def start_worker(self) -> None:
        self.worker = start_worker(self.env, self.tmp / "worker.log")

    def worker_log(self) -> str:
        return (self.tmp / "worker.log").read_text(errors="replace")[-4000:]

    def rollback(self, to: str, db: str) -> subprocess.CompletedProcess:
        done = self.backout("rollback", "--app", self.name, "--to", to, "--db", db, "--confirm", self.name, "--wait")
        assert done.returncode == 0, (done.stdout, done.stderr, self.worker_log())
        return done

    def checkpoints(self) -> list[dict]:
        done = self.backout("checkpoints", "--app", self.name, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["checkpoints"]

    def current(self) -> dict:
        return self.heroku.client.current_release(self.name)

    def close(self) -> None:
        if self.worker is not None:
            stop_workers([self.worker], timeout=20)


@pytest.fixture
def make_app(heroku: Heroku, tmp_path: Path, redis_url: str, s3: S3, s3_server: Any):
    made: list[App] = []

    def make(name: str, backup: str, plan: str = "essential-0", files: bool = False) -> App:
        storage = s3.env() if backup == "pg_dump" else {}
        if files:  # the app's uploads, in a versioned bucket (BACKOUT_FILES)
            storage["BACKOUT_FILES"] = f"s3://{S3(s3_server, versioned=True).bucket}/{name}/"
        made.append(App(heroku, name, tmp_path, redis_url, backup, plan, storage or None))
        return made[-1]

    yield make
    for app in made:
        app.close()


def test_down_then_undo_it_then_restore_through_the_cli(make_app: Any) -> None:
    app = make_app("shop", "pg_dump")
    v4 = app.deploy([A1], "aaaa1111")
    sql(app.db, "INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 500) g")
    at_v5_deploy = state(app.db)
    v5 = app.deploy([A1, B2], "bbbb2222")  # its checkpoint holds the database as v4 left it
    sql(app.db, "INSERT INTO users (name, email) SELECT 'late ' || g, g || '@example.com' FROM generate_series(1, 100) g",
        "UPDATE users SET email = 'first@example.com' WHERE id = 1")
    now = state(app.db)

    # Without --confirm: refused, exit 2, nothing changed, nothing recorded.
    for db in ("restore", "down"):
        refused = app.backout("rollback", "--app", "shop", "--to", f"v{v4['version']}", "--db", db, "--wait")
        assert refused.returncode == 2, refused.stderr
        assert f"--db {db} discards data written since the checkpoint; to allow it, add --confirm shop" in refused.stderr
    assert state(app.db) == now and app.current()["version"] == v5["version"]
    with ledger.connect(app.db) as conn:
        assert ledger.list_requests(conn, "shop") == []

    # A dry run prints the plan: what is restored, how, and what is lost; it changes nothing, so it
    # needs no --confirm.
    dry = app.backout("rollback", "--app", "shop", "--to", f"v{v4['version']}", "--db", "restore", "--dry-run",
                      "--json")
    assert dry.returncode == 0, dry.stderr
    dry_plan = json.loads(dry.stdout)["plan"]
    # Exactly the steps the job would run.
    assert dry_plan["steps"] == ["safety_checkpoint", "db_restore", "code_rollback", "release_phase", "verify"]
    step = dry_plan["db_step"]
    v5_checkpoint = next(cp for cp in app.checkpoints() if cp["release"]["version"] == v5["version"])
    assert step["kind"] == "db_restore" and step["restore_point"]["id"] == v5_checkpoint["id"]
    assert step["restore"]["mode"] == "schema" and step["safety_checkpoint"] == {"backup": "pg_dump"}
    assert step["loss"]["since"] == v5_checkpoint["created_at"] and step["loss"]["wal_bytes_since"] > 0
    assert step["loss"]["rows_changed_estimate"] >= 0 and "pg_stat_user_tables" in step["loss"]["method"]
    assert step["summary"].startswith(f"restore {v5_checkpoint['id']} (pg_dump, ") and "into new schemas" in step["summary"]
    assert state(app.db) == now

    app.start_worker()
    # --db down: b2 undone from the script saved in v5's checkpoint; the code goes back to v4.
    done = app.rollback(f"v{v4['version']}", "down")
    assert done.stdout.strip() == f"succeeded: shop runs release v6, a rollback to v{v4['version']} (verified)"
    for line in ("safety_checkpoint: done: ", "db_down: done", "code_rollback: done: ", "verify: done: "):
        assert any(line in shown and "s] " in shown for shown in done.stderr.splitlines()), (line, done.stderr)
    assert schema(app.db) == at_v5_deploy[1]
    sql_rows = _rows(app.db, "SELECT count(*), (SELECT version_num FROM alembic_version) FROM users")
    assert sql_rows == [(600, "a1")]  # a down migration keeps the rows; the email column is gone
    [safety] = [cp for cp in app.checkpoints() if cp["kind"] == "safety"]
    assert safety["status"] == "complete" and safety["backup"]["strategy"] == "pg_dump"
    assert safety["release"]["version"] == v5["version"] and safety["migrations"]["before"] == ["b2"]

    # Undoing that rollback: its safety checkpoint, restored, with v5's code back.
    app.rollback(safety["id"], "restore")
    assert state(app.db) == now
    assert app.current()["description"] == f"Rollback to v{v5['version']}"

    # --db restore to v4: v5's checkpoint, restored beside the live data and swapped in.
    done = app.rollback(f"v{v4['version']}", "restore")
    assert state(app.db) == at_v5_deploy
    [restored] = [line for line in done.stderr.splitlines() if "db_restore: done (" in line]
    assert "mode schema" in restored, done.stderr
    assert app.current()["description"] == f"Rollback to v{v4['version']}"
    listing = app.backout("checkpoints", "--app", "shop")
    assert listing.returncode == 0 and listing.stdout.count("(safety)") == 3, listing.stdout
    with ledger.connect(app.db) as conn:  # the ledger kept every request through the restores
        assert [(r["dry_run"], r["status"]) for r in ledger.list_requests(conn, "shop")] == [
            (False, "succeeded")] * 3 + [(True, "succeeded")]


def test_restore_from_a_heroku_backup_and_the_ledger_is_not_rewound(make_app: Any) -> None:
    app = make_app("shop-heroku", "heroku")
    v4 = app.deploy([A1], "cccc3333")
    sql(app.db, "INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 300) g")
    at_v5_deploy = state(app.db)
    app.deploy([A1, B2], "dddd4444")
    sql(app.db, "INSERT INTO users (name, email) SELECT 'late ' || g, 'x' FROM generate_series(1, 50) g",
        # What a later migration made, which the Data API's pg_restore --clean would leave behind.
        "CREATE TYPE mood AS ENUM ('ok', 'sad')", "CREATE TABLE audit (id bigserial PRIMARY KEY, m mood)",
        "CREATE FUNCTION audit_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM audit'",
        "CREATE SCHEMA reports", "CREATE VIEW reports.recent AS SELECT * FROM audit")

    app.start_worker()
    done = app.rollback(f"v{v4['version']}", "restore")
    [restored] = [line for line in done.stderr.splitlines() if "db_restore: done (" in line]
    assert "mode data-api" in restored, done.stderr
    # The database equals the checkpoint: what came after it is gone, not only the rows.
    assert state(app.db) == at_v5_deploy
    assert _rows(app.db, "SELECT version_num FROM alembic_version") == [("a1",)]
    with ledger.connect(app.db) as conn:
        [request] = ledger.list_requests(conn, "shop-heroku")
        steps = [(s["step"], s["status"]) for s in ledger.steps(conn, request["id"])]
        checkpoints = ledger.list_checkpoints(conn, "shop-heroku")
    # The backup was taken while v5's checkpoint was still running: the ledger kept it complete.
    assert [(cp["kind"], cp["status"]) for cp in checkpoints] == [
        ("safety", "complete"), ("deploy", "complete"), ("deploy", "complete")]
    assert checkpoints[0]["backup"]["strategy"] == "heroku"
    assert request["status"] == "succeeded"
    assert ("safety_checkpoint", "done") in steps and ("db_restore", "done") in steps and ("verify", "done") in steps


def test_restore_to_a_point_in_time_promotes_a_rollback_database(make_app: Any, heroku: Heroku) -> None:
    app = make_app("shop-pitr", "pitr", plan="standard-0")
    v4 = app.deploy([A1], "eeee5555")
    sql(app.db, "INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 200) g")
    at_v5_deploy = checksums(app.db)
    app.deploy([A1, B2], "ffff6666")
    sql(app.db, "INSERT INTO users (name, email) SELECT 'late ' || g, 'y' FROM generate_series(1, 70) g")
    later = checksums(app.db)
    old_addon = _database_addon(heroku, "shop-pitr")
    with ledger.connect(app.db) as conn:
        deployed = [cp["id"] for cp in ledger.list_checkpoints(conn, "shop-pitr")]

    app.start_worker()
    done = app.rollback(f"v{v4['version']}", "restore")
    [restored] = [line for line in done.stderr.splitlines() if "db_restore: done (" in line]
    assert "mode rollback-addon" in restored, done.stderr

    new_url = heroku.client.config_vars("shop-pitr")["DATABASE_URL"]
    assert new_url != app.db
    assert checksums(new_url) == at_v5_deploy
    assert _database_addon(heroku, "shop-pitr")["id"] != old_addon["id"]
    # The old database stays attached under another name, with the writes since the checkpoint.
    kept = [a["name"] for a in heroku.client.attachments("shop-pitr") if a["addon"]["id"] == old_addon["id"]]
    assert kept and kept[0].startswith("HEROKU_POSTGRESQL_")
    assert checksums(app.db) == later
    # The rolled-back database got the current ledger before it was promoted, not its old one (from
    # the checkpoint's time): the safety checkpoint and the request are in it. (The releases the
    # promotion made ran no release phase, as on Heroku: add-ons' config releases skip it.)
    with ledger.connect(app.db) as conn:
        [safety] = [cp["id"] for cp in ledger.list_checkpoints(conn, "shop-pitr") if cp["kind"] == "safety"]
    with ledger.connect(new_url) as conn:
        after = {cp["id"]: cp["kind"] for cp in ledger.list_checkpoints(conn, "shop-pitr")}
        [request] = ledger.list_requests(conn, "shop-pitr")
    assert set(deployed) | {safety} <= set(after)
    assert request["db"] == "restore"
    # The job followed the ledger: its record ends in the database the app uses now, and the copy
    # left in the old database says so, so that no worker reading it runs the request again.
    assert request["status"] == "succeeded", request
    with ledger.connect(new_url) as conn:
        steps = [(s["step"], s["status"]) for s in ledger.steps(conn, request["id"])]
    assert ("db_restore", "done") in steps and ("verify", "done") in steps, steps
    with ledger.connect(app.db) as conn:
        assert ledger.moved_away(conn, request["id"])
    status = subprocess.run([sys.executable, "-m", "backout", "status", "--app", "shop-pitr", "--json"],
                            env={**app.env, "DATABASE_URL": new_url}, capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["rollbacks"][0]["status"] == "succeeded", (status.stdout, status.stderr)
    # The app's lock went with it, and is free again in both databases.
    for url in (app.db, new_url):
        with ledger.app_lock(url, "shop-pitr", wait=False) as free:
            assert free


def _rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _database_addon(heroku: Heroku, app: str) -> dict:
    return next(a for a in heroku.client.attachments(app) if a["name"] == "DATABASE")["addon"]


def test_the_readmes_rollback_examples_run_as_written(make_app: Any) -> None:
    """Each `backout rollback --app myapp ...` line of the README, in its order, against a sandbox app
    named myapp; only the placeholders become this app's: v41 its first release, cp_01J… the
    checkpoint of its newest deploy."""
    examples = [shlex.split(line)[1:] for line in code_lines() if line.startswith("backout rollback --app myapp")]
    assert len(examples) == 4, examples
    app = make_app("myapp", "pg_dump", files=True)  # the last example puts the uploads back too
    first = app.deploy([A1], "aaaa0001")
    app.deploy([A1, B2], "bbbb0002")
    newest = app.deploy([A1, B2], "cccc0003")  # code only: `--to previous` (no --db) runs on its schema
    checkpoint_id = next(cp["id"] for cp in app.checkpoints() if cp["release"]["version"] == newest["version"])
    app.start_worker()
    for words in examples:
        args = [{"v41": f"v{first['version']}", "cp_01J…": checkpoint_id}.get(w, w) for w in words]
        done = app.backout(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr, app.worker_log())
        if "--db" in args and "down" in args:  # back at the first release's schema
            assert _rows(app.db, "SELECT version_num FROM alembic_version") == [("a1",)]
        if "--dry-run" in args:
            assert "nothing was changed" in done.stdout
