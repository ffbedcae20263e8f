"""backout's Heroku client against the sandbox, over HTTP: paging, rollback, retries, transfers."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from backout.errors import HerokuAPIError
from backout.heroku import HerokuClient
from backout.http_retry import RetryPolicy
from tests.support import slug_tarball

pytestmark = pytest.mark.integration


@pytest.fixture
def client(sandbox: Any) -> HerokuClient:
    # Real waits, kept short: Retry-After 0 and a backoff of hundredths of a second.
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
    with HerokuClient(sandbox.token, sandbox.url, sandbox.url, timeout=30, policy=policy) as heroku:
        yield heroku


def calls(sandbox: Any, method: str, path: str) -> list[int]:
    return [r["status"] for r in sandbox.requests if r["method"] == method and r["path"] == path]


def test_the_client_lists_250_releases_across_pages(sandbox: Any, client: HerokuClient) -> None:
    client.create_app("sbx-many")
    for n in range(249):
        client.update_config_vars("sbx-many", {"N": str(n)})
    releases = client.list_releases("sbx-many")
    assert [r["version"] for r in releases] == list(range(250, 0, -1))
    assert calls(sandbox, "GET", "/apps/sbx-many/releases") == [206, 200]  # 200 a page, then the last 50
    oldest_first = client.list_releases("sbx-many", newest_first=False, page_size=100)
    assert [r["version"] for r in oldest_first] == list(range(1, 251))
    assert calls(sandbox, "GET", "/apps/sbx-many/releases")[2:] == [206, 206, 200]
    assert client.current_release("sbx-many")["version"] == 250
    assert client.release_config_vars("sbx-many", "v17") == {"N": "15"}


def _slug(client: HerokuClient, app: str, text: str) -> dict[str, Any]:
    slug = client.create_slug(app, {"worker": "sleep 600", "release": "echo ok"}, commit=text * 8)
    client.upload_slug(slug["blob"]["url"], slug_tarball({"VERSION": text}))
    return slug


def test_the_client_deploys_and_rolls_back(sandbox: Any, client: HerokuClient) -> None:
    client.create_app("sbx-client-rb")
    first = client.wait_release("sbx-client-rb", client.create_release("sbx-client-rb", _slug(client, "sbx-client-rb", "a")["id"])["id"], poll=0.05)
    second = client.wait_release("sbx-client-rb", client.create_release("sbx-client-rb", _slug(client, "sbx-client-rb", "b")["id"])["id"], poll=0.05)
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")

    # The rollback POST goes through but its answer is lost: the client finds the rollback release
    # it made instead of rolling back twice.
    sandbox.faults.script(503, method="POST", path=r"^/apps/sbx-client-rb/releases$", after=True)
    rollback = client.rollback("sbx-client-rb", f"v{first['version']}")
    assert rollback["description"] == f"Rollback to v{first['version']}"
    done = client.wait_release("sbx-client-rb", rollback["id"], poll=0.05)
    assert done["status"] == "succeeded" and done["slug"] == first["slug"]
    assert client.current_release("sbx-client-rb")["id"] == rollback["id"]
    descriptions = [r["description"] for r in client.list_releases("sbx-client-rb")]
    assert descriptions.count(f"Rollback to v{first['version']}") == 1
    assert calls(sandbox, "POST", "/apps/sbx-client-rb/releases")[-1] == 503


def test_the_client_survives_a_burst_of_429s_and_503s_with_the_right_number_of_calls(
        sandbox: Any, client: HerokuClient) -> None:
    client.create_app("sbx-burst")
    sandbox.faults.script(429, times=2, path=r"^/apps/sbx-burst$", retry_after=0)
    sandbox.faults.script(503, times=2, path=r"^/apps/sbx-burst$")
    assert client.app_info("sbx-burst")["name"] == "sbx-burst"
    assert calls(sandbox, "GET", "/apps/sbx-burst") == [429, 429, 503, 503, 200]

    sandbox.faults.script(503, times=5, path=r"^/apps/sbx-burst/config-vars$")
    with pytest.raises(HerokuAPIError) as failed:
        client.config_vars("sbx-burst")
    assert (failed.value.status, failed.value.id) == (503, "service_unavailable")
    assert calls(sandbox, "GET", "/apps/sbx-burst/config-vars") == [503] * 5

    with pytest.raises(HerokuAPIError) as missing:
        client.app_info("sbx-nowhere")
    assert missing.value.status == 404 and "sbx-nowhere" in missing.value.message


def test_the_client_backs_up_and_restores_through_the_data_api(sandbox: Any, client: HerokuClient) -> None:
    client.create_app("sbx-client-data")
    addon = client.create_addon("sbx-client-data", "heroku-postgresql:essential-0")
    url = client.config_vars("sbx-client-data")["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items VALUES (1), (2)")
    backup = client.wait_transfer("sbx-client-data", client.capture_backup(addon["id"])["num"], poll=0.05)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM items")
    link = client.backup_url("sbx-client-data", backup["num"])
    restore = client.restore_backup(addon["id"], link["url"])
    client.wait_transfer("sbx-client-data", restore["uuid"], poll=0.05)
    assert client.wait_database(addon["id"], poll=0.05)["message"] == "Available"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM items ORDER BY id").fetchall() == [(1,), (2,)]
