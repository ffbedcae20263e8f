"""The golang-migrate adapter on real PostgreSQL. Up migrations are applied the way `migrate up`
does with its PostgreSQL driver: SetVersion(v, dirty) (truncate, insert), the whole .up.sql as one
query string, then SetVersion(v, clean)."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, get_adapter
from tests.migrations.support import (
    fixture_tree,
    migrate_up,
    rows,
    schema_of,
    set_version,
    through_json,
)

pytestmark = pytest.mark.integration


def version_row(url: str) -> list[tuple]:
    return rows(url, "SELECT version, dirty FROM schema_migrations")


def test_undoing_every_migration_empties_the_version_table(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    adapter = get_adapter("golang-migrate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == []
        conn.execute("CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)")
        pending = adapter.pending(conn)
    before = schema_of(database)
    assert [m.id for m in pending] == ["1", "2", "3", "4"]
    accounts, balance, transfers, drop_index = pending
    assert accounts.parents == [] and balance.parents == ["1"] and transfers.parents == ["2"]
    assert balance.name == "add_balance" and not balance.transactional
    assert set(balance.files) == {"000002_add_balance.up.sql", "000002_add_balance.down.sql"}
    assert not drop_index.reversible and "000004_drop_owner_index.down.sql" in drop_index.irreversible_reason

    migrate_up(database, tree, 1, 2, 3)
    # As a rollback across two checkpoints may hand them over: the newer checkpoint's first.
    saved = through_json([transfers, accounts, balance])
    shutil.rmtree(tree)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == ["3"] and adapter.check_down_plan(conn, saved) == []
        assert adapter.run_down(conn, saved) == ["3", "2", "1"]
        assert adapter.applied(conn) == []
    assert schema_of(database) == before
    assert version_row(database) == []


def test_undoing_some_migrations_leaves_the_previous_version_clean(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == ["1"]
        pending = adapter.pending(conn)
    assert [m.id for m in pending] == ["2", "3", "4"]
    migrate_up(database, tree, 2, 3)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.run_down(conn, through_json(pending[:2])) == ["3", "2"]
    assert schema_of(database) == before
    assert version_row(database) == [(1, False)]


def test_a_down_file_failing_halfway_is_rolled_back_and_the_version_stays(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    with psycopg.connect(database, autocommit=True) as conn:
        balance, transfers = adapter.pending(conn)[:2]
    migrate_up(database, tree, 2)
    after_balance = schema_of(database)
    migrate_up(database, tree, 3)
    # The first two statements work, the third fails: PostgreSQL undoes all three.
    balance.down = balance.down.replace("ALTER TABLE accounts DROP COLUMN balance;", "ALTER TABLE accounts DROP COLUMN nope;")
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, through_json([balance, transfers]))
    assert caught.value.ran == ["3"] and caught.value.failed == "2"
    assert "nope" in caught.value.reason and "back at 2" in caught.value.reason
    assert schema_of(database) == after_balance
    assert version_row(database) == [(2, False)]


def test_a_down_file_that_commits_itself_leaves_the_version_dirty_as_golang_migrate_does(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    with psycopg.connect(database, autocommit=True) as conn:
        balance = adapter.pending(conn)[0]
    migrate_up(database, tree, 2)
    balance.down = "BEGIN;\nDROP INDEX accounts_owner_idx;\nCOMMIT;\nALTER TABLE accounts DROP COLUMN nope;\n"
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, [balance])
        assert "left dirty at 1" in caught.value.reason
        assert version_row(database) == [(1, True)]
        # And a dirty state refuses any further plan until someone fixes it.
        problems = adapter.check_down_plan(conn, [balance])
        assert any("dirty at version 1" in p for p in problems)


def test_after_a_failed_migrate_up_the_dirty_version_is_cleared_and_the_run_undone(database, tmp_path):
    """What the release hook does when `migrate up` fails: undo the migrations it applied."""
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    broken = tree / "000003_create_transfers.up.sql"
    broken.write_text(broken.read_text() + "SELECT 1/0;\n")
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        saved = adapter.pending(conn)
    migrate_up(database, tree, 2)
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate_up(database, tree, 3)
    assert version_row(database) == [(3, True)]  # golang-migrate's mark of a failed migration
    with psycopg.connect(database, autocommit=True) as conn:
        still_pending = {m.id for m in adapter.pending(conn)}
        applied_in_run = [m for m in saved if m.id not in still_pending]
        assert [m.id for m in applied_in_run] == ["2", "3"]
        assert adapter.check_down_plan(conn, applied_in_run) == []
        assert adapter.run_down(conn, applied_in_run) == ["3", "2"]
    assert schema_of(database) == before
    assert version_row(database) == [(1, False)]


def test_a_failed_migration_without_a_down_file_only_has_its_dirty_mark_cleared(database, tmp_path):
    """PostgreSQL rolled the failed file back whole, so it needs no down script; without clearing
    the mark, every later `migrate up` would refuse to run."""
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    broken = tree / "000003_create_transfers.up.sql"
    broken.write_text(broken.read_text() + "SELECT 1/0;\n")
    (tree / "000003_create_transfers.down.sql").unlink()
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1, 2)
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        transfers = next(m for m in adapter.pending(conn) if m.id == "3")
    assert not transfers.reversible
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate_up(database, tree, 3)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.check_down_plan(conn, [transfers]) == []
        assert adapter.run_down(conn, [transfers]) == ["3"]
    assert schema_of(database) == before
    assert version_row(database) == [(2, False)]
    with psycopg.connect(database, autocommit=True) as conn:
        # Applied for real, the same migration is irreversible for any later plan.
        set_version(conn, 3, False)
        assert any("irreversible" in p for p in adapter.check_down_plan(conn, [transfers]))


def test_a_dirty_version_from_a_file_that_commits_itself_is_refused(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    broken = tree / "000002_add_balance.up.sql"
    broken.write_text("BEGIN;\n" + broken.read_text() + "COMMIT;\nSELECT 1/0;\n")
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    with psycopg.connect(database, autocommit=True) as conn:
        balance = adapter.pending(conn)[0]
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate_up(database, tree, 2)
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, [balance])
    assert "dirty at version 2" in problem and "migrate force" in problem


def test_a_state_changed_by_hand_is_named_and_nothing_runs(database, tmp_path):
    tree = fixture_tree("golang-migrate", tmp_path) / "migrations"
    adapter = get_adapter("golang-migrate", tree)
    migrate_up(database, tree, 1)
    with psycopg.connect(database, autocommit=True) as conn:
        balance, transfers, drop_index = adapter.pending(conn)
    migrate_up(database, tree, 2, 3, 4)
    changed = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, [balance, transfers])
        assert "current version is 4" in problem and "expected 3" in problem
        with pytest.raises(PlanRefused):
            adapter.run_down(conn, [balance, transfers])
        [problem] = adapter.check_down_plan(conn, [balance, transfers, drop_index])
        assert "4 (drop_owner_index) is irreversible" in problem
        problems = adapter.check_down_plan(conn, [balance, drop_index])
        assert any("not consecutive" in p for p in problems)
    assert schema_of(database) == changed


def test_an_unexpected_table_shape_names_the_table_and_columns(database, tmp_path):
    adapter = get_adapter("golang-migrate", fixture_tree("golang-migrate", tmp_path) / "migrations")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("create table schema_migrations (version varchar(128) primary key)")  # dbmate's
        with pytest.raises(BackoutError) as caught:
            adapter.applied(conn)
    assert "schema_migrations" in str(caught.value) and "lacks dirty" in str(caught.value)
    assert "expected columns version, dirty" in str(caught.value)
