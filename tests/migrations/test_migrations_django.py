"""The Django adapter on real PostgreSQL with a real tiny Django project: up migrations by
`manage.py migrate`, reverse SQL by `manage.py sqlmigrate --backwards` where Django and manage.py
are there, else read from RunSQL operations in the migration files."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from backout.errors import BackoutError, PlanRefused
from backout.migrations import DownMigrationError, SavedMigration, get_adapter
from tests.migrations.support import (
    FIXTURES,
    fixture_tree,
    migrate,
    rows,
    schema_of,
    through_json,
)

pytestmark = pytest.mark.integration

S1, S2, S3, S4 = "shop.0001_initial", "shop.0002_order", "shop.0003_product_sku", "shop.0004_normalize_names"
R1, R2, R3 = "reporting.0001_daily_sales", "reporting.0002_rollups", "reporting.0003_purge_empty_days"


@pytest.fixture
def project(database, tmp_path, monkeypatch) -> Path:
    """A copy of the fixture project whose settings point at this test's database."""
    monkeypatch.setenv("DATABASE_URL", database)
    return fixture_tree("django", tmp_path)


def recorded(url: str) -> list[str]:
    return [f"{a}.{n}" for a, n in rows(url, "SELECT app, name FROM django_migrations ORDER BY id")]


def test_sqlmigrate_writes_the_down_scripts_and_they_undo_the_migrations(project, database):
    adapter = get_adapter("django", project)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == []
    migrate(project, "shop", "0001")
    migrate(project, "reporting", "0001")
    before = schema_of(database)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.applied(conn) == [S1, R1]
        pending = {m.id: m for m in adapter.pending(conn)}
    assert list(pending) == [R2, R3, S2, S3, S4]
    order = pending[S2]
    assert order.transactional and order.parents == [S1] and order.files == {"shop/migrations/0002_order.py": (project / "shop/migrations/0002_order.py").read_text()}
    assert 'DROP TABLE "shop_order" CASCADE;' in order.down and "BEGIN;" not in order.down
    assert pending[S3].reversible  # its RunPython reverses to a no-op
    assert not pending[S4].reversible and "RunSQL without reverse_sql" in pending[S4].irreversible_reason
    assert not pending[R3].reversible
    assert "DROP VIEW reporting_recent;" in pending[R2].down

    migrate(project, "shop", "0003")
    migrate(project, "reporting", "0002")
    saved = through_json([pending[R2], pending[S2], pending[S3]])
    shutil.rmtree(project)
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.check_down_plan(conn, saved) == []
        assert adapter.run_down(conn, saved) == [S3, S2, R2]
    assert schema_of(database) == before
    assert recorded(database) == [S1, R1]


def test_a_down_script_failing_halfway_rolls_back_its_step_and_says_what_ran(project, database):
    adapter = get_adapter("django", project)
    migrate(project, "shop", "0001")
    with psycopg.connect(database, autocommit=True) as conn:
        pending = {m.id: m for m in adapter.pending(conn)}
    migrate(project, "shop", "0002")
    after_order = schema_of(database)
    migrate(project, "shop", "0003")
    order, sku = pending[S2], pending[S3]
    # Its first operation, unapplied last, fails: Django rolls the atomic migration back whole.
    [(path, source)] = order.files.items()
    order.files[path] = source.replace("operations = [", "operations = [\n        migrations.RunSQL("
                                       "migrations.RunSQL.noop, 'DROP TABLE \"shop_nowhere\"'),", 1)
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, through_json([order, sku]))
    assert caught.value.ran == [S3] and caught.value.failed == S2 and "shop_nowhere" in caught.value.reason
    assert schema_of(database) == after_order
    assert recorded(database) == [S1, S2]


def test_without_manage_py_the_reverse_sql_comes_from_runsql_operations(project, database):
    adapter = get_adapter("django", project)
    migrate(project, "reporting", "0001")
    before = schema_of(database)
    (project / "manage.py").unlink()
    with psycopg.connect(database, autocommit=True) as conn:
        pending = {m.id: m for m in adapter.pending(conn)}
    rollups = pending[R2]
    assert rollups.down == ("DROP VIEW reporting_recent;\nDROP INDEX reporting_monthly_orders;\n"
                            "DROP TABLE reporting_monthly;\n")
    assert "RunSQL without reverse_sql" in pending[R3].irreversible_reason
    assert "CreateModel needs Django" in pending[S1].irreversible_reason
    shutil.copy(FIXTURES / "django" / "manage.py", project / "manage.py")
    migrate(project, "reporting", "0002")
    with psycopg.connect(database, autocommit=True) as conn:
        assert adapter.run_down(conn, through_json([rollups])) == [R2]
    assert schema_of(database) == before
    assert recorded(database) == [R1]


def test_a_non_atomic_migration_is_undone_statement_by_statement(project, database):
    adapter = get_adapter("django", project)
    migrate(project, "reporting", "0002")
    two_steps = SavedMigration(
        tool="django", id=R2, name="0002_rollups", transactional=False, reversible=True, files={},
        down="DROP VIEW reporting_recent;\nDROP TABLE reporting_nowhere;\n",
    )
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(DownMigrationError) as caught:
            adapter.run_down(conn, [two_steps])
    assert "1 of its 2 reverse statements had taken effect" in caught.value.reason
    assert rows(database, "SELECT to_regclass('reporting_recent')") == [(None,)]  # as Django leaves it
    assert recorded(database) == [R1, R2]


def test_a_state_changed_by_hand_is_named_and_nothing_runs(project, database):
    adapter = get_adapter("django", project)
    migrate(project, "shop", "0001")
    with psycopg.connect(database, autocommit=True) as conn:
        pending = {m.id: m for m in adapter.pending(conn)}
    migrate(project, "shop", "0004")
    changed = schema_of(database)
    plan = [pending[S2], pending[S3]]
    with psycopg.connect(database, autocommit=True) as conn:
        [problem] = adapter.check_down_plan(conn, plan)
        assert S4 in problem and "applied after the checkpoint" in problem
        with pytest.raises(PlanRefused, match=S4):
            adapter.run_down(conn, plan)
        [problem] = adapter.check_down_plan(conn, plan + [pending[S4]])
        assert S4 in problem and "irreversible" in problem
        conn.execute("DELETE FROM django_migrations WHERE name = '0003_product_sku'")
        assert any(S3 in p and "not applied" in p for p in adapter.check_down_plan(conn, plan))
    assert schema_of(database) == changed


def test_an_unexpected_table_shape_names_the_table_and_columns(project, database):
    adapter = get_adapter("django", project)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE django_migrations (id serial, app text, migration text)")
        with pytest.raises(BackoutError) as caught:
            adapter.applied(conn)
    assert "django_migrations" in str(caught.value) and "lacks name, applied" in str(caught.value)


# --- a project laid out as most are: django.contrib, a pip-installed app, squashed migrations ------

PURGE = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_note_pinned_tags")]
    operations = [migrations.RunSQL("DELETE FROM notes_note WHERE title = ''")]
'''


@pytest.fixture
def apps_project(database, tmp_path, monkeypatch) -> Path:
    """django.contrib's apps, django-taggit from site-packages, and `notes`, whose 0001 and 0002
    are squashed into 0001_squashed_0002 (with a RunPython that has reverse code)."""
    monkeypatch.setenv("DATABASE_URL", database)
    return fixture_tree("django-apps", tmp_path)


def test_installed_apps_wherever_they_live_go_down_through_django_from_saved_files(apps_project, database):
    adapter = get_adapter("django", apps_project)
    # Release 1 migrates part way: auth up to 0010, taggit up to 0003 (and what they depend on).
    migrate(apps_project, "auth", "0010")
    migrate(apps_project, "taggit", "0003")
    release_1 = schema_of(database), sorted(recorded(database))
    with psycopg.connect(database, autocommit=True) as conn:
        applied = adapter.applied(conn)
        pending = {m.id: m for m in adapter.pending(conn)}
    assert len(applied) == 15 and "taggit.0003_taggeditem_add_unique_index" in applied
    assert list(pending) == [
        "admin.0001_initial", "admin.0002_logentry_remove_auto_add", "admin.0003_logentry_add_action_flag_choices",
        "auth.0011_update_proxy_permissions", "auth.0012_alter_user_first_name_max_length",
        "taggit.0004_alter_taggeditem_content_type_alter_taggeditem_tag", "taggit.0005_auto_20220424_2025",
        "taggit.0006_rename_taggeditem_content_type_object_id_taggit_tagg_content_8fc721_idx",
        "notes.0001_squashed_0002_note_body", "notes.0003_note_pinned_tags", "sessions.0001_initial",
    ]
    proxy = pending["auth.0011_update_proxy_permissions"]
    assert proxy.reversible and "django/contrib/auth/migrations/0011_update_proxy_permissions.py" in proxy.files
    assert "THIS OPERATION CANNOT BE WRITTEN AS SQL" in proxy.down  # its reverse is Python
    squashed = pending["notes.0001_squashed_0002_note_body"]
    assert squashed.replaces == ["notes.0001_initial", "notes.0002_note_body"] and squashed.parents == []
    assert pending["notes.0003_note_pinned_tags"].parents == [
        "notes.0001_squashed_0002_note_body",
        "taggit.0006_rename_taggeditem_content_type_object_id_taggit_tagg_content_8fc721_idx"]
    assert all(m.reversible for m in pending.values())

    # Release 2 migrates all; then its notes migrations leave the code (a rollback's code has none).
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=apps_project, check=True)
    assert "notes.0002_note_body" in recorded(database)  # Django records the replaced ones too
    saved = through_json(list(pending.values()))
    for name in ("0003_note_pinned_tags.py", "0001_squashed_0002_note_body.py"):
        (apps_project / "notes" / "migrations" / name).unlink()
    with psycopg.connect(database, autocommit=True) as conn:
        path = adapter.down_path(conn, {m.id: m for m in saved}, release_1[1])
        assert path.missing == [] and path.behind == [] and {m.id for m in path.migrations} == set(pending)
        lines: list[str] = []
        undone = adapter.run_down(conn, saved, lines.append)
    assert undone[0] == "sessions.0001_initial" and undone[-1] == "admin.0001_initial" and len(undone) == 11
    assert "unapplied auth.0011_update_proxy_permissions" in lines
    assert (schema_of(database), sorted(recorded(database))) == release_1

    # Django migrates again from there.
    shutil.copytree(FIXTURES / "django-apps" / "notes" / "migrations", apps_project / "notes" / "migrations",
                    dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    migrate(apps_project, "notes", "0003")
    (apps_project / "notes" / "migrations" / "0004_purge_drafts.py").write_text(PURGE)
    with psycopg.connect(database, autocommit=True) as conn:
        purge = {m.id: m for m in adapter.pending(conn)}["notes.0004_purge_drafts"]
    assert not purge.reversible and purge.irreversible_reason == "it has a RunSQL without reverse_sql"
