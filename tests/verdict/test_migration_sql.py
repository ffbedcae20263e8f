"""Each adapter's `migration_sql`: the SQL a pending migration will run, as the tool writes it, and
what cannot be written as SQL said in a sentence (the verdict calls it unknown)."""

from __future__ import annotations

import psycopg
import pytest

from backout.migrations import get_adapter
from backout.verdict.verdict import judge
from tests.hooks.test_release_hook_tools import ALEMBIC_REVISION
from tests.migrations import support as tools
from tests.migrations.support import fixture_tree

pytestmark = pytest.mark.integration


def test_alembic_writes_each_revision_offline_and_a_revision_needing_the_database_is_unknown(database, tmp_path):
    project = fixture_tree("alembic", tmp_path)
    tools.upgrade(project, database, tools.DROP_PHONE)
    versions = project / "alembic" / "versions"
    (versions / "5e6f70819203_invoice_note.py").write_text(ALEMBIC_REVISION.format(
        doc="invoice note", revision="5e6f70819203", down=tools.DROP_PHONE,
        upgrade='    op.add_column("invoices", sa.Column("note", sa.Text(), nullable=True))',
        downgrade='    op.drop_column("invoices", "note")'))
    (versions / "6f7081920314_backfill.py").write_text(ALEMBIC_REVISION.format(
        doc="backfill notes", revision="6f7081920314", down="5e6f70819203",
        upgrade='    rows = op.get_bind().execute(sa.text("SELECT id FROM invoices")).fetchall()\n'
                '    for (row_id,) in rows:\n'
                '        op.execute(f"UPDATE invoices SET note = \'#{row_id}\' WHERE id = {row_id}")',
        downgrade="    pass"))
    adapter = get_adapter("alembic", project / "alembic.ini")
    with psycopg.connect(database, autocommit=True) as conn:
        pending = adapter.pending(conn)
        sql = adapter.migration_sql(conn, pending)
        verdict = judge(adapter, conn, pending)
    note = sql["5e6f70819203"]
    assert "ALTER TABLE invoices ADD COLUMN note TEXT" in note.up and "alembic_version" in note.up
    assert "ALTER TABLE invoices DROP COLUMN note" in (note.down or "") and note.opaque == ()
    [why] = sql["6f7081920314"].opaque
    assert why.startswith("its upgrade() cannot be written as SQL offline (alembic --sql)")
    # The tool's bookkeeping is not judged; the backfill is unknown, and its downgrade does nothing.
    [m1, m2] = verdict.migrations
    assert [(s.kind, s.reason) for s in m1.statements] == [("expand", "adds invoices.note (nullable)")]
    assert [s.kind for s in m2.statements] == ["unknown"]
    assert verdict.kind == "irreversible" and "6f7081920314 (unknown;" in verdict.reason
    assert m1.down_drops == [("invoices", "note")]


def test_django_without_manage_py_judges_runsql_and_names_what_only_django_could_write(database, tmp_path):
    project = fixture_tree("django", tmp_path)
    (project / "manage.py").unlink()
    adapter = get_adapter("django", project)
    with psycopg.connect(database, autocommit=True) as conn:
        pending = adapter.pending(conn)
        sql = adapter.migration_sql(conn, pending)
    purge = sql["reporting.0003_purge_empty_days"]
    assert purge.up == "DELETE FROM reporting_daily_sales WHERE orders = 0;\n" and purge.opaque == ()
    initial = sql["shop.0001_initial"]
    assert initial.up == "" and initial.opaque[0].startswith("its CreateModel needs Django to write its SQL")
    assert any("RunPython" in why for why in sql["reporting.0002_rollups"].opaque)
