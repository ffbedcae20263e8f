"""Migration state that holds on every path, through the sandbox with a real `backout worker`, for
Alembic, Django (django.contrib, django-taggit from site-packages, a squashed app) and dbmate (the
real binary): three releases A, B, C each applying one more migration, then down to A; a
rollback release made by hand through the Platform API to C, whose release phase migrates (and
so takes a checkpoint with the down scripts of what it applies); down to A; redeploy C; restore to
B; down to A, planned from what the restore left applied, not from the chain the checkpoints
recorded. That holds the issue's three sequences: down, redeploy, restore, down; restore, down;
a hand-made rollback release that migrates, then down.

After each step the schema (`pg_dump --schema-only`) and the tool's state table are what the
target release left. The worker runs the oldest code (A's): what it undoes comes from saved files.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
import pytest

from backout import ledger
from tests.hooks.support import A1, B2, C3, RELEASE, Heroku, slug_files
from tests.migrations.support import FIXTURES
from tests.rollback.support import schema
from tests.support import S3, child_env, deploy_slug, start_worker, stop_workers

pytestmark = pytest.mark.integration

NOTE_COLOR = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_note_pinned_tags")]
    operations = [migrations.AddField(model_name="note", name="color", field=models.CharField(max_length=20, default=""))]
'''


def _tree(name: str, keep: Callable[[str], bool] = lambda path: True) -> dict[str, str]:
    root = FIXTURES / name
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and keep(str(p.relative_to(root)))}


def _django(n: int) -> dict[str, str]:
    files = _tree("django-apps", lambda path: n >= 2 or not path.endswith("0003_note_pinned_tags.py"))
    if n >= 3:
        files["notes/migrations/0004_note_color.py"] = NOTE_COLOR
    return files


def _dbmate(n: int) -> dict[str, str]:
    names = sorted(_tree("dbmate"))[:n]
    return {name: text for name, text in _tree("dbmate").items() if name in names}


@dataclass
class Tool:
    name: str
    command: str
    path: str
    files: Callable[[int], dict[str, str]]  # the code of release 1, 2 or 3
    state_sql: str
    by_hand: str  # a migration applied by hand: a state-table row no checkpoint saved a script for


TOOLS = {
    "alembic": Tool("alembic", RELEASE.split(" -- ", 1)[1], "alembic.ini", lambda n: slug_files([A1, B2, C3][:n]),
                    "SELECT version_num FROM alembic_version", "UPDATE alembic_version SET version_num = 'zz9'"),
    "django": Tool("django", "python manage.py migrate --no-input", ".", _django,
                   "SELECT app || '.' || name FROM django_migrations ORDER BY 1",
                   "INSERT INTO django_migrations (app, name, applied) VALUES ('notes', '0009_by_hand', now())"),
    # The real dbmate; lib/pq asks for TLS unless told not to, and the sandbox's Postgres has none.
    "dbmate": Tool("dbmate", "sh -c 'DATABASE_URL=\"$DATABASE_URL?sslmode=disable\" exec dbmate --no-dump-schema up'",
                   "db/migrations", _dbmate, "SELECT version FROM schema_migrations ORDER BY 1",
                   "INSERT INTO schema_migrations (version) VALUES ('29990101000000')"),
}


class App:
    def __init__(self, heroku: Heroku, tool: Tool, tmp_path: Path, redis_url: str, s3: S3) -> None:
        self.heroku, self.tool, self.name = heroku, tool, f"paths-{tool.name}"
        client = heroku.client
        client.create_app(self.name)
        client.create_addon(self.name, "heroku-postgresql:essential-0")
        # The release phase runs on a dyno: pg_dump archives go to object storage.
        config = {"BACKOUT_BACKUP": "pg_dump", **s3.env(),
                  "BACKOUT_MIGRATIONS": tool.name, "BACKOUT_MIGRATIONS_PATH": tool.path}
        client.update_config_vars(self.name, {"HEROKU_API_KEY": heroku.box.token, **config})
        self.db = client.config_vars(self.name)["DATABASE_URL"]
        code = tmp_path / "worker-code"  # the worker runs release A's code: later migrations are not in it
        for path, text in tool.files(1).items():
            (code / path).parent.mkdir(parents=True, exist_ok=True)
            (code / path).write_text(text)
        self.env = child_env({**heroku.box.env, **config, "BACKOUT_MIGRATIONS_PATH": str(code / tool.path),
                              "DATABASE_URL": self.db, "REDIS_URL": redis_url})
        self.log = tmp_path / "worker.log"
        self.worker = start_worker(self.env, self.log)

    def deploy(self, n: int) -> dict:
        done = deploy_slug(self.heroku.client, self.name, {"release": f"backout release -- {self.tool.command}"},
                           self.tool.files(n), timeout=180)
        return self.heroku.with_output(done)

    def state(self) -> tuple[str, list[tuple]]:
        with psycopg.connect(self.db) as conn:
            return schema(self.db), conn.execute(self.tool.state_sql).fetchall()

    def backout(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "backout", *args], env=self.env, capture_output=True,
                              text=True, timeout=300)

    def rollback(self, to: dict, db: str) -> None:
        done = self.backout("rollback", "--app", self.name, "--to", f"v{to['version']}", "--db", db,
                            "--confirm", self.name, "--wait")
        assert done.returncode == 0, (done.stdout, done.stderr, self.log.read_text(errors="replace")[-3000:])

    def checkpoint_of(self, version: int) -> dict | None:
        with ledger.connect(self.db) as conn:
            return ledger.checkpoint_for_release(conn, self.name, version)


# Nine release phases and four rollbacks: about 40 s of CPU for Django, longer on a busy machine.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("tool", TOOLS)
def test_restore_down_hand_made_rollback_redeploy(tool: str, heroku: Heroku, tmp_path: Path, redis_url: str,
                                                  s3: S3) -> None:
    app = App(heroku, TOOLS[tool], tmp_path, redis_url, s3)
    try:
        releases, states = [], []
        for n in (1, 2, 3):
            releases.append(app.deploy(n))
            assert releases[-1]["status"] == "succeeded", releases[-1]["output"]
            states.append(app.state())
        a, b, c = releases

        # A rollback release made by hand (`heroku rollback vN`) to a release newer than the
        # database: its release phase migrates, so it takes a checkpoint with those down scripts.
        app.rollback(a, "down")
        assert app.state() == states[0]
        by_hand = heroku.settle(app.name, heroku.client.rollback(app.name, c["id"]))
        assert by_hand["status"] == "succeeded", by_hand["output"]
        assert "its migrate command will apply" in by_hand["output"] and "a checkpoint, as for a deploy" in by_hand["output"]
        assert app.checkpoint_of(by_hand["version"]) is not None
        assert app.state() == states[2]
        app.rollback(a, "down")
        assert app.state() == states[0]

        # Redeploy C, restore to B, then down to A: the down starts from what the restore left
        # applied, not from the chain the checkpoints recorded.
        assert app.deploy(3)["status"] == "succeeded"
        assert app.state() == states[2]
        app.rollback(b, "restore")
        assert app.state() == states[1]
        app.rollback(a, "down")
        assert app.state() == states[0]

        # A migration applied by hand has no saved down script: refused with exit 2, nothing
        # changed or recorded, and the way out named.
        with psycopg.connect(app.db, autocommit=True) as conn:
            conn.execute(app.tool.by_hand)
        with ledger.connect(app.db) as conn:
            requests = len(ledger.list_requests(conn, app.name))
        before = app.state()
        refused = app.backout("rollback", "--app", app.name, "--to", f"v{a['version']}", "--db", "down",
                              "--confirm", app.name)
        assert refused.returncode == 2, refused.stderr
        assert "no checkpoint saved a down script for" in refused.stderr
        assert "--db restore --confirm" in refused.stderr and "loses every write since" in refused.stderr
        assert app.state() == before
        with ledger.connect(app.db) as conn:
            assert len(ledger.list_requests(conn, app.name)) == requests
    finally:
        stop_workers([app.worker], timeout=20)
