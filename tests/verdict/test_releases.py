"""Whole releases judged: the verdict of a release's pending migrations, the data a down would lose
counted at rollback time, the size of a locked table looked up in the database, and the release
phase recording the verdict with the checkpoint and enforcing BACKOUT_REQUIRE before anything runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg
import pytest

from backout import ledger
from backout.migrations import get_adapter
from backout.verdict.verdict import Verdict, down_loss, judge, with_loss, worst
from tests.hooks.support import hook_env, release
from tests.hooks.test_release_hook_tools import STANDIN
from tests.migrations.support import dbmate_up

pytestmark = pytest.mark.integration

BASE = ("001_notes", "create table notes (id serial primary key, body text, legacy text);",
        "drop table notes;")

# name: (the release's migrations as (file, up, down), the verdict, what its reason says)
RELEASES = {
    "expand only": ([("002_more", "alter table notes add column priority int;\n"
                                  "create index concurrently notes_priority on notes (priority);\n"
                                  "create table tags (id serial primary key, note_id int references notes (id));",
                      "drop table tags; alter table notes drop column priority;")],
                    "code-only", "1 migration, all expand"),
    "a new table with its own constraints": ([("002_tags", "create table tags (id int, tag text);\n"
                                                           "alter table tags add constraint tags_tag unique (tag);\n"
                                                           "create unique index tags_id on tags (id);", "")],
                                             "code-only", "all expand"),
    "expand, irreversible": ([("002_idx", "create index concurrently notes_body on notes (body);", "")],
                             "code-only", "all expand"),
    "contract with a down": ([("002_rename", "alter table notes rename column body to text;",
                               "alter table notes rename column text to body;")],
                             "down-needed", "002 (contract)"),
    "contract without a down": ([("002_drop", "alter table notes drop column legacy;", "")],
                                "irreversible", "002 (contract; its -- migrate:down section is empty) cannot be undone"),
    "data with a down": ([("002_fill", "update notes set legacy = body where legacy is null;", "select 1;")],
                         "down-needed", "002 (data)"),
    "procedural code without a down": ([("002_do", "do $$ begin perform 1; end $$;", "")],
                                       "irreversible", "002 (unknown"),
    "two migrations, the worst decides": ([("002_more", "alter table notes add column priority int;",
                                            "alter table notes drop column priority;"),
                                           ("003_check", "alter table notes add constraint body_set check "
                                                         "(body is not null) not valid;",
                                            "alter table notes drop constraint body_set;")],
                                          "down-needed", "003 (contract); the down scripts drop column notes.priority"),
}


def dbmate_tree(root: Path, *migrations: tuple[str, str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, up, down in migrations:
        (root / f"{name}.sql").write_text(f"-- migrate:up\n{up}\n\n-- migrate:down\n{down}\n")
    return root


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_verdicts(name, database, tmp_path):
    migrations, expected, reason = RELEASES[name]
    tree = dbmate_tree(tmp_path / "db" / "migrations", BASE, *migrations)
    dbmate_up(database, tree, "001")
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        verdict = judge(adapter, conn, adapter.pending(conn))
    assert verdict.kind == expected and reason in verdict.reason, verdict.reason
    assert [m.id for m in verdict.migrations] == [m[0].split("_")[0] for m in migrations]
    if expected == "code-only":
        assert verdict.deciding == []
    else:
        assert verdict.deciding and verdict.lines()[1].startswith("  ")
    # What the ledger keeps reads back the same.
    assert Verdict.from_json(json.loads(json.dumps(verdict.to_json()))).to_json() == verdict.to_json()


def test_a_down_loses_the_rows_and_non_default_values_written_since(database, tmp_path):
    tree = dbmate_tree(tmp_path / "m", BASE, (
        "002_split", "create table tags (id serial primary key, tag text);\n"
                     "alter table notes add column priority int not null default 0;\n"
                     "alter table notes add column color text;\n"
                     "alter table notes drop column legacy;",
        "alter table notes add column legacy text; alter table notes drop column color;\n"
        "alter table notes drop column priority; drop table tags;"))
    dbmate_up(database, tree, "001")
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("insert into notes (body) select 'n' || g from generate_series(1, 5) g")
        verdict = judge(adapter, conn, adapter.pending(conn))
        assert verdict.kind == "down-needed"
        assert verdict.down_drops == [("notes", "color"), ("notes", "priority"), ("tags", None)]
        dbmate_up(database, tree, "002")
        # Nothing written since the deploy: the down loses nothing.
        assert down_loss(conn, verdict.down_drops) == []
        assert with_loss(verdict, []) == ("down-needed", verdict.reason)
        conn.execute("insert into tags (tag) values ('a'), ('b'), ('c')")
        conn.execute("update notes set priority = 2 where id <= 2")
        conn.execute("update notes set color = 'red' where id = 1")
        lost = down_loss(conn, verdict.down_drops)
    assert [x["what"] for x in lost] == ["1 non-default values of notes.color", "2 non-default values of notes.priority",
                                         "3 rows of tags"]
    kind, reason = with_loss(verdict, lost)
    assert kind == "down-loses-data" and reason.endswith("they would lose 1 non-default values of notes.color, "
                                                         "2 non-default values of notes.priority, 3 rows of tags")


def test_several_releases_rolled_back_at_once_take_the_worst_verdict(database, tmp_path):
    tree = dbmate_tree(tmp_path / "m", BASE, ("002_more", "alter table notes add column priority int;",
                                              "alter table notes drop column priority;"))
    dbmate_up(database, tree, "001")
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        expand = judge(adapter, conn, adapter.pending(conn))
        dbmate_tree(tree, ("003_drop", "alter table notes drop column legacy;", ""))
        dbmate_up(database, tree, "002")
        contract = judge(adapter, conn, adapter.pending(conn))
    assert (expand.kind, contract.kind, worst([expand, contract]).kind) == ("code-only", "irreversible", "irreversible")
    assert worst([expand]).kind == "code-only" and worst([]).kind == "code-only"


def test_an_access_exclusive_lock_on_a_big_table_is_a_danger_found_from_its_size(database, tmp_path):
    tree = dbmate_tree(tmp_path / "m", BASE, ("002_type", "alter table notes alter column body type varchar(400);",
                                              "alter table notes alter column body type text;"))
    dbmate_up(database, tree, "001")
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("insert into notes (body) select repeat('x', 200) from generate_series(1, 2000) g")
        conn.execute("analyze notes")
        small = judge(adapter, conn, adapter.pending(conn))
        big = judge(adapter, conn, adapter.pending(conn), big_table_bytes=64 * 1024)
    assert [d.kind for _, d in small.dangers] == ["table-rewrite"]
    assert [d.kind for _, d in big.dangers] == ["table-rewrite", "access-exclusive-on-big-table"]
    message = big.dangers[1][1].message
    assert message.startswith("takes an ACCESS EXCLUSIVE lock on notes, ") and "~2000 rows" in message


def _app(url: str, tmp_path: Path, *migrations: tuple[str, str, str]) -> Path:
    """An app whose BASE migration is applied and whose `migrations` are pending."""
    app = tmp_path / "app"
    dbmate_up(url, dbmate_tree(app / "db" / "migrations", BASE, *migrations), "001")
    (app / "migrate_standin.py").write_text(STANDIN.read_text())
    return app


def test_the_release_phase_records_the_verdict_and_prints_it(database, tmp_path):
    app = _app(database, tmp_path, ("002_rename", "alter table notes rename column body to text;",
                                "alter table notes rename column text to body;"))
    env = hook_env(database, tmp_path, BACKOUT_MIGRATIONS="dbmate", BACKOUT_MIGRATIONS_PATH="db/migrations")
    done = release(env, sys.executable, "migrate_standin.py", "dbmate", "up", cwd=app)
    assert done.returncode == 0, done.stderr
    assert "verdict: down needed: the previous code needs the schema back: 002 (contract)" in done.stderr
    assert "contract 002: renames column notes.body to text  [alter table notes rename column body to text]" \
        in done.stderr
    with ledger.connect(database) as conn:
        [cp] = ledger.list_checkpoints(conn, "shop")
    assert cp["status"] == "complete" and cp["verdict"]["verdict"] == "down-needed"
    assert [d["migration"] for d in cp["verdict"]["deciding"]] == ["002"]


def test_the_release_phase_refuses_a_release_that_breaks_backout_require(database, tmp_path):
    app = _app(database, tmp_path, ("002_drop", "alter table notes drop column legacy;", ""))
    env = hook_env(database, tmp_path, BACKOUT_MIGRATIONS="dbmate", BACKOUT_MIGRATIONS_PATH="db/migrations",
                   BACKOUT_REQUIRE="expand-only")
    done = release(env, sys.executable, "migrate_standin.py", "dbmate", "up", cwd=app)
    assert done.returncode == 1
    assert "the pending migrations break BACKOUT_REQUIRE: the release is not deployed" in done.stderr
    assert "backout: BACKOUT_REQUIRE=expand-only, but the verdict is irreversible" in done.stderr
    assert "running: " not in done.stderr  # nothing ran
    with psycopg.connect(database, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("select version from schema_migrations")] == ["001"]
    with ledger.connect(database) as conn:
        [cp] = ledger.list_checkpoints(conn, "shop")
    assert cp["status"] == "failed" and cp["error"].startswith("BACKOUT_REQUIRE=expand-only")
    assert cp["backup"] is None  # refused before the backup was taken
