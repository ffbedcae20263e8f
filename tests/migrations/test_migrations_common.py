"""What the migration-tool adapters share: choosing an adapter, the saved-migration record, SQL
script splitting (the helpers the per-tool tests share are in tests/migrations/support.py)."""

from __future__ import annotations

import psycopg
import pytest

from backout.errors import BackoutError, ConfigError
from backout.migrations import ADAPTERS, SavedMigration, get_adapter
from backout.migrations.base import DownMigrationError
from backout.migrations.script import controls_transactions, is_blank, statements
from tests.migrations.support import through_json


def test_get_adapter_knows_every_tool_of_the_settings_contract():
    from backout.settings import load

    for tool in ADAPTERS:
        assert load({"BACKOUT_MIGRATIONS": tool}).migrations == tool
        assert get_adapter(tool, None).tool == tool


def test_get_adapter_refuses_an_unknown_tool_by_name():
    with pytest.raises(ConfigError) as caught:
        get_adapter("flyway", None)
    assert "BACKOUT_MIGRATIONS" in str(caught.value) and "'flyway'" in str(caught.value)
    assert "golang-migrate" in str(caught.value)


def test_conventional_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert get_adapter("prisma").path == tmp_path / "prisma" / "migrations"
    assert get_adapter("dbmate").path == tmp_path / "db" / "migrations"
    assert get_adapter("golang-migrate").path == tmp_path / "migrations"
    assert get_adapter("django").path == tmp_path
    assert get_adapter("alembic").path == tmp_path / "alembic"
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n")
    assert get_adapter("alembic").path == tmp_path / "alembic.ini"
    assert get_adapter("dbmate", "sql/migrations").path == tmp_path / "sql" / "migrations"


def test_a_missing_migrations_directory_names_the_setting(tmp_path):
    adapter = get_adapter("dbmate", tmp_path / "nowhere")
    with pytest.raises(BackoutError) as caught:
        adapter.available()
    assert "BACKOUT_MIGRATIONS_PATH" in str(caught.value) and "nowhere" in str(caught.value)


def test_saved_migration_survives_json():
    m = SavedMigration(tool="dbmate", id="1", name="1_x", down="drop table x;", transactional=False,
                       reversible=True, files={"1_x.sql": "-- migrate:up\n"}, parents=["0"])
    assert through_json([m]) == [m]
    with pytest.raises(BackoutError, match="lacks down"):
        SavedMigration.from_json({k: v for k, v in m.to_json().items() if k != "down"})


def test_down_migration_error_says_what_ran():
    error = DownMigrationError(["3", "2"], "1", "relation x does not exist")
    assert error.ran == ["3", "2"] and error.failed == "1"
    assert str(error) == "down migration 1 failed: relation x does not exist (undone before it: 3, 2)"


def test_statements_split_outside_quotes_comments_and_dollar_quotes():
    sql = """
        -- a comment; with a semicolon
        CREATE TABLE t (a text DEFAULT 'x;y', "we;ird" int);
        /* block; /* nested; */ still comment */
        CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END; $body$;
        SELECT E'it\\'s; fine', 'it''s; fine', $$;$$;
        -- only a comment at the end;
    """
    found = statements(sql)
    assert [s.keyword for s in found] == ["CREATE", "CREATE", "SELECT"]
    assert found[0].text.startswith("-- a comment") and found[0].text.endswith("int)")
    assert "$body$ BEGIN RETURN 1; END; $body$" in found[1].text


def test_blank_scripts_and_transaction_control():
    assert is_blank("-- nothing here\n  /* nor here */ ;\n")
    assert not is_blank("select 1")
    assert controls_transactions("BEGIN; create table t (a int); COMMIT;")
    assert controls_transactions("create table t (a int);\ncommit;\ncreate index on t (a);")
    assert not controls_transactions("create function f() returns void language plpgsql as $$ begin end $$;")
    assert not controls_transactions("create table t (a int); -- commit later")


@pytest.mark.integration
def test_none_adapter_has_no_state_and_refuses_saved_migrations(database):
    adapter = get_adapter("none")
    saved = SavedMigration(tool="prisma", id="20240101_x", name="x", down="select 1", transactional=True,
                           reversible=True, files={})
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [] and adapter.pending(conn) == []
        assert adapter.check_down_plan(conn, []) == []
        assert adapter.run_down(conn, []) == []
        [problem] = adapter.check_down_plan(conn, [saved])
        assert "BACKOUT_MIGRATIONS is none" in problem and "20240101_x" in problem
