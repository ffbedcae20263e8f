"""`backout health --app A`: one probe now, the verdict, and what the policy would do."""

from __future__ import annotations

import json

import pytest

from backout import cli, ledger
from backout.heroku import HerokuClient
from tests.health_support import FAST, HealthApp, deploy_checkpoint, use_env
from tests.support import deploy_slug, health_app_files

pytestmark = pytest.mark.integration


def run(capsys, *argv):
    status = cli.main(["health", *argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_nothing_to_check_is_bad_input(monkeypatch, capsys):
    use_env(monkeypatch, {})
    status, out, err = run(capsys, "--app", "shop")
    assert status == 2
    assert "nothing to check: set BACKOUT_HEALTH_URL" in err


def test_probe_without_the_platform_api(monkeypatch, capsys, database):
    app = HealthApp()
    try:
        use_env(monkeypatch, {"BACKOUT_HEALTH_URL": app.url, "BACKOUT_DATABASE_URL": database, **FAST})
        status, out, _ = run(capsys, "--app", "shop")
        assert status == 0
        assert "verdict: pass: status 200" in out and "release unknown" in out
        app.mode = "fail"
        status, out, _ = run(capsys, "--app", "shop", "--json")
        assert status == 1
        document = json.loads(out)
        assert document["verdict"] == "fail" and document["reason"] == "status 500, expected 200-399"
        assert document["probes"][0]["status"] == 500 and document["release"] is None
    finally:
        app.close()
    conn = ledger.connect(database)
    checks = [e for e in ledger.health_events(conn, "shop") if e["kind"] == "check"]
    conn.close()
    assert [e["verdict"] for e in checks] == ["fail", "pass"]  # newest first


def test_against_the_sandbox_with_the_policy_answer(monkeypatch, capsys, sandbox, database, redis_url):
    client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
    try:
        web_url = client.create_app("shop")["web_url"]
        releases = {}
        for code in ("good", "bad"):
            releases[code] = deploy_slug(client, "shop", {"web": "python web.py"}, health_app_files(code),
                                         commit=code * 4, timeout=30)
        good, bad = releases["good"]["version"], releases["bad"]["version"]
        good_cp = deploy_checkpoint(database, "shop", good, verified=True)
        deploy_checkpoint(database, "shop", bad, previous=good)
        use_env(monkeypatch, {**sandbox.env, "BACKOUT_HEALTH_URL": web_url + "health",
                              "BACKOUT_DATABASE_URL": database, "REDIS_URL": redis_url,
                              "BACKOUT_HEALTH_RELEASE_HEADER": "X-Release", "BACKOUT_AUTO_ROLLBACK": "code+down"})
        import time

        deadline = time.monotonic() + 20
        while True:  # until the bad release's web dyno answers
            status, out, _ = run(capsys, "--app", "shop", "--json")
            document = json.loads(out)
            if document["probes"][0]["release"] == bad or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 1
        assert document["release"]["version"] == bad and document["verdict"] == "fail"
        assert document["dynos"] and document["dynos"][0]["release_version"] == bad
        assert document["decision"] == {"action": "rollback", "db": "down",
                                        "reason": f"Roll back to v{good} ({good_cp['id']}) with --db down",
                                        "target": {"checkpoint": good_cp["id"], "version": good,
                                                   "verified_healthy_at": good_cp["verified_healthy_at"]}}
        assert document["watch"] is None
        status, out, _ = run(capsys, "--app", "shop")
        assert f"shop v{bad}" in out and "verdict: fail: status 500" in out
        assert f"if it keeps failing, backout would roll back to v{good} ({good_cp['id']}) with --db down" in out
        assert "watch: none running for this app" in out

        status, _, err = run(capsys, "--app", "no-such-app")
        assert status == 2 and "not found" in err
    finally:
        client.close()
