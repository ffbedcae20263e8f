"""The Prisma adapter on real PostgreSQL. Up migrations are applied the way `prisma migrate deploy`
does: a `_prisma_migrations` row (uuid, sha256 checksum, started_at) before the script, the
script in a transaction, then finished_at and applied_steps_count."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, get_adapter
from tests.migrations.support import (
    BIO,
    DROP_NAME,
    INIT,
    POST,
    deploy,
    fixture_tree,
    rows,
    schema_of,
    through_json,
)

pytestmark = pytest.mark.integration


def state(url: str) -> list[tuple[str, bool, bool]]:
    """(name, finished, rolled back) per row, in the order Prisma applied them."""
    return rows(url, "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL"
                     " FROM _prisma_migrations ORDER BY started_at")


def test_reads_state_saves_down_scripts_and_undoes_them_after_the_code_is_gone(database, tmp_path):
    tree = fixture_tree("prisma", tmp_path) / "migrations"
    adapter = get_adapter("prisma", tree)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == []
        assert [m.id for m in adapter.pending(conn)] == [INIT, POST, BIO, DROP_NAME]
    deploy(database, tree, INIT)
    before = schema_of(database)

    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [INIT]
        pending = adapter.pending(conn)
    assert [m.id for m in pending] == [POST, BIO, DROP_NAME]
    post, bio, drop_name = pending
    assert post.down.startswith("-- DropForeignKey") and post.transactional and post.reversible
    assert set(post.files) == {f"{POST}/migration.sql", f"{POST}/down.sql"}
    assert bio.parents == [POST]
    assert not drop_name.reversible and drop_name.down is None
    assert "no down.sql" in drop_name.irreversible_reason

    deploy(database, tree, POST, BIO)
    saved = through_json([post, bio])
    shutil.rmtree(tree)  # the rollback runs from the saved scripts only

    lines: list[str] = []
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.check_down_plan(conn, saved) == []
        assert adapter.run_down(conn, saved, lines.append) == [BIO, POST]
        assert adapter.applied(conn) == [INIT]
    assert schema_of(database) == before
    # The rows stay, marked rolled back, so `prisma migrate deploy` applies them again later.
    assert state(database) == [(INIT, True, False), (POST, True, True), (BIO, True, True)]
    assert any(BIO in line for line in lines)


def test_a_down_script_failing_halfway_rolls_back_its_step_and_says_what_ran(database, tmp_path):
    tree = fixture_tree("prisma", tmp_path) / "migrations"
    adapter = get_adapter("prisma", tree)
    deploy(database, tree, INIT)
    with psycopg.connect(database, autocommit=True) as conn:
        post, bio = adapter.pending(conn)[:2]
    deploy(database, tree, POST)
    after_post = schema_of(database)
    deploy(database, tree, BIO)
    # A down script whose first statements work and whose last one fails.
    post.down = post.down + '\nALTER TABLE "Nowhere" DROP COLUMN "x";\n'

    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, through_json([post, bio]))
        assert caught.value.ran == [BIO] and caught.value.failed == POST
        assert "Nowhere" in caught.value.reason
        assert adapter.applied(conn) == [INIT, POST]
    assert schema_of(database) == after_post  # Post, its enum and its foreign key are still there
    assert state(database) == [(INIT, True, False), (POST, True, False), (BIO, True, True)]


def test_a_state_changed_by_hand_is_named_and_nothing_runs(database, tmp_path):
    tree = fixture_tree("prisma", tmp_path) / "migrations"
    adapter = get_adapter("prisma", tree)
    deploy(database, tree, INIT)
    with psycopg.connect(database, autocommit=True) as conn:
        post, bio, drop_name = adapter.pending(conn)
    deploy(database, tree, POST, BIO, DROP_NAME)  # DROP_NAME applied by hand after the checkpoint
    changed = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, [post, bio])
        assert DROP_NAME in problem and "applied after the checkpoint" in problem
        with pytest.raises(PlanRefused, match=DROP_NAME):
            adapter.run_down(conn, [post, bio])
        # Including it in the plan does not help: it has no down script.
        [problem] = adapter.check_down_plan(conn, [post, bio, drop_name])
        assert "irreversible" in problem and DROP_NAME in problem
        conn.execute("UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = %s", [BIO])
        problems = adapter.check_down_plan(conn, [post, bio])
        assert any(BIO in p and "not applied" in p for p in problems)
    assert schema_of(database) == changed


def test_an_edited_migration_is_not_undone_with_the_old_down_script(database, tmp_path):
    tree = fixture_tree("prisma", tmp_path) / "migrations"
    adapter = get_adapter("prisma", tree)
    deploy(database, tree, INIT)
    with psycopg.connect(database, autocommit=True) as conn:
        post = adapter.pending(conn)[0]
    (tree / POST / "migration.sql").write_text((tree / POST / "migration.sql").read_text() + "\n-- edited\n")
    deploy(database, tree, POST)
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, [post])
    assert POST in problem and "checksum" in problem


def test_an_unexpected_table_shape_names_the_table_and_columns(database, tmp_path):
    adapter = get_adapter("prisma", fixture_tree("prisma", tmp_path) / "migrations")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE _prisma_migrations (id text, migration_name text)")
        with pytest.raises(BackoutError) as caught:
            adapter.applied(conn)
    message = str(caught.value)
    assert "_prisma_migrations" in message and "finished_at" in message and "rolled_back_at" in message
    assert "expected columns id, checksum" in message
