"""The sandbox's add-ons and Data API over HTTP: real databases, attachments and promotion, backups
that really dump, restores that really restore, and point-in-time rollback add-ons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from backout_sandbox.server import start
from tests.support import SERVER_URL, SandboxApi, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api(sandbox: Any) -> SandboxApi:
    return SandboxApi(sandbox)


def rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, note FROM items ORDER BY id").fetchall()


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_an_addon_is_a_real_database_attached_as_database(api: SandboxApi) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-addons"})
    created = api("POST", "/apps/sbx-addons/addons", json={"plan": "heroku-postgresql:essential-0"})
    assert created.status_code == 201
    addon = created.json()
    assert (addon["state"], addon["config_vars"], addon["plan"]["name"]) == \
        ("provisioned", ["DATABASE_URL"], "heroku-postgresql:essential-0")
    url = api.ok("GET", "/apps/sbx-addons/config-vars")["DATABASE_URL"]
    parts = psycopg.conninfo.conninfo_to_dict(url)
    assert parts["password"] and parts["user"] == parts["dbname"]  # a login role of its own, with a password
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'a')")
    assert rows(url) == [(1, "a")]

    second = api.ok("POST", "/apps/sbx-addons/addons", json={"plan": "heroku-postgresql", "name": "second-db"})
    assert second["name"] == "second-db" and second["plan"]["name"] == "heroku-postgresql:essential-0"
    (color,) = second["config_vars"]
    assert color.startswith("HEROKU_POSTGRESQL_") and color.endswith("_URL")
    assert api.ok("GET", "/apps/sbx-addons/config-vars")[color] != url
    descriptions = [r["description"] for r in api.ok("GET", "/apps/sbx-addons/releases")]
    assert descriptions[1:] == [f"Attach DATABASE (@ref:{addon['name']})", f"Attach {color[:-4]} (@ref:second-db)"]
    assert api.ok("GET", "/apps/sbx-addons/releases")[-1]["addon_plan_names"] == ["heroku-postgresql:essential-0"]
    assert {a["name"] for a in api.ok("GET", "/apps/sbx-addons/addons")} == {addon["name"], "second-db"}
    assert api.ok("GET", "/apps/sbx-addons/addons/DATABASE_URL")["id"] == addon["id"]
    assert api.ok("GET", f"/addons/{addon['id']}")["name"] == addon["name"]

    for plan, words in (("heroku-postgresql:galactic-9", "plan"), ("heroku-redis:mini", "service")):
        refused = api("POST", "/apps/sbx-addons/addons", json={"plan": plan})
        assert refused.status_code == 422 and words in refused.json()["message"]
    assert api("POST", "/apps/sbx-addons/addons", json={"plan": "heroku-postgresql", "name": "second-db"}).status_code == 422

    destroyed = api.ok("DELETE", f"/apps/sbx-addons/addons/{second['id']}")
    assert destroyed["state"] == "deprovisioned"
    assert color not in api.ok("GET", "/apps/sbx-addons/config-vars")
    assert api("GET", f"/addons/{second['id']}").status_code == 404


def test_promotion_attaches_another_database_as_database_and_keeps_the_old_one(api: SandboxApi) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-promote"})
    old = api.ok("POST", "/apps/sbx-promote/addons", json={"plan": "heroku-postgresql:essential-0"})
    new = api.ok("POST", "/apps/sbx-promote/addons", json={"plan": "heroku-postgresql:essential-0"})
    before = api.ok("GET", "/apps/sbx-promote/config-vars")
    promoted = api("POST", "/addon-attachments",
                   json={"app": {"name": "sbx-promote"}, "addon": {"name": new["name"]}, "name": "DATABASE",
                         "confirm": "sbx-promote"})
    assert promoted.status_code == 201 and promoted.json()["name"] == "DATABASE"
    after = api.ok("GET", "/apps/sbx-promote/config-vars")
    assert after["DATABASE_URL"] == before[new["config_vars"][0]]
    attachments = api.ok("GET", "/apps/sbx-promote/addon-attachments")
    old_names = [a["name"] for a in attachments if a["addon"]["id"] == old["id"]]
    assert len(old_names) == 1 and old_names[0].startswith("HEROKU_POSTGRESQL_")
    assert after[f"{old_names[0]}_URL"] == before["DATABASE_URL"]
    descriptions = [r["description"] for r in api.ok("GET", "/apps/sbx-promote/releases")][-3:]
    assert descriptions == [f"Attach {old_names[0]} (@ref:{old['name']})", f"Detach DATABASE (@ref:{old['name']})",
                            f"Attach DATABASE (@ref:{new['name']})"]
    assert api.ok("GET", "/apps/sbx-promote/addon-attachments/DATABASE")["addon"]["id"] == new["id"]
    by_addon = api.ok("GET", f"/addons/{old['id']}/addon-attachments")
    assert [a["name"] for a in by_addon] == old_names
    again = api("POST", "/addon-attachments", json={"app": "sbx-promote", "addon": new["id"], "name": "DATABASE"})
    assert again.status_code == 422

    detached = api.ok("DELETE", f"/addon-attachments/{by_addon[0]['id']}")
    assert detached["name"] == old_names[0]
    assert f"{old_names[0]}_URL" not in api.ok("GET", "/apps/sbx-promote/config-vars")


def test_a_code_rollback_keeps_the_databases_attached_now(api: SandboxApi) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-keepdb"})
    api.ok("PATCH", "/apps/sbx-keepdb/config-vars", json={"FOO": "old"})
    target = api.ok("GET", "/apps/sbx-keepdb/releases")[-1]
    api.ok("POST", "/apps/sbx-keepdb/addons", json={"plan": "heroku-postgresql:essential-0"})
    slug = api.ok("POST", "/apps/sbx-keepdb/slugs", json={"process_types": {"worker": "sleep 60"}})
    api.ok("POST", "/apps/sbx-keepdb/releases", json={"slug": slug["id"]})
    with_slug = api.ok("GET", "/apps/sbx-keepdb/releases")[-1]
    api.ok("PATCH", "/apps/sbx-keepdb/config-vars", json={"FOO": "new"})
    database_url = api.ok("GET", "/apps/sbx-keepdb/config-vars")["DATABASE_URL"]
    assert target["slug"] is None
    api.ok("POST", "/apps/sbx-keepdb/releases", json={"release": with_slug["id"]})
    assert api.ok("GET", "/apps/sbx-keepdb/config-vars") == {"FOO": "old", "DATABASE_URL": database_url}


def test_backups_and_restores_move_real_data(api: SandboxApi, sandbox: Any) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-backup"})
    addon = api.ok("POST", "/apps/sbx-backup/addons", json={"plan": "heroku-postgresql:essential-0"})
    spare = api.ok("POST", "/apps/sbx-backup/addons", json={"plan": "heroku-postgresql:essential-0"})
    config = api.ok("GET", "/apps/sbx-backup/config-vars")
    url, spare_url = config["DATABASE_URL"], config[spare["config_vars"][0]]
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)",
            "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    expected = rows(url)

    started = api("POST", f"/client/v11/databases/{addon['id']}/backups")
    assert started.status_code == 201
    backup = api.finished("sbx-backup", started.json())
    assert backup["succeeded"] and backup["num"] == 1 and backup["processed_bytes"] > 0
    assert (backup["from_type"], backup["from_name"], backup["to_type"]) == ("pg_dump", "DATABASE", "gof3r")
    assert "backup done" in backup["logs"][-1]["message"]
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    assert password not in str(backup)
    listed = api.ok("GET", "/client/v11/apps/sbx-backup/transfers")
    assert [t["num"] for t in listed] == [1] and "logs" not in listed[0]
    assert api.ok("GET", "/client/v11/apps/sbx-backup/transfers/1")["uuid"] == backup["uuid"]

    execute(url, "DELETE FROM items WHERE id <= 250", "INSERT INTO items VALUES (9999, 'after the backup')")
    public = api.ok("POST", "/client/v11/apps/sbx-backup/transfers/1/actions/public-url")
    assert public["expires_at"] > datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    dump = requests.get(public["url"], timeout=30)
    assert dump.status_code == 200 and dump.content.startswith(b"PGDMP")
    assert requests.get(backup["to_url"], timeout=10).status_code == 403  # to_url is not public

    restore = api("POST", f"/client/v11/databases/{addon['id']}/restores", json={"backup_url": public["url"]})
    assert restore.status_code == 201
    restored = api.finished("sbx-backup", restore.json())
    assert restored["succeeded"], restored["logs"]
    assert (restored["from_name"], restored["to_type"], restored["to_name"]) == ("b001", "pg_restore", "DATABASE")
    assert rows(url) == expected

    # The backup's own to_url works for the Data API, as Heroku's does; here into the other database.
    into_spare = api.finished("sbx-backup", api.ok("POST", f"/client/v11/databases/{spare['name']}/restores",
                                                    json={"backup_url": backup["to_url"]}))
    assert into_spare["succeeded"] and rows(spare_url) == expected

    status = api.ok("GET", f"/client/v11/databases/{addon['id']}/wait_status")
    assert status == {"waiting?": False, "error?": False, "message": "Available"}
    info = api.ok("GET", f"/client/v11/databases/{addon['id']}")
    assert {i["name"]: i["values"] for i in info["info"]}["Tables"] == ["1"]
    assert api.ok("DELETE", "/client/v11/apps/sbx-backup/transfers/1")["deleted_at"]
    assert requests.get(public["url"], timeout=10).status_code == 404


def test_failed_and_refused_transfers(api: SandboxApi) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-xfail"})
    addon = api.ok("POST", "/apps/sbx-xfail/addons", json={"plan": "heroku-postgresql:essential-0"})
    bad = api.finished("sbx-xfail", api.ok("POST", f"/client/v11/databases/{addon['id']}/restores",
                                           json={"backup_url": f"{api.base}/sandbox/backups/nothing.dump"}))
    assert not bad["succeeded"] and "cannot download the backup" in bad["logs"][-1]["message"]
    assert api("POST", f"/client/v11/databases/{addon['id']}/restores", json={}).status_code == 422
    assert api("POST", "/client/v11/databases/no-such-db/backups").status_code == 404
    refused = api("POST", f"/client/v11/apps/sbx-xfail/transfers/{bad['num']}/actions/public-url")
    assert refused.status_code == 422
    assert api("GET", "/client/v11/apps/sbx-xfail/transfers/77").status_code == 404


def test_point_in_time_rollback_addons(api: SandboxApi) -> None:
    api.ok("POST", "/apps", json={"name": "sbx-pitr"})
    source = api.ok("POST", "/apps/sbx-pitr/addons", json={"plan": "heroku-postgresql:standard-0"})
    url = api.ok("GET", "/apps/sbx-pitr/config-vars")["DATABASE_URL"]
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'before')")
    with psycopg.connect(url) as conn:
        mark = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    execute(url, "INSERT INTO items VALUES (2, 'after')", "UPDATE items SET note = 'changed' WHERE id = 1")

    earliest = {i["name"]: i["values"] for i in api.ok("GET", f"/client/v11/databases/{source['id']}")["info"]}["Rollback"]
    assert earliest[0].startswith("earliest from ")
    too_early = api("POST", "/apps/sbx-pitr/addons", json={
        "plan": "heroku-postgresql:standard-0",
        "config": {"rollback": "DATABASE_URL", "to": (mark - timedelta(days=2)).isoformat()}})
    assert too_early.status_code == 422 and "must be between" in too_early.json()["message"]
    future = api("POST", "/apps/sbx-pitr/addons", json={
        "plan": "heroku-postgresql:standard-0",
        "config": {"rollback": "DATABASE_URL", "to": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}})
    assert future.status_code == 422
    essential = api("POST", "/apps/sbx-pitr/addons", json={
        "plan": "heroku-postgresql:essential-0", "config": {"rollback": "DATABASE_URL", "to": mark.isoformat()}})
    assert essential.status_code == 422 and "standard" in essential.json()["message"]
    count = len(api.ok("GET", "/apps/sbx-pitr/addons"))

    created = api("POST", "/apps/sbx-pitr/addons", json={
        "plan": "heroku-postgresql:standard-0", "config": {"rollback": "DATABASE_URL", "to": mark.isoformat()}})
    assert created.status_code == 201
    rollback = created.json()
    assert rollback["state"] == "provisioning" and rollback["config_vars"] == []
    wait_for(lambda: not api.ok("GET", f"/client/v11/databases/{rollback['id']}/wait_status")["waiting?"],
             timeout=60, what="the rollback database")
    ready = api.ok("GET", f"/apps/sbx-pitr/addons/{rollback['id']}")
    assert ready["state"] == "provisioned" and ready["config_vars"][0].startswith("HEROKU_POSTGRESQL_")
    assert len(api.ok("GET", "/apps/sbx-pitr/addons")) == count + 1
    rolled_back = api.ok("GET", "/apps/sbx-pitr/config-vars")[ready["config_vars"][0]]
    assert rows(rolled_back) == [(1, "before")]
    assert rows(url) == [(1, "changed"), (2, "after")]

    # Promote it: the app's DATABASE_URL now holds the past.
    api.ok("POST", "/addon-attachments", json={"app": "sbx-pitr", "addon": rollback["id"], "name": "DATABASE"})
    assert rows(api.ok("GET", "/apps/sbx-pitr/config-vars")["DATABASE_URL"]) == [(1, "before")]

    # "by": an interval back from now, which must reach no further back than the earliest time.
    since = datetime.fromisoformat(earliest[0].removeprefix("earliest from ").replace("Z", "+00:00"))
    wait_for(lambda: datetime.now(timezone.utc) - since > timedelta(seconds=2.5), what="2 s of history")
    by = api.ok("POST", "/apps/sbx-pitr/addons", json={
        "plan": "heroku-postgresql:premium-0", "config": {"rollback": source["name"], "by": "1 second"}})
    wait_for(lambda: not api.ok("GET", f"/client/v11/databases/{by['id']}/wait_status")["waiting?"], timeout=60,
             what="by")
    assert api.ok("GET", f"/addons/{by['id']}")["state"] == "provisioned"


def test_addons_and_transfers_survive_a_restart(tmp_path: Path) -> None:
    paths = {"state_path": tmp_path / "state.json", "work_dir": tmp_path / "work", "postgres_url": SERVER_URL,
             "token": "tok"}
    box = start(port=0, **paths)
    try:
        api = SandboxApi(box)
        api.ok("POST", "/apps", json={"name": "sbx-keep"})
        addon = api.ok("POST", "/apps/sbx-keep/addons", json={"plan": "heroku-postgresql:essential-0"})
        url = api.ok("GET", "/apps/sbx-keep/config-vars")["DATABASE_URL"]
        execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (7, 'kept')")
        backup = api.finished("sbx-keep", api.ok("POST", f"/client/v11/databases/{addon['id']}/backups"))
    finally:
        box.stop()
    assert rows(url) == [(7, "kept")]  # stopping drops nothing

    again = start(port=0, **paths)
    try:
        api = SandboxApi(again)
        assert api.ok("GET", "/apps/sbx-keep/addons")[0]["id"] == addon["id"]
        assert api.ok("GET", "/client/v11/apps/sbx-keep/transfers/1")["succeeded"] is True
        public = api.ok("POST", "/client/v11/apps/sbx-keep/transfers/1/actions/public-url")
        assert requests.get(public["url"], timeout=10).content.startswith(b"PGDMP")
        assert backup["uuid"] in public["url"]
    finally:
        again.stop(drop_databases=True)
    with pytest.raises(psycopg.OperationalError):
        rows(url)
