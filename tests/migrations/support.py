"""What the migration tests share: the fixture trees, each tool's up migrations applied the way the
tool applies them (and the fixtures' migration ids), and what the tests compare: schemas, rows,
and saved migrations read back as a rollback reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from backout.migrations import SavedMigration
from backout.migrations.dbmate import parse
from backout.migrations.prisma import checksum
from tests.fixtures.migrate_standin import PRISMA_TABLE  # Prisma's own DDL, spelled once

FIXTURES = Path(__file__).parent.parent / "fixtures" / "migrations"


def fixture_tree(name: str, tmp_path: Path) -> Path:
    """A private copy of a fixture tree, so a test can change or delete it."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def schema_of(url: str) -> str:
    """`pg_dump --schema-only` of the database without the ledger's schema, minus the lines that
    change from run to run."""
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--exclude-schema=backout", "-d", url],
        check=True, capture_output=True, text=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def through_json(saved: list[SavedMigration]) -> list[SavedMigration]:
    """The records as a later rollback reads them back from the ledger's jsonb."""
    return [SavedMigration.from_json(json.loads(json.dumps(m.to_json()))) for m in saved]


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


# --- Alembic: upgrades through Alembic's API with the fixture project's own configuration


CUSTOMERS, INVOICES, STATUS, DROP_PHONE = "1a2b3c4d5e6f", "2b3c4d5e6f70", "3c4d5e6f7081", "4d5e6f708192"


def upgrade(project: Path, url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(project / "alembic.ini"))
    config.set_main_option("script_location", str(project / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("postgresql://", "postgresql+psycopg://", 1))
    command.upgrade(config, revision)


# --- dbmate: `dbmate up` (the up section and the schema_migrations row, in one transaction unless the marker says not)


USERS, ORDERS, INDEX, UNIQUE = "20240101120000", "20240201120000", "20240301120000", "20240401120000"


def dbmate_up(url: str, directory: Path, *versions: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists schema_migrations (version varchar(128) primary key)")
        for version in versions:
            [path] = directory.glob(f"{version}_*.sql")
            up, _, _ = parse(path.read_text(), path)
            if up.split("\n", 1)[0].split()[-1] == "transaction:false":
                conn.execute(up)
                conn.execute("insert into schema_migrations (version) values (%s)", [version])
            else:
                with conn.transaction():
                    conn.execute(up)
                    conn.execute("insert into schema_migrations (version) values (%s)", [version])


# --- Django: `manage.py migrate`


def migrate(project: Path, app: str, name: str) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", app, name, "--verbosity", "0"],
                   cwd=project, check=True, capture_output=True, text=True)


# --- golang-migrate: `migrate up` (SetVersion dirty, the whole .up.sql, SetVersion clean)


def migrate_up(url: str, directory: Path, *versions: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version bigint not null primary key,"
                     " dirty boolean not null)")
        for version in versions:
            [path] = directory.glob(f"{version:06d}_*.up.sql")
            set_version(conn, version, True)
            conn.execute(path.read_text())
            set_version(conn, version, False)


def set_version(conn: psycopg.Connection, version: int, dirty: bool) -> None:
    with conn.transaction():
        conn.execute("TRUNCATE schema_migrations")
        conn.execute("INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)", [version, dirty])


# --- Prisma: `prisma migrate deploy` (a _prisma_migrations row, the script in a transaction, then finished)


INIT, POST, BIO, DROP_NAME = ("20240101000000_init", "20240201000000_add_post",
                              "20240301000000_add_user_bio", "20240401000000_drop_user_name")


def deploy(url: str, migrations: Path, *names: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_TABLE)
        for name in names:
            sql = (migrations / name / "migration.sql").read_text()
            row_id = str(uuid.uuid4())
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at)"
                         " VALUES (%s, %s, %s, clock_timestamp())", [row_id, checksum(sql), name])
            with conn.transaction():
                conn.execute(sql)
            conn.execute("UPDATE _prisma_migrations SET finished_at = clock_timestamp(), applied_steps_count = 1"
                         " WHERE id = %s", [row_id])
