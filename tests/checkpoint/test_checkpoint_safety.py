"""A safety checkpoint is taken by the worker, which may not have the app's migration files (found by
`backout demo`, whose worker runs outside the app's slug): it records the migration state from the
tool's table and saves no down scripts, while a deploy checkpoint still needs the files."""

from __future__ import annotations

import psycopg
import pytest

from backout import checkpoint, ledger
from backout import settings as settings_module
from backout.errors import BadInput

pytestmark = pytest.mark.integration


def _settings(database: str, tmp_path) -> settings_module.Settings:
    return settings_module.load({
        "DATABASE_URL": database, "BACKOUT_BACKUP": "none", "BACKOUT_MIGRATIONS": "alembic",
        "BACKOUT_MIGRATIONS_PATH": str(tmp_path / "not-here" / "alembic.ini"),
    })


def _at_revision(database: str, revision: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))


def test_a_safety_checkpoint_needs_only_the_state_table(database, tmp_path):
    _at_revision(database, "0002")
    with ledger.connect(database) as conn:
        cp = checkpoint.take(_settings(database, tmp_path), conn, checkpoint.Release(version=5), kind="safety",
                             app="shop", request_id="rb_test")
    assert cp["status"] == "complete"
    assert cp["migrations_before"] == ["0002"]
    assert cp["down_scripts"] == [] and cp["reversible"] is True


def test_a_deploy_checkpoint_still_needs_the_migration_files(database, tmp_path):
    _at_revision(database, "0002")
    with ledger.connect(database) as conn:
        with pytest.raises(BadInput, match="BACKOUT_MIGRATIONS_PATH"):
            checkpoint.take(_settings(database, tmp_path), conn, checkpoint.Release(version=5), app="shop")
        # Bad input: refused before the ledger has a row of it.
        assert ledger.list_checkpoints(conn, "shop") == []
