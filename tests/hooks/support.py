"""What the release-hook tests share: an Alembic app (its alembic.ini, env.py and revisions), the
hook's environment and process as Heroku's release phase runs it, and apps deployed to the sandbox
with such a release phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from backout.heroku import HerokuClient
from tests.support import deploy_slug

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations

[loggers]
keys = root,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARNING
handlers = console
[logger_alembic]
level = INFO
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""


ENV_PY = """\
import os
import re
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine

fileConfig(context.config.config_file_name)
url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", os.environ["DATABASE_URL"])
with create_engine(url).connect() as connection:
    # One transaction per revision, as many apps configure it: a failure keeps the ones before.
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""


REVISION = '''\
"""{doc}"""
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute({up!r})


def downgrade():
    op.execute({down_sql!r})
'''


A1 = ("a1", None, "create users", "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)", "DROP TABLE users")


B2 = ("b2", "a1", "add email", "ALTER TABLE users ADD COLUMN email text", "ALTER TABLE users DROP COLUMN email")


C3 = ("c3", "b2", "orders", "CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users)",
      "DROP TABLE orders")


BROKEN = ("c3", "b2", "broken", "CREATE TABLE orders (id serial PRIMARY KEY); SELECT no_such_function()",
          "DROP TABLE orders")


def hook_env(url: str, tmp_path: Path, app: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEROKU_", "BACKOUT_", "REDIS_")) and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": url, "HEROKU_APP_NAME": "shop", "HEROKU_RELEASE_VERSION": "v12",
        "HEROKU_SLUG_COMMIT": "0123abcd", "BACKOUT_BACKUP": "pg_dump",
        "BACKOUT_BACKUP_DIR": str(tmp_path / "backups"),
    })
    if app is not None:
        env.update({"BACKOUT_MIGRATIONS": "alembic", "BACKOUT_MIGRATIONS_PATH": str(app / "alembic.ini")})
    env.update(extra)
    return env


def release(env: dict[str, str], *command: str, cwd: Path | None = None, preexec_fn=None,
            ) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "backout", "release"]
    if command:
        argv += ["--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=cwd,
                          preexec_fn=preexec_fn)


RELEASE = "backout release -- python -m alembic -c alembic.ini upgrade head"


def slug_files(revisions: list[tuple]) -> dict[str, str]:
    files = {"alembic.ini": ALEMBIC_INI, "migrations/env.py": ENV_PY}
    for revision, down, doc, up, down_sql in revisions:
        files[f"migrations/versions/{revision}.py"] = REVISION.format(
            doc=doc, revision=revision, down=down, up=up, down_sql=down_sql)
    return files


class Heroku:
    """The sandbox through backout's own client, with a deploy helper."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.client = HerokuClient(box.token, box.url, box.url)

    def app(self, name: str, **config: str) -> str:
        """An app with a Postgres add-on (DATABASE_URL) and backout's config vars; its database URL."""
        self.client.create_app(name)
        self.client.create_addon(name, "heroku-postgresql:essential-0")
        self.client.update_config_vars(name, {
            "HEROKU_API_KEY": self.box.token, "BACKOUT_MIGRATIONS": "alembic",
            "BACKOUT_MIGRATIONS_PATH": "alembic.ini", **config,
        })
        return self.client.config_vars(name)["DATABASE_URL"]

    def deploy(self, app: str, revisions: list[tuple], commit: str) -> dict:
        done = deploy_slug(self.client, app, {"release": RELEASE}, slug_files(revisions), commit=commit, timeout=120)
        return self.with_output(done)

    def settle(self, app: str, release: dict) -> dict:
        return self.with_output(self.client.wait_release(app, release["id"], timeout=120, poll=0.1))

    def with_output(self, release: dict) -> dict:
        """The release with its release phase's output as `output`."""
        url = release.get("output_stream_url")
        release["output"] = requests.get(url, timeout=30).text if url else ""
        return release
