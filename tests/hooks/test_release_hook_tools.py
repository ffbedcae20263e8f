"""The release hook through the sandbox for every migration tool: Prisma, Alembic, Django, dbmate
and golang-migrate. Each app's slug holds the tool's migration tree and a Procfile line
`release: backout release -- <migrate command>`: real `alembic upgrade head` and real
`python manage.py migrate`; for the tools whose binaries cannot be installed here, a stand-in
(fixtures/migrate_standin.py) that does to the database what they do, state tables included.

One app per tool, four releases:
1. the fixture tree from an empty database with BACKOUT_BACKUP=none: a complete checkpoint with
   the state before and after from the tool's table and the down scripts of what was pending;
2. a config change to BACKOUT_BACKUP=pg_dump (a release of its own, as on Heroku): a complete
   checkpoint with a verified archive, the migrate command finding nothing to do;
3. two new migrations, the second failing after the first was applied and committed: the release
   fails, the hook undoes the first, and the schema and the tool's state are as they were;
4. the same with the second fixed: it deploys, so nothing the failure left blocks the tool.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from backout import ledger
from backout.heroku import HerokuClient
from backout.migrations import get_adapter
from backout.rollback.database import stream
from tests.hooks.support import ENV_PY, hook_env, release
from tests.migrations.support import FIXTURES, rows, schema_of
from tests.support import S3, deploy_slug

pytestmark = pytest.mark.integration

STANDIN = Path(__file__).parent.parent / "fixtures" / "migrate_standin.py"


@dataclass
class Tool:
    """One migration tool's app: its tree, migrate command, expected states, and the two new
    migrations of releases 3 and 4 (`new(fixed)` gives their files)."""

    name: str
    command: str
    path: str  # BACKOUT_MIGRATIONS_PATH, relative to the slug's root
    tree: str  # the fixture tree, copied to the slug's root
    state_sql: str  # the applied migrations as the tool's own table lists them
    applied: list[str]  # the adapter's ids after release 1 (the state a checkpoint records)
    pending: list[str]  # the down scripts saved at release 1
    irreversible: list[str]
    new: Callable[[bool], dict[str, str]]
    good: str  # the id of the new migration that applies
    undone: str  # the ids the hook undoes when the second new one fails
    after_fixed: list[str]
    under: str = ""  # where the tree goes in the slug
    broken_output: list[str] = field(default_factory=list)  # what else the failed release's log says
    overrides: dict[str, str] = field(default_factory=dict)

    def files(self, new_migrations: dict[str, str] | None = None) -> dict[str, str]:
        root = FIXTURES / self.tree
        found = {self.under + str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts}
        files = {**found, **self.overrides, **(new_migrations or {})}
        if "migrate_standin.py" in self.command:
            files["migrate_standin.py"] = STANDIN.read_text()
        return files


# --- the two new migrations of each tool: the second fails halfway unless fixed -----------------

def prisma_new(fixed: bool) -> dict[str, str]:
    target = "Post" if fixed else "Posts"
    return {
        "prisma/migrations/20240501000000_add_post_slug/migration.sql":
            '-- AlterTable\nALTER TABLE "Post" ADD COLUMN "slug" TEXT;\n\n'
            '-- CreateIndex\nCREATE UNIQUE INDEX "Post_slug_key" ON "Post"("slug");\n',
        "prisma/migrations/20240501000000_add_post_slug/down.sql":
            '-- DropIndex\nDROP INDEX "Post_slug_key";\n\n-- AlterTable\nALTER TABLE "Post" DROP COLUMN "slug";\n',
        "prisma/migrations/20240601000000_add_tag/migration.sql":
            '-- CreateTable\nCREATE TABLE "Tag" (\n    "id" SERIAL NOT NULL,\n    "postId" INTEGER NOT NULL,\n\n'
            '    CONSTRAINT "Tag_pkey" PRIMARY KEY ("id")\n);\n\n'
            f'-- AddForeignKey\nALTER TABLE "Tag" ADD CONSTRAINT "Tag_postId_fkey" FOREIGN KEY ("postId")'
            f' REFERENCES "{target}"("id") ON DELETE RESTRICT ON UPDATE CASCADE;\n',
        "prisma/migrations/20240601000000_add_tag/down.sql": '-- DropTable\nDROP TABLE "Tag";\n',
    }


def dbmate_new(fixed: bool) -> dict[str, str]:
    target = "orders" if fixed else "nowhere"
    return {
        # Applied outside a transaction, as its marker says: committed before the next one runs.
        "db/migrations/20240501120000_index_users_email_lower.sql":
            "-- migrate:up transaction:false\ncreate index concurrently users_email_lower_idx on users (lower(email));\n\n"
            "-- migrate:down transaction:false\ndrop index concurrently users_email_lower_idx;\n",
        "db/migrations/20240601120000_create_order_notes.sql":
            "-- migrate:up\ncreate table order_notes (\n  id bigserial primary key,\n  order_id bigint not null\n);\n"
            f"alter table order_notes add constraint order_notes_order_fk foreign key (order_id) references {target} (id);\n\n"
            "-- migrate:down\ndrop table order_notes;\n",
    }


def golang_migrate_new(fixed: bool) -> dict[str, str]:
    target = "accounts" if fixed else "account"
    return {
        "migrations/000005_add_transfer_memo.up.sql":
            "ALTER TABLE transfers ADD COLUMN memo text;\nCREATE INDEX transfers_memo_idx ON transfers (memo);\n",
        "migrations/000005_add_transfer_memo.down.sql":
            "DROP INDEX transfers_memo_idx;\nALTER TABLE transfers DROP COLUMN memo;\n",
        "migrations/000006_create_statements.up.sql":
            "CREATE TABLE statements (\n    id bigserial PRIMARY KEY,\n    account_id integer NOT NULL\n);\n"
            f"ALTER TABLE statements ADD CONSTRAINT statements_account_fk FOREIGN KEY (account_id) REFERENCES {target} (id);\n",
        "migrations/000006_create_statements.down.sql": "DROP TABLE statements;\n",
    }


ALEMBIC_REVISION = '''\
"""{doc}

Revision ID: {revision}
Revises: {down}
"""
from alembic import op
import sqlalchemy as sa

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''


def alembic_new(fixed: bool) -> dict[str, str]:
    target = "invoices" if fixed else "invoice"
    note = ALEMBIC_REVISION.format(
        doc="invoice note", revision="5e6f70819203", down="4d5e6f708192",
        upgrade='    op.add_column("invoices", sa.Column("note", sa.Text(), nullable=True))',
        downgrade='    op.drop_column("invoices", "note")')
    payments = ALEMBIC_REVISION.format(
        doc="create payments", revision="6f7081920314", down="5e6f70819203",
        upgrade='    op.create_table("payments", sa.Column("id", sa.Integer(), primary_key=True),\n'
                '                    sa.Column("invoice_id", sa.Integer(), nullable=False))\n'
                f'    op.create_foreign_key("payments_invoice_fk", "payments", "{target}", ["invoice_id"], ["id"])',
        downgrade='    op.drop_table("payments")')
    return {"alembic/versions/5e6f70819203_invoice_note.py": note,
            "alembic/versions/6f7081920314_create_payments.py": payments}


DJANGO_STOCK = '''\
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("shop", "0004_normalize_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="product",
            name="stock",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
'''

DJANGO_TAG = '''\
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("shop", "0005_product_stock"),
    ]

    operations = [
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        migrations.RunSQL(
            "CREATE INDEX shop_tag_name_lower ON shop_tag (lower({column}))",
            reverse_sql="DROP INDEX shop_tag_name_lower",
        ),
    ]
'''


def django_new(fixed: bool) -> dict[str, str]:
    models = (FIXTURES / "django" / "shop" / "models.py").read_text()
    models = models.replace(
        '    sku = models.CharField(max_length=32, default="", db_index=True)\n',
        '    sku = models.CharField(max_length=32, default="", db_index=True)\n'
        "    stock = models.PositiveIntegerField(default=0)\n",
    ) + "\n\nclass Tag(models.Model):\n    name = models.CharField(max_length=50)\n"
    return {"shop/models.py": models, "shop/migrations/0005_product_stock.py": DJANGO_STOCK,
            "shop/migrations/0006_tag.py": DJANGO_TAG.format(column="name" if fixed else "nome")}


PRISMA = ("20240101000000_init", "20240201000000_add_post", "20240301000000_add_user_bio",
          "20240401000000_drop_user_name")
DBMATE = ("20240101120000", "20240201120000", "20240301120000", "20240401120000")
DJANGO_PENDING = ["reporting.0001_daily_sales", "reporting.0002_rollups", "reporting.0003_purge_empty_days",
                  "shop.0001_initial", "shop.0002_order", "shop.0003_product_sku", "shop.0004_normalize_names"]

TOOLS = [
    Tool(
        name="prisma", command="python migrate_standin.py prisma migrate deploy", path="prisma/migrations",
        tree="prisma", under="prisma/", state_sql="SELECT migration_name FROM _prisma_migrations"
        " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY started_at",
        applied=list(PRISMA), pending=list(PRISMA), irreversible=[PRISMA[3]],
        new=prisma_new,
        good="20240501000000_add_post_slug", undone="20240501000000_add_post_slug",
        after_fixed=[*PRISMA, "20240501000000_add_post_slug", "20240601000000_add_tag"],
        # Prisma would refuse the next deploy (P3009) while the failed migration's row says failed.
        broken_output=["marked 20240601000000_add_tag rolled back in _prisma_migrations"],
    ),
    Tool(
        name="alembic", command="alembic upgrade head", path="alembic.ini", tree="alembic",
        state_sql="SELECT version_num FROM alembic_version",
        applied=["4d5e6f708192"], pending=["1a2b3c4d5e6f", "2b3c4d5e6f70", "3c4d5e6f7081", "4d5e6f708192"],
        irreversible=["4d5e6f708192"], new=alembic_new, good="5e6f70819203", undone="5e6f70819203",
        after_fixed=["6f7081920314"],
        # The app's env.py reads DATABASE_URL, one transaction per revision (a failure keeps the ones before).
        overrides={"alembic/env.py": ENV_PY},
    ),
    Tool(
        name="django", command="python manage.py migrate --no-input", path=".", tree="django",
        state_sql="SELECT app || '.' || name FROM django_migrations ORDER BY id",
        applied=DJANGO_PENDING, pending=DJANGO_PENDING,
        irreversible=["reporting.0003_purge_empty_days", "shop.0004_normalize_names"], new=django_new,
        good="shop.0005_product_stock", undone="shop.0005_product_stock",
        after_fixed=[*DJANGO_PENDING, "shop.0005_product_stock", "shop.0006_tag"],
    ),
    Tool(
        name="dbmate", command="python migrate_standin.py dbmate up", path="db/migrations", tree="dbmate",
        state_sql="SELECT version FROM schema_migrations ORDER BY version",
        applied=list(DBMATE), pending=list(DBMATE), irreversible=[DBMATE[3]], new=dbmate_new,
        good="20240501120000", undone="20240501120000",
        after_fixed=[*DBMATE, "20240501120000", "20240601120000"],
    ),
    Tool(
        name="golang-migrate",
        # As golang-migrate's documentation writes it: the URL, password and all, on the command line.
        command="python migrate_standin.py migrate -path migrations -database $DATABASE_URL up",
        path="migrations", tree="golang-migrate", state_sql="SELECT version::text, dirty FROM schema_migrations",
        applied=["4"], pending=["1", "2", "3", "4"], irreversible=["4"], new=golang_migrate_new,
        # Its failed file leaves the version dirty at 6 (rolled back whole by PostgreSQL): that is
        # undone too, by clearing the mark.
        good="5", undone="5, 6", after_fixed=["6"],
        broken_output=["error: migration failed", "-database postgres://", ":********@127.0.0.1"],
    ),
]


@pytest.fixture
def heroku(sandbox: Any) -> Iterator[HerokuClient]:
    with HerokuClient(sandbox.token, sandbox.url, sandbox.url) as client:
        yield client


def make_app(heroku: HerokuClient, token: str, name: str, **config: str) -> str:
    """An app with a Postgres add-on and backout's config vars; its DATABASE_URL."""
    heroku.create_app(name)
    heroku.create_addon(name, "heroku-postgresql:essential-0")
    heroku.update_config_vars(name, {"HEROKU_API_KEY": token, **config})
    return heroku.config_vars(name)["DATABASE_URL"]


def deploy(heroku: HerokuClient, app: str, tool: Tool, files: dict[str, str], commit: str) -> dict:
    release = deploy_slug(heroku, app, {"release": f"backout release -- {tool.command}"}, files,
                          commit=commit, timeout=120)
    return with_output(release)


def with_output(release: dict) -> dict:
    """The release with its release phase's output (the release log)."""
    url = release.get("output_stream_url")
    return {**release, "output": requests.get(url, timeout=30).text if url else ""}


def archive_listing(path: str, tmp_path: Path) -> str:
    """pg_restore's table of contents of a checkpoint's archive."""
    plain = tmp_path / "listed.dump"
    stream.Decompression(path, {}, plain, lambda line: None).result()
    return subprocess.run(["pg_restore", "--list", str(plain)], check=True, capture_output=True, text=True).stdout


def checkpoints(url: str, app: str) -> list[dict]:
    with ledger.connect(url) as conn:
        return ledger.list_checkpoints(conn, app)


@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_a_release_checkpoints_and_a_failing_one_is_undone(
    sandbox: Any, heroku: HerokuClient, tmp_path: Path, tool: Tool, s3: S3
) -> None:
    app = f"shop-{tool.name}"
    db = make_app(heroku, sandbox.token, app, BACKOUT_BACKUP="none", BACKOUT_MIGRATIONS=tool.name,
                  BACKOUT_MIGRATIONS_PATH=tool.path)
    password = urlsplit(db).password
    assert password

    # 1. The whole fixture tree on an empty database, no backup.
    first = deploy(heroku, app, tool, tool.files(), commit="1111aaaa")
    assert first["status"] == "succeeded", first["output"]
    [cp] = checkpoints(db, app)
    assert cp["status"] == "complete" and cp["release_version"] == first["version"], cp["error"]
    assert cp["migration_tool"] == tool.name and cp["backup"] == {"strategy": "none"}
    assert cp["migrations_before"] == [] and cp["migrations_after"] == tool.applied
    assert [m["id"] for m in cp["down_scripts"]] == tool.pending
    assert cp["irreversible"] == tool.irreversible and cp["reversible"] is False
    for saved in cp["down_scripts"]:
        assert (saved["down"] is None) == (saved["id"] in tool.irreversible), saved
        assert saved["tool"] == tool.name and saved["files"]
    applied_rows = rows(db, tool.state_sql)
    schema = schema_of(db)
    # The release log counts every migration, whatever the tool's table records (Alembic's heads,
    # golang-migrate's one version).
    total = len(tool.pending)
    assert f"0 migrations applied, {total} pending" in first["output"], first["output"]
    assert f"complete: {total} migrations applied" in first["output"]

    # 2. A config change is a release too: its checkpoint is a verified pg_dump archive in storage.
    heroku.update_config_vars(app, {"BACKOUT_BACKUP": "pg_dump", **s3.env()})
    config_release = with_output(heroku.wait_release(app, heroku.list_releases(app)[0]["id"], timeout=120, poll=0.1))
    assert config_release["status"] == "succeeded", config_release["output"]
    assert config_release["version"] == first["version"] + 1
    cp = checkpoints(db, app)[0]
    assert cp["status"] == "complete" and cp["release_version"] == config_release["version"], cp["error"]
    assert cp["migrations_before"] == cp["migrations_after"] == tool.applied and cp["down_scripts"] == []
    backup = cp["backup"]
    archive = s3.fetch(backup, tmp_path)
    assert backup["strategy"] == "pg_dump" and archive.stat().st_size == backup["size"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == backup["sha256"]
    assert sum(len(chunk) for chunk in stream.chunks(archive, None)) == backup["dump_size"]
    assert f" {get_adapter(tool.name).state_table} " in archive_listing(archive, tmp_path)
    assert rows(db, tool.state_sql) == applied_rows and schema_of(db) == schema
    assert f"{total} migrations applied, 0 pending" in config_release["output"]

    # 3. Two new migrations, the second failing after the first was applied and committed.
    broken = deploy(heroku, app, tool, tool.files(tool.new(False)), commit="3333cccc")
    assert broken["status"] == "failed", broken["output"]
    count = len(tool.undone.split(", "))
    assert f"undoing {count} migration(s) the failed command applied: {tool.undone}" in broken["output"]
    assert "does not exist" in broken["output"]  # the tool's own report of the failing statement
    assert f"{count} migration(s) undone" in broken["output"]
    assert "the release is not deployed" in broken["output"]
    for line in tool.broken_output:
        assert line in broken["output"]
    assert schema_of(db) == schema
    assert rows(db, tool.state_sql) == applied_rows
    failed = checkpoints(db, app)[0]
    assert failed["status"] == "failed" and failed["release_version"] == broken["version"]
    assert "the migrate command exited with status 1" in failed["error"] and tool.good in failed["error"]
    assert failed["migrations_before"] == failed["migrations_after"] == tool.applied
    assert [m["id"] for m in failed["down_scripts"]][:1] == [tool.good]
    assert heroku.current_release(app)["version"] == config_release["version"]

    # 4. The second one fixed: the tool applies both, so the failure left nothing in its way.
    fixed = deploy(heroku, app, tool, tool.files(tool.new(True)), commit="4444dddd")
    assert fixed["status"] == "succeeded", fixed["output"]
    cp = checkpoints(db, app)[0]
    assert cp["status"] == "complete" and cp["release_version"] == fixed["version"], cp["error"]
    assert cp["migrations_before"] == tool.applied and cp["migrations_after"] == tool.after_fixed
    assert len(cp["down_scripts"]) == 2 and cp["irreversible"] == [] and cp["reversible"] is True
    fetched = s3.fetch(cp["backup"], tmp_path)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == cp["backup"]["sha256"]
    assert stream.read_toc(fetched).listed_entries()

    outputs = first["output"] + config_release["output"] + broken["output"] + fixed["output"]
    assert password not in outputs


def test_a_failed_prisma_migration_that_committed_part_of_itself_is_left_to_a_person(database, tmp_path):
    """A migration.sql with its own COMMIT can leave work behind when it fails: its row stays
    failed, so Prisma keeps refusing to deploy until someone has looked (prisma migrate resolve)."""
    app = tmp_path / "app"
    migrations = app / "prisma" / "migrations"
    prisma = next(t for t in TOOLS if t.name == "prisma")
    for name, text in prisma.files().items():
        if name.startswith(("prisma/migrations/20240101", "migrate_standin")):
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            (app / name).write_text(text)
    command = [sys.executable, "migrate_standin.py", "prisma", "migrate", "deploy"]
    subprocess.run(command, cwd=app, env=hook_env(database, tmp_path), check=True, capture_output=True)
    before = schema_of(database)
    nick = migrations / "20240501000000_add_user_nick"
    nick.mkdir()
    (nick / "migration.sql").write_text('BEGIN;\nALTER TABLE "User" ADD COLUMN "nick" TEXT;\nCOMMIT;\n'
                                        'ALTER TABLE "Users" ADD COLUMN "bio" TEXT;\n')
    (nick / "down.sql").write_text('ALTER TABLE "User" DROP COLUMN "nick";\n')

    env = hook_env(database, tmp_path, BACKOUT_BACKUP="none", BACKOUT_MIGRATIONS="prisma",
                   BACKOUT_MIGRATIONS_PATH=str(migrations))
    done = release(env, *command, cwd=app)
    assert done.returncode == 1, done.stderr
    assert "20240501000000_add_user_nick failed in a migration.sql that commits transactions itself" in done.stderr
    assert "then run prisma migrate resolve" in done.stderr and "marked" not in done.stderr
    assert schema_of(database) != before  # "nick" was committed before the failure, as Prisma leaves it
    assert rows(database, "SELECT migration_name, finished_at IS NULL, rolled_back_at IS NULL FROM _prisma_migrations"
                          " ORDER BY started_at") == [(PRISMA[0], False, True), (nick.name, True, True)]
    again = release(hook_env(database, tmp_path, BACKOUT_BACKUP="none", BACKOUT_MIGRATIONS="prisma",
                             BACKOUT_MIGRATIONS_PATH=str(migrations), HEROKU_RELEASE_VERSION="v13"), *command, cwd=app)
    assert again.returncode == 1 and "P3009" in again.stderr
    [second, first] = checkpoints(database, "shop")
    assert first["status"] == second["status"] == "failed"
