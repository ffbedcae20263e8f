"""`backout release -- CMD` run as Heroku runs it: a real process, real PostgreSQL, real Alembic,
real Redis. These runs have no HEROKU_API_KEY; the Platform API side is tested with the sandbox."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from backout import ledger
from tests.hooks.support import A1, ALEMBIC_INI, B2, BROKEN, C3, ENV_PY, REVISION, hook_env, release
from tests.support import ledger_queue_names

pytestmark = pytest.mark.integration


def alembic_app(root: Path, revisions: list[tuple]) -> Path:
    """An app directory with an Alembic project holding `revisions`."""
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    for old in versions.glob("*.py"):
        old.unlink()
    for revision, down, doc, up, down_sql in revisions:
        (versions / f"{revision}.py").write_text(
            REVISION.format(doc=doc, revision=revision, down=down, up=up, down_sql=down_sql))
    return root


def alembic(app: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(app / "alembic.ini"), *args],
                          env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=60)


def upgrade_head(app: Path) -> list[str]:
    return [sys.executable, "-m", "alembic", "-c", str(app / "alembic.ini"), "upgrade", "head"]


def schema_of(url: str) -> str:
    """The app's schema (not the ledger's) as pg_dump prints it, for before/after comparisons."""
    out = subprocess.run(["pg_dump", "--schema-only", "--exclude-schema=backout", "--dbname", url],
                         capture_output=True, text=True, check=True).stdout
    # Newer pg_dump releases fence the script with a random \restrict key; it is not schema.
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def checkpoints(url: str, app: str = "shop") -> list[dict]:
    with ledger.connect(url) as conn:
        return ledger.list_checkpoints(conn, app)


def test_a_deploy_takes_a_verified_checkpoint_then_migrates(database, tmp_path):
    app = alembic_app(tmp_path / "app", [A1])
    assert alembic(app, database, "upgrade", "head").returncode == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 500) g")
    alembic_app(app, [A1, B2, C3])  # the new release's code

    done = release(hook_env(database, tmp_path, app), *upgrade_head(app))

    assert done.returncode == 0, done.stderr
    # The migrate command's own output streamed through; our progress lines carry elapsed time.
    assert "Running upgrade a1 -> b2" in done.stderr and "Running upgrade b2 -> c3" in done.stderr
    assert "backout [" in done.stderr and "s] checkpoint cp_" in done.stderr
    assert "HEROKU_API_KEY is not set" in done.stderr and "REDIS_URL is not set" in done.stderr
    [cp] = checkpoints(database)
    assert cp["status"] == "complete" and cp["kind"] == "deploy"
    assert cp["release_version"] == 12 and cp["slug_commit"] == "0123abcd"
    assert cp["migration_tool"] == "alembic" and cp["backup_strategy"] == "pg_dump"
    assert cp["migrations_before"] == ["a1"] and cp["migrations_after"] == ["c3"]
    assert [d["id"] for d in cp["down_scripts"]] == ["b2", "c3"]
    assert "DROP COLUMN email" in cp["down_scripts"][0]["down"]
    assert cp["irreversible"] == [] and cp["reversible"] is True
    assert cp["wal_lsn"] and cp["completed_at"] >= cp["created_at"]
    assert cp["config_fingerprint"] is None  # no Platform API without HEROKU_API_KEY
    assert cp["database"]["name"] == database.rsplit("/", 1)[1]
    backup = cp["backup"]
    assert backup["strategy"] == "pg_dump" and backup["path"] == str(tmp_path / "backups" / f"{cp['id']}.dump.zst")
    assert Path(backup["path"]).stat().st_size == backup["size"]
    assert (Path(backup["path"]).stat().st_mode & 0o777) == 0o600

    # The backup holds the database as it was before the migration: users without email.
    restored = database + "_restored"
    with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{restored.rsplit("/", 1)[1]}"')
    try:
        from backout.backups import pg_dump

        plain = tmp_path / "plain.dump"
        pg_dump.decompress_to(backup["path"], plain)
        subprocess.run(["pg_restore", "--no-owner", "--dbname", restored, str(plain)], check=True)
        with psycopg.connect(restored) as conn:
            columns = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY 1")]
            assert columns == ["id", "name"]
            assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 500
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "a1"
    finally:
        with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{restored.rsplit("/", 1)[1]}" WITH (FORCE)')


def test_a_failing_migrate_command_leaves_the_database_as_it_was(database, tmp_path):
    app = alembic_app(tmp_path / "app", [A1])
    assert alembic(app, database, "upgrade", "head").returncode == 0
    before = schema_of(database)
    alembic_app(app, [A1, B2, BROKEN])

    done = release(hook_env(database, tmp_path, app), *upgrade_head(app))

    # b2 was committed before c3 failed; the hook undid it from the down script it had saved.
    assert done.returncode != 0
    assert "no_such_function" in done.stderr
    assert "undoing 1 migration(s) the failed command applied: b2" in done.stderr
    assert "the release is not deployed" in done.stderr
    assert schema_of(database) == before
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("a1",)]
    [cp] = checkpoints(database)
    assert cp["status"] == "failed"
    assert "exited with status" in cp["error"] and "undid b2" in cp["error"]
    assert cp["migrations_after"] == ["a1"]


def test_a_first_deploy_that_fails_in_one_transaction_changes_nothing(database, tmp_path):
    """Alembic's default, all revisions in one transaction: nothing is applied, nothing to undo."""
    app = alembic_app(tmp_path / "app", [A1, ("b2", "a1", *BROKEN[2:])])
    (app / "migrations" / "env.py").write_text(ENV_PY.replace(", transaction_per_migration=True", ""))
    before = schema_of(database)
    done = release(hook_env(database, tmp_path, app), *upgrade_head(app))
    assert done.returncode != 0
    assert "undoing" not in done.stderr
    assert schema_of(database) == before
    [cp] = checkpoints(database)
    assert cp["status"] == "failed", cp["error"]
    assert cp["migrations_before"] == [] and cp["migrations_after"] == [], cp["error"]


def test_a_migrate_command_that_does_not_exist(database, tmp_path):
    done = release(hook_env(database, tmp_path), "no-such-migrate-tool", "up")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("backout: the migrate command 'no-such-migrate-tool' was not found")
    [cp] = checkpoints(database)
    assert cp["status"] == "failed" and "was not found" in cp["error"]


def test_no_database_url_is_named(tmp_path):
    env = hook_env("postgresql://unused@127.0.0.1/unused", tmp_path)
    del env["DATABASE_URL"]
    done = release(env, "true")
    assert done.returncode == 2
    assert "DATABASE_URL is not set; expected postgres://USER:PASSWORD@HOST:PORT/DBNAME" in done.stderr
    assert not (tmp_path / "backups").exists()


def test_missing_release_metadata_is_named(database, tmp_path):
    env = hook_env(database, tmp_path)
    del env["HEROKU_RELEASE_VERSION"]
    done = release(env, "true")
    assert done.returncode == 2
    assert "HEROKU_RELEASE_VERSION is not set" in done.stderr and "runtime-dyno-metadata" in done.stderr


def test_an_unreachable_database(tmp_path):
    done = release(hook_env("postgresql://app:hunter22@127.0.0.1:1/shop", tmp_path), "true")
    assert done.returncode == 1
    assert "cannot connect to the ledger database postgresql://app:********@127.0.0.1:1/shop" in done.stderr
    assert "hunter22" not in done.stderr + done.stdout


def test_an_unknown_backup_strategy_changes_nothing(database, tmp_path):
    done = release(hook_env(database, tmp_path, BACKOUT_BACKUP="tape"), "true")
    assert done.returncode == 2
    assert "BACKOUT_BACKUP is 'tape'; expected one of pg_dump, heroku, pitr, none" in done.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace('backout')").fetchone()[0] is None


def test_a_full_disk_fails_the_release_before_migrating(database, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the write fails the same way, any user can set it."""
    app = alembic_app(tmp_path / "app", [A1])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g + 1)::text) AS t"
                     " FROM generate_series(1, 30000) g")
    before = schema_of(database)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = release(hook_env(database, tmp_path, app), *upgrade_head(app), preexec_fn=small_files)
    assert done.returncode == 1
    assert "the backup is larger than this process may write" in done.stderr
    assert "checkpoint failed: the release is not deployed" in done.stderr
    assert "Running upgrade" not in done.stderr  # the migrate command never ran
    assert schema_of(database) == before
    assert list((tmp_path / "backups").iterdir()) == []
    [cp] = checkpoints(database)
    assert cp["status"] == "failed" and "larger than this process may write" in cp["error"]


def test_a_state_table_of_an_unexpected_shape(database, tmp_path):
    app = alembic_app(tmp_path / "app", [A1])
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (revision text)")
    done = release(hook_env(database, tmp_path, app), *upgrade_head(app))
    assert done.returncode == 1
    assert "alembic_version has an unexpected shape" in done.stderr
    [cp] = checkpoints(database)
    assert cp["status"] == "failed" and "alembic_version" in cp["error"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('users')").fetchone()[0] is None


def test_the_health_watch_is_scheduled_on_the_routine_queue(database, tmp_path, redis_url):
    done = release(hook_env(database, tmp_path, REDIS_URL=redis_url, BACKOUT_BACKUP="none"), "true")
    assert done.returncode == 0, done.stderr
    routine = ledger_queue_names(database)[1]
    assert f"health watch watch-shop-v12 scheduled on {routine}" in done.stderr
    client = redis.Redis.from_url(redis_url)
    assert [j.decode() for j in client.lrange(f"rq:queue:{routine}", 0, -1)] == ["watch-shop-v12"]
    job = Job.fetch("watch-shop-v12", connection=client, serializer=JSONSerializer)
    assert job.func_name == "backout.jobs.health.watch_release"
    assert job.args == ["shop", 12]

    # The release phase of the same release again: its checkpoint stands, the watch is not doubled.
    again = release(hook_env(database, tmp_path, REDIS_URL=redis_url, BACKOUT_BACKUP="none"), "true")
    assert again.returncode == 0, again.stderr
    assert "already has checkpoint" in again.stderr and "already scheduled" in again.stderr
    assert client.llen(f"rq:queue:{routine}") == 1
    assert len(checkpoints(database)) == 1


def test_an_unreachable_redis_is_a_warning_not_a_failed_deploy(database, tmp_path):
    done = release(hook_env(database, tmp_path, REDIS_URL="redis://:sekrit99@127.0.0.1:1/0",
                            BACKOUT_BACKUP="none"), "true")
    assert done.returncode == 0, done.stderr
    assert "warning: could not schedule the health watch" in done.stderr
    assert "sekrit99" not in done.stderr
    [cp] = checkpoints(database)
    assert cp["status"] == "complete"


def test_no_migrate_command_still_checkpoints(database, tmp_path):
    done = release(hook_env(database, tmp_path, BACKOUT_BACKUP="none"))
    assert done.returncode == 0, done.stderr
    assert "no migrate command given" in done.stderr
    [cp] = checkpoints(database)
    assert cp["status"] == "complete" and cp["backup"]["strategy"] == "none" and cp["wal_lsn"]


def test_sigterm_marks_the_checkpoint_failed(database, tmp_path):
    env = hook_env(database, tmp_path, BACKOUT_BACKUP="none")
    hook = subprocess.Popen([sys.executable, "-m", "backout", "release", "--", "sleep", "30"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = checkpoints(database) if _ledger_exists(database) else []
        if rows and rows[0]["down_scripts"] is not None and rows[0]["backup"] is not None:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    hook.send_signal(signal.SIGTERM)
    _, err = hook.communicate(timeout=20)
    assert hook.returncode == 1
    assert "terminated by SIGTERM" in err
    [cp] = checkpoints(database)
    assert cp["status"] == "failed" and "SIGTERM" in cp["error"]


def _ledger_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('backout.schema_version')").fetchone()[0] is not None


def test_a_release_phase_that_takes_no_checkpoint_stops_the_dump_it_started(database, tmp_path):
    """The release phase starts pg_dump before it knows whether a checkpoint is wanted; when the
    same release's phase runs again it takes none, and that dump leaves nothing behind."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders AS SELECT g AS id, repeat(md5(g::text), 20) AS note"
                     " FROM generate_series(1, 50000) g")
    env = hook_env(database, tmp_path)
    first = release(env)
    assert first.returncode == 0, first.stderr
    second = release(env)
    assert second.returncode == 0, second.stderr
    assert "already has checkpoint" in second.stderr
    [cp] = checkpoints(database)
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [f"{cp['id']}.dump.zst"]
    assert cp["backup"]["rows"] == {"public.orders": 50000}
    with psycopg.connect(database) as conn:  # no pg_dump or snapshot left connected
        others = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND pid <> pg_backend_pid()").fetchone()[0]
    assert others == 0
