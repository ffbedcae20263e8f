"""`backout check` as a CI step: a database with some of each tool's migrations applied (by the
tool, or the tool's stand-in), the rest pending; the verdict, the deciding statements and the
deploy dangers printed, `--json` for machines, and exit 1 when BACKOUT_REQUIRE is broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.migrations import support as tools
from tests.migrations.support import fixture_tree
from tests.support import child_env

pytestmark = pytest.mark.integration


def _prisma(tmp: Path, url: str) -> tuple[str, str]:
    tree = fixture_tree("prisma", tmp) / "migrations"
    tools.deploy(url, tree, "20240101000000_init", "20240201000000_add_post")
    return "prisma", str(tree)


def _alembic(tmp: Path, url: str) -> tuple[str, str]:
    project = fixture_tree("alembic", tmp)
    tools.upgrade(project, url, tools.INVOICES)
    return "alembic", str(project / "alembic.ini")


def _django(tmp: Path, url: str) -> tuple[str, str]:
    project = fixture_tree("django", tmp)
    tools.migrate(project, "shop", "0002_order")
    tools.migrate(project, "reporting", "0001_daily_sales")
    return "django", str(project)


def _dbmate(tmp: Path, url: str) -> tuple[str, str]:
    tree = fixture_tree("dbmate", tmp) / "db" / "migrations"
    tools.dbmate_up(url, tree, tools.USERS, tools.ORDERS)
    return "dbmate", str(tree)


def _golang(tmp: Path, url: str) -> tuple[str, str]:
    tree = fixture_tree("golang-migrate", tmp) / "migrations"
    tools.migrate_up(url, tree, 1)
    return "golang-migrate", str(tree)


def check(url: str, tool: str, path: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backout", "check", *args], capture_output=True, text=True,
                          timeout=120, env=child_env({"DATABASE_URL": url, "BACKOUT_MIGRATIONS": tool,
                                                      "BACKOUT_MIGRATIONS_PATH": path, **env}))


# (apply the first migrations, pending, verdict, a deciding reason, a danger, the policy it breaks,
# the policy it meets)
CASES = {
    "prisma": (_prisma, ["20240301000000_add_user_bio", "20240401000000_drop_user_name"], "irreversible",
               "drops column User.name", "CREATE INDEX on Post without CONCURRENTLY", "reversible", None),
    "alembic": (_alembic, ["3c4d5e6f7081", "4d5e6f708192"], "irreversible", "drops column customers.phone", None,
                "reversible", None),
    "django": (_django, ["reporting.0002_rollups", "reporting.0003_purge_empty_days", "shop.0003_product_sku",
                         "shop.0004_normalize_names"], "irreversible",
               "drops the default of shop_product.sku", "CREATE INDEX on shop_product without CONCURRENTLY",
               "reversible", None),
    "dbmate": (_dbmate, ["20240301120000", "20240401120000"], "code-only", None, None, None, "expand-only"),
    "golang-migrate": (_golang, ["2", "3", "4"], "down-needed",
                       "adds CHECK constraint accounts_balance_nonnegative to accounts",
                       "DROP INDEX accounts_owner_idx without CONCURRENTLY", "expand-only", "reversible"),
}


@pytest.mark.parametrize("tool", list(CASES))
def test_check_as_a_ci_step(tool, database, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database)  # the Django project's settings read it
    apply, pending, verdict, deciding, danger, broken, met = CASES[tool]
    _, path = apply(tmp_path, database)

    done = check(database, tool, path, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["tool"], report["pending"], report["verdict"], report["ok"]) == (tool, pending, verdict, True)
    if deciding:
        assert any(d["reason"].startswith(deciding) for d in report["deciding"]), report["deciding"]
    else:
        assert report["deciding"] == []
    if danger:
        assert any(d["message"].startswith(danger) for d in report["dangers"]), report["dangers"]

    if broken:
        refused = check(database, tool, path, BACKOUT_REQUIRE=broken)
        assert refused.returncode == 1, refused.stderr
        assert f"BACKOUT_REQUIRE={broken}, but the verdict is" in refused.stderr
        assert f"policy BACKOUT_REQUIRE={broken}: broken" in refused.stdout
        assert refused.stdout.startswith(f"{tool} migrations pending against postgresql://")
    if met:
        passed = check(database, tool, path, "--require", met)
        assert passed.returncode == 0 and f"policy BACKOUT_REQUIRE={met}: met" in passed.stdout, passed.stderr


def test_check_refuses_an_unknown_policy_and_a_missing_database(database, tmp_path):
    done = check(database, "dbmate", str(tmp_path), BACKOUT_REQUIRE="perfect")
    assert done.returncode == 2 and "BACKOUT_REQUIRE" in done.stderr and "expand-only" in done.stderr
    missing = subprocess.run([sys.executable, "-m", "backout", "check"], capture_output=True, text=True,
                             timeout=60, env=child_env({"BACKOUT_MIGRATIONS": "dbmate"}))
    assert missing.returncode == 2 and "DATABASE_URL is not set" in missing.stderr
