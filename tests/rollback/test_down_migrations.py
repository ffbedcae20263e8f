"""`--db down` for each migration tool on real PostgreSQL: two deploys take checkpoints (saving the
down scripts of the migrations they apply), then the rollback to the release before them undoes
both from the ledger alone, newest first, and the schema (`pg_dump --schema-only`) is the one the
restore point recorded. Also: a state table changed by hand refuses the plan, and a down script
failing halfway stops with its own step rolled back and the steps before it recorded."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

import psycopg
import pytest

from backout import checkpoint, ledger
from backout import settings as settings_module
from backout.errors import BackoutError, PlanRefused
from backout.heroku import HerokuClient
from backout.migrations import get_adapter
from backout.rollback.database import down
from backout.rollback.database.step import plan_db_step, restore_point, run_db_step
from tests.migrations.support import (
    BIO,
    CUSTOMERS,
    INIT,
    INVOICES,
    ORDERS,
    POST,
    STATUS,
    USERS,
    dbmate_up,
    fixture_tree,
    migrate,
    migrate_up,
    rows,
    schema_of,
    upgrade,
)
from tests.migrations.support import INDEX as ORDERS_INDEX
from tests.migrations.support import deploy as prisma_deploy

pytestmark = pytest.mark.integration

APP = "shop"


@dataclasses.dataclass
class Tool:
    """A fixture project cut down to its first n migrations (the code of release vn), and how
    the tool itself applies them."""

    name: str
    fixture: str
    ids: list[str]
    files: Callable[[Path, str], list[Path]]  # the files of one migration in a project
    path: Callable[[Path], Path]  # BACKOUT_MIGRATIONS_PATH of a project
    up: Callable[[str, Path, int], None]  # apply migration n (1-based) with the tool

    def code(self, tmp_path: Path, n: int) -> Path:
        root = fixture_tree(self.fixture, tmp_path / f"v{n}")
        for later in self.ids[n:] + self.extra_ids(root):
            for path in self.files(root, later):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return root

    def extra_ids(self, root: Path) -> list[str]:
        """Migrations of the fixture that no release here applies."""
        return [name for name in _all_ids(self, root) if name not in self.ids]


def _all_ids(tool: Tool, root: Path) -> list[str]:
    return [m.id for m in get_adapter(tool.name, tool.path(root)).available()]


def _glob(pattern: Callable[[str], str]) -> Callable[[Path, str], list[Path]]:
    return lambda root, mid: list(root.glob(pattern(mid)))


def _django_up(url: str, root: Path, n: int) -> None:
    migrate(root, "shop", ["0001_initial", "0002_order", "0003_product_sku"][n - 1])


TOOLS = {
    "alembic": Tool("alembic", "alembic", [CUSTOMERS, INVOICES, STATUS],
                    _glob(lambda mid: f"alembic/versions/{mid}_*.py"), lambda root: root / "alembic.ini",
                    lambda url, root, n: upgrade(root, url, [CUSTOMERS, INVOICES, STATUS][n - 1])),
    "prisma": Tool("prisma", "prisma", [INIT, POST, BIO], _glob(lambda mid: f"migrations/{mid}"),
                   lambda root: root / "migrations",
                   lambda url, root, n: prisma_deploy(url, root / "migrations", [INIT, POST, BIO][n - 1])),
    "dbmate": Tool("dbmate", "dbmate", [USERS, ORDERS, ORDERS_INDEX], _glob(lambda mid: f"db/migrations/{mid}_*.sql"),
                   lambda root: root / "db" / "migrations",
                   lambda url, root, n: dbmate_up(url, root / "db" / "migrations", [USERS, ORDERS, ORDERS_INDEX][n - 1])),
    "golang-migrate": Tool("golang-migrate", "golang-migrate", ["1", "2", "3"],
                           _glob(lambda mid: f"migrations/{int(mid):06d}_*.sql"), lambda root: root / "migrations",
                           lambda url, root, n: migrate_up(url, root / "migrations", n)),
    "django": Tool("django", "django", ["shop.0001_initial", "shop.0002_order", "shop.0003_product_sku"],
                   _glob(lambda mid: f"{mid.split('.')[0]}/migrations/{mid.split('.')[1]}.py"), lambda root: root,
                   _django_up),
}


def _settings(database: str, tool: Tool, root: Path, tmp_path: Path, **extra: str) -> settings_module.Settings:
    return settings_module.load({
        "DATABASE_URL": database, "HEROKU_APP_NAME": APP, "BACKOUT_BACKUP": "none",
        "BACKOUT_BACKUP_DIR": str(tmp_path / "backups"), "BACKOUT_MIGRATIONS": tool.name,
        "BACKOUT_MIGRATIONS_PATH": str(tool.path(root)), **extra,
    })


def deploy(database: str, conn: psycopg.Connection, tool: Tool, tmp_path: Path, version: int) -> tuple[dict, str]:
    """What the release hook does for release v`version` (the code of its first `version`
    migrations): checkpoint, migrate, complete. Returns the checkpoint and the schema it saw."""
    root = tool.code(tmp_path, version)
    settings = _settings(database, tool, root, tmp_path)
    adapter = get_adapter(tool.name, tool.path(root))
    schema = schema_of(database)
    release = checkpoint.Release(version=version, previous_version=version - 1)
    cp = checkpoint.take(settings, conn, release, adapter=adapter, complete=False)
    tool.up(database, root, version)
    with psycopg.connect(database) as app:
        cp = ledger.updatecheckpoint(conn, cp["id"], migrations_after=adapter.applied(app), status="complete",
                                      completed_at="now")
    return cp, schema


def history(database: str, tool: Tool, tmp_path: Path) -> tuple[dict, dict, str]:
    """v1 applied by hand, v2 and v3 deployed through checkpoints; the code of each then deleted."""
    tool.up(database, tool.code(tmp_path, 1), 1)
    with ledger.connect(database) as conn:
        cp2, at_cp2 = deploy(database, conn, tool, tmp_path, 2)
        cp3, _ = deploy(database, conn, tool, tmp_path, 3)
    for n in (1, 2, 3):
        shutil.rmtree(tmp_path / f"v{n}")  # the releases' code is gone: only the saved scripts remain
    return cp2, cp3, at_cp2


@pytest.mark.parametrize("tool", TOOLS)
def test_down_migrations_bring_the_schema_back_to_thecheckpoint(tool: str, database: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database)  # the Django project reads it
    spec = TOOLS[tool]
    cp2, cp3, at_cp2 = history(database, spec, tmp_path)
    first, second, third = spec.ids
    with ledger.connect(database) as conn:
        point, why = restore_point(conn, APP, None, target_version=1, current_version=3)
        assert point["id"] == cp2["id"] and "as v1 left it" in why
        plan = down.saved_plan(conn, point)
        with psycopg.connect(database, autocommit=True) as app:
            live = down.live_plan(conn, app, point)
    assert [m.id for m in plan.migrations] == [third, second]
    assert [m.id for m in live.migrations] == [third, second] and live.problems() == [] and live.from_live_state
    assert plan.sources == {third: cp3["id"], second: cp2["id"]}
    assert plan.checkpoints == [cp3["id"], cp2["id"]]
    lines: list[str] = []
    with psycopg.connect(database, autocommit=True) as conn:
        assert down.check(conn, plan) == []
        result = down.run(conn, plan, lines.append)
    assert result["undone"] == [third, second]
    assert schema_of(database) == at_cp2
    assert sorted(result["state"]) == sorted(cp2["migrations_before"])
    # The tool's state table as the tool itself would leave it.
    if tool == "prisma":
        assert rows(database, "SELECT migration_name, rolled_back_at IS NOT NULL FROM _prisma_migrations"
                              " ORDER BY started_at") == [(INIT, False), (POST, True), (BIO, True)]
    elif tool == "alembic":
        assert rows(database, "SELECT version_num FROM alembic_version") == [(CUSTOMERS,)]
    elif tool == "golang-migrate":
        assert rows(database, "SELECT version, dirty FROM schema_migrations") == [(1, False)]
    elif tool == "dbmate":
        assert rows(database, "SELECT version FROM schema_migrations") == [(USERS,)]
    else:
        assert rows(database, "SELECT app || '.' || name FROM django_migrations WHERE app = 'shop'") == [(first,)]


def test_the_plan_starts_from_the_state_applied_now(database: str, tmp_path: Path) -> None:
    spec = TOOLS["golang-migrate"]
    history(database, spec, tmp_path)
    with psycopg.connect(database, autocommit=True) as conn:  # someone ran `migrate down 1` by hand
        conn.execute("DROP TABLE transfers CASCADE")
        conn.execute("UPDATE schema_migrations SET version = 2")
    settings = _settings(database, spec, tmp_path, tmp_path, BACKOUT_BACKUP="pg_dump")
    with ledger.connect(database) as conn:
        step = plan_db_step(settings, conn, APP, None, "down", target_version=1, current_version=3)
    assert [m["id"] for m in step["down"]["migrations"]] == ["2"] and step["down"]["from_live_state"]


def test_a_migration_applied_by_hand_without_a_saved_script_refuses_the_plan_and_changes_nothing(
        database: str, tmp_path: Path) -> None:
    spec = TOOLS["golang-migrate"]
    history(database, spec, tmp_path)
    with psycopg.connect(database, autocommit=True) as conn:  # someone ran a migration 9 by hand
        conn.execute("CREATE TABLE by_hand (id int)")
        conn.execute("UPDATE schema_migrations SET version = 9")
    before = schema_of(database)
    settings = _settings(database, spec, tmp_path, tmp_path, BACKOUT_BACKUP="pg_dump")
    with ledger.connect(database) as conn, pytest.raises(PlanRefused) as refused:
        plan_db_step(settings, conn, APP, None, "down", target_version=1, current_version=3)
    with ledger.connect(database) as conn:
        [_, cp2] = ledger.list_checkpoints(conn, APP)
    assert "no checkpoint saved a down script for 9, applied now above the target" in str(refused.value)
    # Its checkpoints were taken with BACKOUT_BACKUP=none: the way out says so.
    assert f"checkpoint {cp2['id']} holds no backup to restore instead; undo the migrations by hand" in str(refused.value)
    assert schema_of(database) == before
    with ledger.connect(database) as conn:
        assert [cp["kind"] for cp in ledger.list_checkpoints(conn, APP)] == ["deploy", "deploy"]
        assert ledger.list_requests(conn, APP) == []


def test_down_migrations_need_a_safety_checkpoint_with_a_copy_of_the_data(database: str, tmp_path: Path) -> None:
    spec = TOOLS["golang-migrate"]
    history(database, spec, tmp_path)
    with ledger.connect(database) as conn, pytest.raises(PlanRefused) as refused:
        plan_db_step(_settings(database, spec, tmp_path, tmp_path), conn, APP, None, "down", target_version=1,
                     current_version=3)
    assert "the safety checkpoint taken before a database rollback would hold no copy of the data " \
           "(BACKOUT_BACKUP=none)" in str(refused.value)


def test_an_irreversible_migration_in_the_way_refuses_the_plan(database: str, tmp_path: Path) -> None:
    spec = TOOLS["golang-migrate"]
    history(database, spec, tmp_path)
    with ledger.connect(database) as conn:
        [newest, _] = ledger.list_checkpoints(conn, APP)
        scripts = newest["down_scripts"]
        scripts[0].update(down=None, reversible=False, irreversible_reason="there is no 000003_x.down.sql")
        ledger.updatecheckpoint(conn, newest["id"], down_scripts=scripts)
        with pytest.raises(PlanRefused, match="3 .* is irreversible: there is no 000003_x.down.sql"):
            plan_db_step(_settings(database, spec, tmp_path, tmp_path), conn, APP, None, "down", target_version=1,
                         current_version=3)


def test_a_down_script_failing_halfway_stops_and_records_what_ran(database: str, tmp_path: Path, sandbox) -> None:
    """Through the worker's entry point: a safety checkpoint first, then ORDERS_INDEX undone, then
    ORDERS's saved script fails: its transaction is rolled back, the step says what ran."""
    spec = TOOLS["dbmate"]
    cp2, _, _ = history(database, spec, tmp_path)
    with ledger.connect(database) as conn:  # the saved script for ORDERS now fails after its DROP
        scripts = cp2["down_scripts"]
        scripts[0]["down"] += "\nselect no_such_function();\n"
        ledger.updatecheckpoint(conn, cp2["id"], down_scripts=scripts)
    client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
    client.create_app(APP)
    client.update_config_vars(APP, {"DATABASE_URL": database})
    code = spec.code(tmp_path, 3)
    settings = _settings(database, spec, code, tmp_path, BACKOUT_BACKUP="pg_dump", **sandbox.env)
    with ledger.connect(database) as conn:
        step = plan_db_step(settings, conn, APP, None, "down", target_version=1, current_version=3, heroku=client)
        request = ledger.create_request(conn, app=APP, target="v1", db="down", dry_run=False, requested_by="test",
                                        plan={"db_step": step})
    assert [m["id"] for m in step["down"]["migrations"]] == [ORDERS_INDEX, ORDERS]
    assert step["safety_checkpoint"] == {"backup": "pg_dump"}
    before_index = schema_of(database)

    with pytest.raises(BackoutError, match=f"down migration {ORDERS} failed: .*no_such_function"):
        run_db_step(settings, request["id"], step, lambda line: None)

    assert rows(database, "SELECT version FROM schema_migrations ORDER BY 1") == [(USERS,), (ORDERS,)]
    assert rows(database, "SELECT to_regclass('orders') IS NOT NULL") == [(True,)]  # rolled back whole
    assert "orders_user_id_idx" not in schema_of(database) and "orders_user_id_idx" in before_index
    with ledger.connect(database) as conn:
        steps = [(s["step"], s["status"], s["detail"]) for s in ledger.steps(conn, request["id"])]
        safety = [cp for cp in ledger.list_checkpoints(conn, APP) if cp["kind"] == "safety"]
    assert [(s, st) for s, st, _ in steps][:2] == [("safety_checkpoint", "started"), ("safety_checkpoint", "done")]
    failed = steps[-1]
    assert failed[:2] == ("db_down", "failed")
    assert failed[2]["ran"] == [ORDERS_INDEX] and failed[2]["failed"] == ORDERS
    assert len(safety) == 1 and safety[0]["status"] == "complete" and safety[0]["request_id"] == request["id"]
    assert failed[2]["safety_checkpoint_id"] == safety[0]["id"]
    assert safety[0]["backup"]["strategy"] == "pg_dump" and Path(safety[0]["backup"]["path"]).is_file()
    client.close()
