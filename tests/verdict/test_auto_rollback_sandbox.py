"""BACKOUT_AUTO_ROLLBACK=auto end to end, one test per branch: the sandbox (a local Heroku whose
dynos and release phases are real processes), an app migrated with dbmate (its stand-in) by
`backout release` in each release phase (real pg_dump checkpoints, each with its verdict), a real
`backout worker`, real Redis and a real ledger. A good release is verified, then a bad one with a
new migration fails its health checks, and the verdict recorded at its checkpoint decides:

- an expand-only release is rolled back code-only, the newer schema kept;
- a contract release is rolled back with its down migration;
- a release whose down would drop data written since the deploy is left as it is, and a person is
  told the verdict, the plan they could run and what it would lose.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.health.test_monitor_sandbox import Story
from tests.hooks.test_release_hook_tools import STANDIN
from tests.support import S3, deploy_slug, health_app_files, wait_for

pytestmark = pytest.mark.integration

RELEASE = "backout release -- python migrate_standin.py dbmate up"
NOTES = ("db/migrations/001_notes.sql",
         "-- migrate:up\ncreate table notes (id serial primary key, body text not null, legacy text);\n"
         "insert into notes (body, legacy) values ('first', 'x'), ('second', 'y');\n\n"
         "-- migrate:down\ndrop table notes;\n")
EXPAND = ("db/migrations/002_priority.sql",
          "-- migrate:up\nalter table notes add column priority integer;\n\n"
          "-- migrate:down\nalter table notes drop column priority;\n")
CONTRACT = ("db/migrations/002_rename_body.sql",
            "-- migrate:up\nalter table notes rename column body to text;\n\n"
            "-- migrate:down\nalter table notes rename column text to body;\n")
# Drops a column the previous code reads, and moves its values into a new table: undoing it drops
# that table, with every row written to it since the deploy.
LOSSY = ("db/migrations/002_tags.sql",
         "-- migrate:up\ncreate table tags (id serial primary key, note_id integer not null, tag text not null);\n"
         "insert into tags (note_id, tag) select id, legacy from notes;\n"
         "alter table notes drop column legacy;\n\n"
         "-- migrate:down\nalter table notes add column legacy text;\ndrop table tags;\n")


class AutoStory(Story):
    """Story's app, migrated by dbmate in its release phase, checkpointed with pg_dump, watched by a
    worker with BACKOUT_AUTO_ROLLBACK=auto that can reach the app's database."""

    def __init__(self, sandbox: Any, database: str, redis_url: str, tmp_path: Path, notes: Any, s3: S3) -> None:
        # The release phase runs on a dyno: pg_dump archives go to object storage.
        config = {"BACKOUT_BACKUP": "pg_dump", **s3.env(), "BACKOUT_MIGRATIONS": "dbmate",
                  "BACKOUT_MIGRATIONS_PATH": "db/migrations"}
        # A longer grace than Story's: a web dyno that boots slowly on a busy machine must not fail the
        # good release before it answers.
        super().__init__(sandbox, database, redis_url, tmp_path, notes, name="notes", DATABASE_URL=database,
                         BACKOUT_AUTO_ROLLBACK="auto", BACKOUT_HEALTH_GRACE="6", **config)
        self.client.update_config_vars(self.name, config)
        self.database = database

    def release(self, code: str, *migrations: tuple[str, str]) -> dict:
        files = {**health_app_files(code), **dict(migrations), "migrate_standin.py": STANDIN.read_text()}
        done = deploy_slug(self.client, self.name, {"web": "python web.py", "release": RELEASE}, files,
                           commit=f"{code}-{time.time_ns()}")
        assert done["status"] == "succeeded", done
        return done

    def verified(self, code: str, *migrations: tuple[str, str]) -> dict:
        good = self.release(code, *migrations)
        try:
            wait_for(lambda: "verified" in self.kinds_of(good["version"]), timeout=60, what="the good release verified")
        except AssertionError:
            raise AssertionError(f"v{good['version']} not verified: {self.events_of(good['version'])}\n"
                                 f"{self.log()[-3000:]}") from None
        return good

    def decision(self, version: int) -> dict:
        """The health event that says what was decided about a failed release."""
        return wait_for(lambda: next((e for e in self.events_of(version)
                                      if e["kind"] in ("rollback_requested", "suppressed")), None),
                        timeout=60, what=f"the decision on v{version}")

    def finished_request(self) -> dict:
        return wait_for(lambda: self.requests() and self.requests()[0]["status"] in ("succeeded", "failed")
                        and self.requests()[0], timeout=60, what="the rollback to finish")

    def columns(self, table: str) -> list[str]:
        with psycopg.connect(self.database, autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE"
                                               " table_name = %s ORDER BY ordinal_position", [table])]

    def versions(self) -> list[str]:
        with psycopg.connect(self.database, autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


@pytest.fixture
def story(sandbox, database, redis_url, tmp_path, notes, s3):
    s = AutoStory(sandbox, database, redis_url, tmp_path, notes, s3)
    s.start_worker()
    yield s
    s.stop()


def test_an_expand_only_release_is_rolled_back_code_only_and_keeps_its_schema(story: AutoStory):
    good = story.verified("good", NOTES)
    bad = story.release("bad", NOTES, EXPAND)
    decided = story.decision(bad["version"])
    assert decided["kind"] == "rollback_requested", decided
    assert decided["detail"]["branch"] == "code" and decided["detail"]["db"] == "none"
    assert decided["detail"]["cost"]["verdict"] == "code-only"
    assert "BACKOUT_AUTO_ROLLBACK=auto chose code because the verdict is code-only rollback safe" in decided["reason"]
    assert "the database keeps the newer schema" in decided["reason"]
    request = story.finished_request()
    assert request["status"] == "succeeded", story.log()[-3000:]
    assert request["db"] == "none"
    assert story.current()["description"] == f"Rollback to v{good['version']}"
    assert story.columns("notes") == ["id", "body", "legacy", "priority"]  # the newer schema stays
    assert story.versions() == ["001", "002"]


def test_a_contract_release_is_rolled_back_with_its_down_migration(story: AutoStory):
    good = story.verified("good", NOTES)
    bad = story.release("bad", NOTES, CONTRACT)
    decided = story.decision(bad["version"])
    assert decided["kind"] == "rollback_requested", decided
    assert decided["detail"]["branch"] == "code+down" and decided["detail"]["db"] == "down"
    cost = decided["detail"]["cost"]
    assert cost["verdict"] == "down-needed" and cost["loss"] == [] and cost["loss_counted"] is True
    assert [d["reason"] for d in cost["deciding"]] == ["renames column notes.body to text"]
    assert "the down scripts lose nothing written since the deploy" in decided["reason"]
    request = story.finished_request()
    assert request["status"] == "succeeded", story.log()[-3000:]
    assert request["db"] == "down"
    assert story.current()["description"] == f"Rollback to v{good['version']}"
    assert story.columns("notes") == ["id", "body", "legacy"]
    assert story.versions() == ["001"]


def test_a_release_whose_down_would_drop_new_data_is_left_to_a_person(story: AutoStory):
    story.verified("good", NOTES)
    bad = story.release("bad", NOTES, LOSSY)
    decided = story.decision(bad["version"])
    assert decided["kind"] == "suppressed", decided
    detail = decided["detail"]
    assert detail["branch"] == "person" and detail["needs_person"] is True and detail["db"] is None
    assert detail["cost"]["verdict"] == "down-loses-data"
    assert detail["cost"]["loss"] == [{"table": "tags", "column": None, "rows": 2, "what": "2 rows of tags"}]
    reason = decided["reason"]
    assert "rolls back nothing by itself: the verdict is down loses data" in reason
    assert "002 (contract)" in reason and "they would lose 2 rows of tags" in reason
    assert f"backout rollback --app notes --to {detail['target']['checkpoint']} --db down --confirm notes" in reason
    assert "(it would lose 2 rows of tags)" in reason and "--db restore" in reason
    # Nothing was rolled back: the app runs the bad release on its schema, and a person was told.
    time.sleep(1.0)
    assert story.requests() == []
    assert story.current()["version"] == bad["version"]
    assert story.columns("tags") == ["id", "note_id", "tag"]
    wait_for(lambda: "health.rollback_suppressed" in story.notes.events, what="a person told")
    told = story.notes.texts("health.rollback_suppressed")[0]
    assert "down loses data" in told and "2 rows of tags" in told
    # The plan a person would run says the same before anything changes.
    plan = subprocess.run([sys.executable, "-m", "backout", "rollback", "--app", "notes", "--to",
                           detail["target"]["checkpoint"], "--db", "down", "--confirm", "notes", "--dry-run"],
                          env=story.env, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "verdict: down loses data: the previous code needs the schema back: 002 (contract)" in plan.stdout
    assert "they would lose 2 rows of tags" in plan.stdout
    assert "  contract 002: drops column notes.legacy" in plan.stdout
