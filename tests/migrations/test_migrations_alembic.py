"""The Alembic adapter on real PostgreSQL: real `alembic upgrade` through Alembic's API with the
fixture project's own alembic.ini and env.py; down migrations through Alembic's own downgrade from
the saved revision files only."""

from __future__ import annotations

import gc
import shutil

import psycopg
import pytest

from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, get_adapter
from backout.migrations.alembic import downgrade_source
from tests.migrations.support import (
    CUSTOMERS,
    DROP_PHONE,
    INVOICES,
    STATUS,
    fixture_tree,
    rows,
    schema_of,
    through_json,
    upgrade,
)

pytestmark = pytest.mark.integration


def heads(url: str) -> list[str]:
    return sorted(v for (v,) in rows(url, "SELECT version_num FROM alembic_version"))


def test_reads_heads_saves_revision_files_and_downgrades_with_alembic_after_the_code_is_gone(
    database, tmp_path, monkeypatch
):
    project = fixture_tree("alembic", tmp_path)
    monkeypatch.chdir(tmp_path)  # not the project: the ini's relative script_location still resolves
    adapter = get_adapter("alembic", project / "alembic.ini")
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == []
        assert [m.id for m in adapter.pending(conn)] == [CUSTOMERS, INVOICES, STATUS, DROP_PHONE]
    upgrade(project, database, CUSTOMERS)
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [CUSTOMERS]
        pending = adapter.pending(conn)
    assert [m.id for m in pending] == [INVOICES, STATUS, DROP_PHONE]
    invoices, status, drop_phone = pending
    assert invoices.name == "create invoices" and invoices.parents == [CUSTOMERS] and invoices.transactional
    assert set(invoices.files) == {"2b3c4d5e6f70_create_invoices.py"}
    assert invoices.down.startswith("def downgrade() -> None:\n    op.drop_index(")
    assert not drop_phone.reversible and "raises" in drop_phone.irreversible_reason

    upgrade(project, database, STATUS)
    saved = through_json([invoices, status])
    shutil.rmtree(project)
    lines: list[str] = []
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.check_down_plan(conn, saved) == []
        assert adapter.run_down(conn, saved, lines.append) == [STATUS, INVOICES]
        assert adapter.applied(conn) == [CUSTOMERS]
        gc.collect()  # SQLAlchemy's engine and pool are garbage now; the connection must live on
        assert conn.autocommit and conn.execute("SELECT 1").fetchone() == (1,)
    assert schema_of(database) == before
    assert any(f"{STATUS} done" in line for line in lines)


def test_downgrading_to_base_needs_no_stub_and_empties_alembic_version(database, tmp_path):
    project = fixture_tree("alembic", tmp_path)
    adapter = get_adapter("alembic", project)  # a directory holding alembic.ini works too
    with psycopg.connect(database, autocommit=True) as conn:
        saved = through_json(adapter.pending(conn)[:2])
    upgrade(project, database, INVOICES)
    with psycopg.connect(database, autocommit=False) as conn:
        assert adapter.run_down(conn, saved) == [INVOICES, CUSTOMERS]
        assert not conn.autocommit
    assert heads(database) == []
    assert rows(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'") == [(0,)]


def test_a_downgrade_failing_halfway_rolls_back_its_revision_and_says_what_ran(database, tmp_path):
    project = fixture_tree("alembic", tmp_path)
    adapter = get_adapter("alembic", project / "alembic.ini")
    upgrade(project, database, CUSTOMERS)
    with psycopg.connect(database, autocommit=True) as conn:
        invoices, status = adapter.pending(conn)[:2]
    upgrade(project, database, INVOICES)
    after_invoices = schema_of(database)
    upgrade(project, database, STATUS)
    # invoices' downgrade drops its index, then fails: Alembic's transaction for it rolls back.
    [name] = invoices.files
    invoices.files[name] = invoices.files[name].replace(
        '    op.drop_table("invoices")', '    op.drop_table("invoices_that_never_were")'
    )
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, through_json([invoices, status]))
    assert caught.value.ran == [STATUS] and caught.value.failed == INVOICES
    assert "invoices_that_never_were" in caught.value.reason
    assert heads(database) == [INVOICES]
    assert schema_of(database) == after_invoices


def test_a_state_changed_by_hand_is_named_and_nothing_runs(database, tmp_path):
    project = fixture_tree("alembic", tmp_path)
    adapter = get_adapter("alembic", project / "alembic.ini")
    upgrade(project, database, CUSTOMERS)
    with psycopg.connect(database, autocommit=True) as conn:
        invoices, status, drop_phone = adapter.pending(conn)
    upgrade(project, database, DROP_PHONE)
    changed = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        problems = adapter.check_down_plan(conn, [invoices, status])
        assert any(DROP_PHONE in p and "no saved revision file" in p for p in problems)
        assert any(STATUS in p and "not a head" in p for p in problems)
        with pytest.raises(PlanRefused):
            adapter.run_down(conn, [invoices, status])
        [problem] = adapter.check_down_plan(conn, [invoices, status, drop_phone])
        assert DROP_PHONE in problem and "irreversible" in problem
    assert schema_of(database) == changed


def test_an_unexpected_table_shape_names_the_table_and_columns(database, tmp_path):
    adapter = get_adapter("alembic", fixture_tree("alembic", tmp_path) / "alembic.ini")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (revision text)")
        with pytest.raises(BackoutError, match="alembic_version .*lacks version_num; expected columns version_num"):
            adapter.applied(conn)


def test_which_downgrades_count_as_irreversible():
    def revision(up: str, down: str) -> str:
        return f"def upgrade():\n{up}\n\n\ndef downgrade():\n{down}\n"

    assert downgrade_source(revision("    op.add_column('t', c)", "    op.drop_column('t', 'c')"))[1] is None
    assert "does nothing" in downgrade_source(revision("    op.add_column('t', c)", '    """no."""\n    pass'))[1]
    assert downgrade_source(revision("    pass", "    pass"))[1] is None  # nothing to undo
    assert "raises" in downgrade_source(revision("    op.drop_table('t')", "    raise NotImplementedError"))[1]
    assert "no downgrade" in downgrade_source("def upgrade():\n    pass\n")[1]


def test_version_locations_from_alembic_ini_are_read_as_alembic_reads_them(tmp_path):
    project = fixture_tree("alembic", tmp_path)
    more = project / "more_versions"
    more.mkdir()
    (more / "5e6f708192a3_add_notes.py").write_text(
        '"""add notes\n\nRevision ID: 5e6f708192a3\n"""\nfrom alembic import op\n\n'
        'revision = "5e6f708192a3"\ndown_revision = "4d5e6f708192"\n\n\n'
        'def upgrade():\n    op.execute("CREATE TABLE notes (id int)")\n\n\n'
        'def downgrade():\n    op.execute("DROP TABLE notes")\n'
    )
    (more / "__init__.py").write_text("")
    ini = project / "alembic.ini"
    base = ini.read_text()
    for setting in ("version_locations = %(here)s/more_versions, %(here)s/alembic/versions",  # legacy split
                    "path_separator = os\nversion_locations = %(here)s/more_versions:alembic/versions"):
        ini.write_text(base.replace("script_location = alembic", f"script_location = alembic\n{setting}"))
        found = get_adapter("alembic", ini).available()
        assert [m.id for m in found] == [CUSTOMERS, INVOICES, STATUS, DROP_PHONE, "5e6f708192a3"]
        assert found[-1].name == "add notes" and found[-1].parents == [DROP_PHONE]
    # The script directory itself also works, without an ini.
    assert [m.id for m in get_adapter("alembic", project / "alembic").available()][-1] == DROP_PHONE

    (more / "helpers.py").write_text("def shared():\n    pass\n")
    with pytest.raises(BackoutError, match="helpers.py is in the Alembic versions directory but sets no revision"):
        get_adapter("alembic", ini).available()


BRANCHED = ["a1f0c0de0001", "b2e0c0de0002", "c2b0c0de0003", "d3m0c0de0004", "e4d0c0de0005"]


def test_a_history_with_merged_branches_an_enum_batch_operations_and_a_data_migration_goes_down_and_up(
    database, tmp_path
):
    """The shapes real histories have: two branches (one adds an enum type, one alters a table in
    batch mode) merged, then a data migration; down from the saved files alone, and up again."""
    project = fixture_tree("alembic-branches", tmp_path)
    adapter = get_adapter("alembic", project / "alembic.ini")
    first, _, _, _, newest = BRANCHED
    upgrade(project, database, first)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (name) VALUES ('acme inc'), ('bob'), ('carol inc')")
        target = adapter.applied(conn)
        pending = adapter.pending(conn)
        assert adapter.applied_history(conn) == [first]
    release_1 = schema_of(database), rows(database, "SELECT * FROM accounts ORDER BY id")
    assert sorted(m.id for m in pending) == sorted(BRANCHED[1:])
    upgrade(project, database, "head")
    assert rows(database, "SELECT display_name, plan::text FROM accounts ORDER BY id") == [
        ("Acme Inc", "pro"), ("Bob", "free"), ("Carol Inc", "pro")]
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [newest] and sorted(adapter.applied_history(conn)) == sorted(BRANCHED)
    saved = {m.id: m for m in through_json(pending)}
    shutil.rmtree(project)  # the code is gone: only the saved revision files remain

    with psycopg.connect(database, autocommit=True) as conn:
        path = adapter.down_path(conn, saved, target)
        assert path.missing == [] and path.behind == [] and sorted(m.id for m in path.migrations) == sorted(BRANCHED[1:])
        undone = adapter.run_down(conn, path.migrations)
    assert undone[:2] == [newest, "d3m0c0de0004"] and sorted(undone) == sorted(BRANCHED[1:])
    assert (schema_of(database), rows(database, "SELECT * FROM accounts ORDER BY id")) == release_1
    assert heads(database) == [first]
    assert rows(database, "SELECT count(*) FROM pg_type WHERE typname = 'account_plan'") == [(0,)]

    project = fixture_tree("alembic-branches", tmp_path / "again")
    upgrade(project, database, "head")
    assert heads(database) == [newest]
