"""The dbmate adapter on real PostgreSQL. Up migrations are applied the way `dbmate up` does: the
`-- migrate:up` section and the schema_migrations insert in one transaction, or without one when
the marker says `transaction:false`."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, get_adapter
from tests.migrations.support import (
    INDEX,
    ORDERS,
    UNIQUE,
    USERS,
    dbmate_up,
    fixture_tree,
    rows,
    schema_of,
    through_json,
)

pytestmark = pytest.mark.integration


def test_reads_state_saves_down_sections_and_undoes_them_after_the_code_is_gone(database, tmp_path):
    tree = fixture_tree("dbmate", tmp_path) / "db" / "migrations"
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == []
    dbmate_up(database, tree, USERS)
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [USERS]
        pending = adapter.pending(conn)
    assert [m.id for m in pending] == [ORDERS, INDEX, UNIQUE]
    orders, index, unique = pending
    assert orders.transactional and orders.down.startswith("-- migrate:down\ndrop function orders_touch();")
    assert orders.name == "20240201120000_create_orders"
    assert not index.transactional and "drop index concurrently" in index.down
    assert not unique.reversible and "empty" in unique.irreversible_reason

    dbmate_up(database, tree, ORDERS, INDEX)
    saved = through_json([orders, index])
    shutil.rmtree(tree)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.check_down_plan(conn, saved) == []
        # The concurrent index drop only works outside a transaction block, as dbmate runs it.
        assert adapter.run_down(conn, saved) == [INDEX, ORDERS]
        assert adapter.applied(conn) == [USERS]
    assert schema_of(database) == before
    assert rows(database, "select version from schema_migrations") == [(USERS,)]


def test_a_down_section_failing_halfway_rolls_back_and_says_what_ran(database, tmp_path):
    tree = fixture_tree("dbmate", tmp_path) / "db" / "migrations"
    adapter = get_adapter("dbmate", tree)
    dbmate_up(database, tree, USERS)
    with psycopg.connect(database, autocommit=True) as conn:
        orders, index = adapter.pending(conn)[:2]
    dbmate_up(database, tree, ORDERS)
    after_orders = schema_of(database)
    dbmate_up(database, tree, INDEX)
    orders.down = orders.down.replace("drop type order_state;", "drop type order_state;\ndrop table nowhere;")

    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, through_json([orders, index]))
        assert caught.value.ran == [INDEX] and caught.value.failed == ORDERS
        assert "nowhere" in caught.value.reason
        assert adapter.applied(conn) == [USERS, ORDERS]
    assert schema_of(database) == after_orders


def test_a_non_transactional_down_failing_is_rolled_back_by_postgres(database, tmp_path):
    tree = fixture_tree("dbmate", tmp_path) / "db" / "migrations"
    adapter = get_adapter("dbmate", tree)
    dbmate_up(database, tree, USERS, ORDERS)
    with psycopg.connect(database, autocommit=True) as conn:
        index = adapter.pending(conn)[0]
    dbmate_up(database, tree, INDEX)
    with_index = schema_of(database)
    index.down = "-- migrate:down transaction:false\ndrop table orders;\nselect 1/0;\n"
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, [index])
        assert caught.value.ran == [] and "rolled the whole script back" in caught.value.reason
        assert adapter.applied(conn) == [USERS, ORDERS, INDEX]
    assert schema_of(database) == with_index


def test_a_state_changed_by_hand_is_named_and_nothing_runs(database, tmp_path):
    tree = fixture_tree("dbmate", tmp_path) / "db" / "migrations"
    adapter = get_adapter("dbmate", tree)
    dbmate_up(database, tree, USERS)
    with psycopg.connect(database, autocommit=True) as conn:
        orders, index, unique = adapter.pending(conn)
    dbmate_up(database, tree, ORDERS, INDEX, UNIQUE)
    changed = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, [orders, index])
        assert UNIQUE in problem and "applied after the checkpoint" in problem
        [problem] = adapter.check_down_plan(conn, [orders, index, unique])
        assert UNIQUE in problem and "irreversible" in problem and "migrate:down section is empty" in problem
        with pytest.raises(PlanRefused):
            adapter.run_down(conn, [orders, index, unique])
        assert f"{ORDERS} is in the plan 2 times" in adapter.check_down_plan(conn, [orders, orders, index])
        conn.execute("delete from schema_migrations where version = %s", [INDEX])
        problems = adapter.check_down_plan(conn, [orders, index])
        assert any(INDEX in p and "not applied" in p for p in problems)
    assert schema_of(database) == changed


def test_unexpected_table_shapes_and_files_are_named(database, tmp_path):
    tree = fixture_tree("dbmate", tmp_path) / "db" / "migrations"
    adapter = get_adapter("dbmate", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("create table schema_migrations (id serial, name text)")
        with pytest.raises(BackoutError, match="schema_migrations .*lacks version; expected columns version"):
            adapter.applied(conn)
        conn.execute("drop table schema_migrations")
        conn.execute("create table schema_migrations (version bigint primary key, dirty boolean not null)")
        with pytest.raises(BackoutError, match="golang-migrate"):
            adapter.applied(conn)
    (tree / "20240501000000_broken.sql").write_text("create table x (a int);\n")
    with pytest.raises(BackoutError, match="20240501000000_broken.sql is not a dbmate migration"):
        adapter.available()
