"""The sandbox's Platform API over HTTP: apps, slugs, releases and their release phase, config vars,
rollback, Range paging, dynos, formation, webhooks, errors, rate limit, faults, and restarts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import tarfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from backout.heroku import ACCEPT
from backout_sandbox.server import start
from tests.stub_http import Reply, Request, StubServer
from tests.support import SERVER_URL, SandboxApi, slug_tarball, wait_for, web_process

pytestmark = pytest.mark.integration

# A web process that says which code, process and environment answered.
WEB = web_process("""
    def answer():
        names = ("DYNO", "PORT", "FOO", "HEROKU_RELEASE_VERSION", "HEROKU_APP_NAME", "HEROKU_SLUG_COMMIT",
                 "SANDBOX_PARENT_ONLY", "BACKOUT_HEROKU_API_URL")
        body = json.dumps({"code": open("VERSION").read().strip(), "pid": os.getpid(),
                           "env": {k: os.environ.get(k) for k in names}}).encode()
        return 200, {}, body
""")


@pytest.fixture
def api(sandbox: Any) -> SandboxApi:
    return SandboxApi(sandbox)


# --- apps, errors, auth ---------------------------------------------------------------------------


def test_apps_are_created_listed_and_found_by_name_or_id(api: SandboxApi) -> None:
    created = api("POST", "/apps", json={"name": "sbx-apps"})
    assert created.status_code == 201
    app = created.json()
    assert app["name"] == "sbx-apps" and re.fullmatch(r"http://127\.0\.0\.1:\d+/", app["web_url"])
    assert api.ok("GET", f"/apps/{app['id']}")["name"] == "sbx-apps"
    assert [a["name"] for a in api.ok("GET", "/apps")] == ["sbx-apps"]
    releases = api.ok("GET", "/apps/sbx-apps/releases")
    assert [(r["version"], r["description"], r["status"], r["current"]) for r in releases] == \
        [(1, "Initial release", "succeeded", True)]
    unnamed = api.ok("POST", "/apps", json={})
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{5}", unnamed["name"])

    taken = api("POST", "/apps", json={"name": "sbx-apps"})
    assert (taken.status_code, taken.json()["id"]) == (422, "invalid_params")
    bad = api("POST", "/apps", json={"name": "Bad_Name"})
    assert bad.status_code == 422 and "lowercase" in bad.json()["message"]
    assert api("GET", "/apps/sbx-apps").headers["Request-Id"]


def test_errors_have_herokus_shape_and_statuses(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-errors")
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        answer = requests.get(f"{sandbox.url}/apps/sbx-errors", headers={"Accept": ACCEPT, **headers}, timeout=10)
        assert answer.status_code == 401
        assert answer.json() == {"id": "unauthorized", "message": "Invalid credentials provided."}
        assert answer.headers["RateLimit-Remaining"].isdigit()
    basic = base64.b64encode(f":{sandbox.token}".encode()).decode()
    assert requests.get(f"{sandbox.url}/apps/sbx-errors", headers={"Accept": ACCEPT, "Authorization": f"Basic {basic}"},
                        timeout=10).status_code == 200

    unversioned = requests.get(f"{sandbox.url}/apps/sbx-errors", headers={"Authorization": f"Bearer {sandbox.token}"},
                               timeout=10)
    assert unversioned.status_code == 400 and unversioned.json()["id"] == "missing_version"

    missing = api("GET", "/apps/no-such-app")
    assert missing.status_code == 404
    assert missing.json() == {"id": "not_found", "message": "Couldn't find that app.", "resource": "app"}
    assert api("GET", "/apps/sbx-errors/releases/v99").json()["resource"] == "release"
    assert api("GET", "/no/such/endpoint").status_code == 404
    assert api("PUT", "/apps").status_code == 405

    not_json = api("POST", "/apps", data=b"{nope", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()["id"]) == (400, "bad_request")
    bad_slug = api("POST", "/apps/sbx-errors/slugs", json={"process_types": {"web": ""}})
    assert (bad_slug.status_code, bad_slug.json()["id"]) == (422, "invalid_params")
    no_slug = api("POST", "/apps/sbx-errors/releases", json={})
    assert no_slug.status_code == 422 and "slug is required" in no_slug.json()["message"]


# --- slugs, releases, release phase -------------------------------------------------------------


def test_each_release_runs_its_own_slug_with_config_and_dyno_metadata(api: SandboxApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_PARENT_ONLY", "must not reach dynos")
    api.app("sbx-deploy")
    api.ok("PATCH", "/apps/sbx-deploy/config-vars", json={"FOO": "bar"})
    first = api.deploy("sbx-deploy", {"server.py": WEB, "VERSION": "one"}, {"web": "python server.py"}, commit="a1b2c3d4e5")
    assert (first["status"], first["current"], first["description"]) == ("succeeded", True, "Deploy a1b2c3d4")
    assert first["output_stream_url"] is None  # no release phase ran
    seen = api.web("sbx-deploy")
    assert seen["code"] == "one"
    env = seen["env"]
    assert env["DYNO"] == "web.1" and env["PORT"].isdigit() and env["FOO"] == "bar"
    assert env["HEROKU_RELEASE_VERSION"] == f"v{first['version']}" and env["HEROKU_APP_NAME"] == "sbx-deploy"
    assert env["HEROKU_SLUG_COMMIT"] == "a1b2c3d4e5" and env["SANDBOX_PARENT_ONLY"] is None
    assert env["BACKOUT_HEROKU_API_URL"] == api.base

    second = api.deploy("sbx-deploy", {"server.py": WEB, "VERSION": "two"}, {"web": "python server.py"})
    assert api.web("sbx-deploy")["code"] == "two"
    assert second["version"] == first["version"] + 1
    formation = api.ok("GET", "/apps/sbx-deploy/formation")
    assert [(f["type"], f["quantity"], f["command"]) for f in formation] == [("web", 1, "python server.py")]
    slug = api.ok("GET", f"/apps/sbx-deploy/slugs/{second['slug']['id']}")
    assert slug["size"] > 0 and slug["checksum"].startswith("SHA256:") and slug["blob"]["method"] == "get"


def test_a_slug_tarball_outside_app_or_with_a_wrong_checksum_is_refused(api: SandboxApi) -> None:
    api.app("sbx-blobs")
    slug = api.ok("POST", "/apps/sbx-blobs/slugs", json={"process_types": {"web": "true"}})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("./etc/passwd")
        tar.addfile(info, io.BytesIO(b""))
    outside = requests.put(slug["blob"]["url"], data=buf.getvalue(), timeout=10)
    assert outside.status_code == 400 and "./app/" in outside.json()["message"]
    assert requests.put(slug["blob"]["url"], data=b"not a tarball", timeout=10).status_code == 400
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("./app"), io.BytesIO(b""))  # a file, not the app's directory
    flat = requests.put(slug["blob"]["url"], data=buf.getvalue(), timeout=10)
    assert flat.status_code == 400 and "directory" in flat.json()["message"]
    unsigned = requests.put(slug["blob"]["url"].split("?")[0], data=slug_tarball({"x": "y"}), timeout=10)
    assert unsigned.status_code == 403
    checked = api.ok("POST", "/apps/sbx-blobs/slugs",
                     json={"process_types": {"web": "true"}, "checksum": "SHA256:" + "0" * 64})
    wrong = requests.put(checked["blob"]["url"], data=slug_tarball({"x": "y"}), timeout=10)
    assert wrong.status_code == 400 and "checksum" in wrong.json()["message"]


def test_release_phase_success_and_failure(api: SandboxApi) -> None:
    api.app("sbx-phase")
    good = api.deploy("sbx-phase", {"server.py": WEB, "VERSION": "good"},
                      {"web": "python server.py", "release": "echo migrating $HEROKU_RELEASE_VERSION on $DYNO"},
                      wait=False)
    assert good["status"] == "pending" and good["current"] is False
    good = api.settled("sbx-phase", good["id"])
    assert (good["status"], good["current"]) == ("succeeded", True)
    output = requests.get(good["output_stream_url"], timeout=10).text
    assert f"migrating v{good['version']} on release.1" in output
    assert api.web("sbx-phase")["code"] == "good"
    formation = {f["type"]: f["quantity"] for f in api.ok("GET", "/apps/sbx-phase/formation")}
    assert formation == {"release": 0, "web": 1}

    bad = api.deploy("sbx-phase", {"server.py": WEB, "VERSION": "bad"},
                     {"web": "python server.py", "release": "echo the migration broke >&2; exit 3"})
    assert (bad["status"], bad["current"]) == ("failed", False)
    assert "the migration broke" in requests.get(bad["output_stream_url"], timeout=10).text
    current = [r for r in api.ok("GET", "/apps/sbx-phase/releases") if r["current"]]
    assert [r["version"] for r in current] == [good["version"]]
    assert api.web("sbx-phase")["code"] == "good"

    api.ok("PATCH", "/apps/sbx-phase/config-vars", json={"FOO": "x"})
    bad_config = api.ok("GET", "/apps/sbx-phase/releases")[-1]
    assert bad_config["description"] == "Set FOO config vars"
    # This release's slug is the good one, whose release phase passes: config changes run it too.
    assert api.settled("sbx-phase", bad_config["id"])["status"] == "succeeded"


def test_a_failed_config_release_leaves_the_config_as_it_was(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-failcfg")
    api.deploy("sbx-failcfg", {"server.py": WEB, "VERSION": "v"}, {"web": "python server.py", "release": "true"})
    sandbox.faults.fail_release("sbx-failcfg")
    api.ok("PATCH", "/apps/sbx-failcfg/config-vars", json={"FOO": "never"})
    failed = api.settled("sbx-failcfg", api.ok("GET", "/apps/sbx-failcfg/releases")[-1]["id"])
    assert failed["status"] == "failed"
    assert "fault injection" in requests.get(failed["output_stream_url"], timeout=10).text
    assert "FOO" not in api.ok("GET", "/apps/sbx-failcfg/config-vars")
    assert api.web("sbx-failcfg")["env"]["FOO"] is None
    api.ok("PATCH", "/apps/sbx-failcfg/config-vars", json={"FOO": "now"})
    assert api.settled("sbx-failcfg", api.ok("GET", "/apps/sbx-failcfg/releases")[-1]["id"])["status"] == "succeeded"
    assert api.ok("GET", "/apps/sbx-failcfg/config-vars")["FOO"] == "now"
    assert api.web("sbx-failcfg")["env"]["FOO"] == "now"  # the dynos restarted with the new config


def test_a_release_phase_can_call_back_into_the_api(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-callback")
    api.ok("PATCH", "/apps/sbx-callback/config-vars", json={"HEROKU_API_KEY": sandbox.token})
    probe = (
        "import os, requests\n"
        "url = os.environ['BACKOUT_HEROKU_API_URL'] + '/apps/' + os.environ['HEROKU_APP_NAME'] + '/releases/' "
        "+ os.environ['HEROKU_RELEASE_VERSION']\n"
        "r = requests.get(url, headers={'Authorization': 'Bearer ' + os.environ['HEROKU_API_KEY'], "
        "'Accept': 'application/vnd.heroku+json; version=3'}, timeout=10)\n"
        "print('seen from the release phase:', r.json()['status'])\n"
    )
    release = api.deploy("sbx-callback", {"probe.py": probe}, {"release": "python probe.py"})
    assert release["status"] == "succeeded"
    assert "seen from the release phase: pending" in requests.get(release["output_stream_url"], timeout=10).text


# --- config vars and rollback ---------------------------------------------------------------------


def test_config_changes_make_releases_with_their_own_config(api: SandboxApi) -> None:
    api.app("sbx-config")
    assert api.ok("PATCH", "/apps/sbx-config/config-vars", json={"FOO": "1", "BAR": "2"}) == {"FOO": "1", "BAR": "2"}
    api.ok("PATCH", "/apps/sbx-config/config-vars", json={"FOO": None})
    api.ok("PATCH", "/apps/sbx-config/config-vars", json={"BAR": "2"})  # no change, no release
    api.ok("PATCH", "/apps/sbx-config/config-vars", json={"BAR": "3", "NEW": "x", "GONE": None})
    releases = api.ok("GET", "/apps/sbx-config/releases")
    assert [r["description"] for r in releases] == [
        "Initial release", "Set FOO, BAR config vars", "Remove FOO config vars", "Set BAR, NEW config vars"]
    assert api.ok("GET", "/apps/sbx-config/releases/2/config-vars") == {"FOO": "1", "BAR": "2"}
    assert api.ok("GET", f"/apps/sbx-config/releases/{releases[2]['id']}/config-vars") == {"BAR": "2"}
    assert api.ok("GET", "/apps/sbx-config/config-vars") == {"BAR": "3", "NEW": "x"}
    bad = api("PATCH", "/apps/sbx-config/config-vars", json={"BAD-NAME": "x"})
    assert bad.status_code == 422 and "BAD-NAME" in bad.json()["message"]
    assert api("PATCH", "/apps/sbx-config/config-vars", json={"N": 5}).status_code == 422


def test_rollback_makes_a_release_with_the_targets_slug_and_config(api: SandboxApi) -> None:
    api.app("sbx-rollback")
    api.ok("PATCH", "/apps/sbx-rollback/config-vars", json={"FOO": "old"})
    old = api.deploy("sbx-rollback", {"server.py": WEB, "VERSION": "old"}, {"web": "python server.py"})
    api.deploy("sbx-rollback", {"server.py": WEB, "VERSION": "new"}, {"web": "python server.py"})
    api.ok("PATCH", "/apps/sbx-rollback/config-vars", json={"FOO": "new"})
    assert api.web("sbx-rollback")["code"] == "new"

    answer = api("POST", "/apps/sbx-rollback/releases", json={"release": old["id"]})
    assert answer.status_code == 201
    rollback = api.settled("sbx-rollback", answer.json()["id"])
    assert rollback["description"] == f"Rollback to v{old['version']}"
    assert rollback["slug"] == old["slug"] and rollback["current"] and rollback["status"] == "succeeded"
    assert api.ok("GET", "/apps/sbx-rollback/config-vars") == {"FOO": "old"}
    seen = api.web("sbx-rollback")
    assert (seen["code"], seen["env"]["FOO"]) == ("old", "old")

    assert api("POST", "/apps/sbx-rollback/releases", json={"release": "v2"}).status_code == 422
    unknown = api("POST", "/apps/sbx-rollback/releases", json={"release": "00000000-0000-4000-8000-000000000000"})
    assert unknown.status_code == 404
    initial = api.ok("GET", "/apps/sbx-rollback/releases/1")
    assert initial["eligible_for_rollback"] is False
    assert api("POST", "/apps/sbx-rollback/releases", json={"release": initial["id"]}).status_code == 422


def test_rollback_to_a_failed_release_is_refused(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-rbfail")
    sandbox.faults.fail_release("sbx-rbfail")
    failed = api.deploy("sbx-rbfail", {"VERSION": "x"}, {"worker": "sleep 60"})
    assert failed["status"] == "failed" and failed["eligible_for_rollback"] is False
    refused = api("POST", "/apps/sbx-rbfail/releases", json={"release": failed["id"]})
    assert refused.status_code == 422 and "failed" in refused.json()["message"]


def test_releases_are_paged_by_range_like_heroku(api: SandboxApi) -> None:
    api.app("sbx-paging")
    for n in range(24):
        api.ok("PATCH", "/apps/sbx-paging/config-vars", json={"N": str(n)})
    seen, pages, header = [], 0, "version ..; order=desc, max=10"
    while True:
        answer = api("GET", "/apps/sbx-paging/releases", headers={"Range": header})
        pages += 1
        seen += [r["version"] for r in answer.json()]
        if answer.status_code == 200:
            assert "Next-Range" not in answer.headers
            break
        assert answer.status_code == 206
        header = answer.headers["Next-Range"]
        assert header == f"version ]{seen[-1]}..; order=desc, max=10"
    assert (seen, pages) == (list(range(25, 0, -1)), 3)

    ascending = api("GET", "/apps/sbx-paging/releases", headers={"Range": "version 20..; max=3"})
    assert [r["version"] for r in ascending.json()] == [20, 21, 22] and ascending.status_code == 206
    everything = api("GET", "/apps/sbx-paging/releases")
    assert everything.status_code == 200 and len(everything.json()) == 25
    assert api("GET", "/apps/sbx-paging/releases", headers={"Range": "bogus"}).status_code == 400
    assert api("GET", "/apps/sbx-paging/releases", headers={"Range": "version ..; max=0"}).status_code == 400


# --- dynos and formation ----------------------------------------------------------------------------


def test_a_crashing_dyno_is_crashed_and_restarted_with_growing_delays(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-crash")
    api.deploy("sbx-crash", {"VERSION": "x"}, {"web": "python server.py", "worker": "echo boom; exit 1"})
    api.ok("PATCH", "/apps/sbx-crash/formation", json={"updates": [{"type": "worker", "quantity": 1}, {"type": "web", "quantity": 0}]})
    wait_for(lambda: [d for d in api.ok("GET", "/apps/sbx-crash/dynos") if d["state"] == "crashed"], what="a crash")
    log = sandbox.log_path("sbx-crash")
    starts = wait_for(lambda: s if len(s := _starts(log, "worker.1")) >= 3 else None, timeout=15,
                      what="three starts of the worker")
    # Heroku restarts a crashed dyno at once the first time, then waits longer and longer.
    assert (starts[1] - starts[0]).total_seconds() < 0.9
    assert (starts[2] - starts[1]).total_seconds() >= 0.9
    text = log.read_text()
    assert "app[worker.1]: boom" in text and "Process exited with status 1" in text
    assert "State changed from up to crashed" in text


def _starts(log: Path, dyno: str) -> list[datetime]:
    if not log.exists():
        return []
    marker = f" heroku[{dyno}]: Starting process"
    return [datetime.fromisoformat(line.split(" ", 1)[0]) for line in log.read_text().splitlines() if marker in line]


def test_the_router_answers_503_when_web_dynos_crash_or_none_run(api: SandboxApi, sandbox: Any) -> None:
    app = api.app("sbx-router")
    api.deploy("sbx-router", {"VERSION": "x"}, {"web": "exit 2"})
    wait_for(lambda: [d for d in api.ok("GET", "/apps/sbx-router/dynos") if d["state"] == "crashed"], what="a crash")
    crashed = requests.get(app["web_url"], timeout=10)
    assert crashed.status_code == 503 and "Application error" in crashed.text
    api.ok("PATCH", "/apps/sbx-router/formation/web", json={"quantity": 0})
    wait_for(lambda: not api.ok("GET", "/apps/sbx-router/dynos"), what="no dynos")
    assert requests.get(app["web_url"], timeout=10).status_code == 503
    text = sandbox.log_path("sbx-router").read_text()
    assert 'code=H10 desc="App crashed"' in text and 'code=H14 desc="No web processes running"' in text


def test_formation_scales_and_dynos_restart(api: SandboxApi) -> None:
    api.app("sbx-scale")
    api.deploy("sbx-scale", {"server.py": WEB, "VERSION": "s"}, {"web": "python server.py", "worker": "sleep 600"})
    first = api.web("sbx-scale")["pid"]
    scaled = api.ok("PATCH", "/apps/sbx-scale/formation",
                    json={"updates": [{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 1, "size": "Standard-1X"}]})
    assert {(f["type"], f["quantity"], f["size"]) for f in scaled} == {("web", 2, "Basic"), ("worker", 1, "Standard-1X")}
    dynos = wait_for(lambda: d if len(d := api.ok("GET", "/apps/sbx-scale/dynos")) == 3 and all(
        x["state"] == "up" for x in d) else None, what="three dynos up")
    assert sorted(d["name"] for d in dynos) == ["web.1", "web.2", "worker.1"]
    web1 = next(d for d in dynos if d["name"] == "web.1")
    assert api.ok("GET", f"/apps/sbx-scale/dynos/{web1['id']}")["name"] == "web.1"
    url = api.ok("GET", "/apps/sbx-scale")["web_url"]
    assert len({requests.get(url, timeout=10).json()["pid"] for _ in range(6)}) == 2  # round robin
    assert first in {requests.get(url, timeout=10).json()["pid"] for _ in range(4)}  # web.1 was not restarted

    restarted = api("DELETE", "/apps/sbx-scale/dynos/web.1")
    assert (restarted.status_code, restarted.json()) == (202, {})
    wait_for(lambda: any(d["name"] == "web.1" and d["id"] != web1["id"] and d["state"] == "up"
                         for d in api.ok("GET", "/apps/sbx-scale/dynos")), what="web.1 restarted")
    assert api("DELETE", "/apps/sbx-scale/dynos").status_code == 202
    assert api("DELETE", "/apps/sbx-scale/dynos/web.9").status_code == 404
    assert api("PATCH", "/apps/sbx-scale/formation", json={"updates": [{"type": "clock", "quantity": 1}]}).status_code == 404
    assert api("PATCH", "/apps/sbx-scale/formation/web", json={"quantity": -1}).status_code == 422
    assert api("PATCH", "/apps/sbx-scale/formation/release", json={"quantity": 1}).status_code == 404
    assert api.ok("GET", "/apps/sbx-scale/formation/worker")["size"] == "Standard-1X"


# --- webhooks ----------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A real HTTP server on loopback that records the webhook deliveries it gets."""
    received: list[tuple[dict[str, str], bytes]] = []

    def deliver(request: Request) -> Reply:
        received.append((dict(request.headers), request.body))
        return Reply(204)

    with StubServer(deliver) as server:
        yield f"{server.url}/hooks", received


def test_webhooks_are_delivered_signed_with_the_secret(api: SandboxApi, receiver: Any) -> None:
    url, received = receiver
    api.app("sbx-hooks")
    created = api("POST", "/apps/sbx-hooks/webhooks",
                  json={"url": url, "include": ["api:release", "api:dyno"], "level": "notify", "secret": "s3cret"})
    assert created.status_code == 201 and "Heroku-Webhook-Secret" not in created.headers
    hook = created.json()
    assert set(hook) == {"app", "created_at", "id", "include", "level", "updated_at", "url"}
    made_up = api("POST", "/apps/sbx-hooks/webhooks", json={"url": url + "/2", "include": ["api:release"], "level": "sync"})
    generated = made_up.headers["Heroku-Webhook-Secret"]
    api.deploy("sbx-hooks", {"VERSION": "x"}, {"web": "sleep 600", "release": "true"})

    def events() -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in list(received)]

    wait_for(lambda: any(e["resource"] == "dyno" for e in events()), what="a dyno event")
    wait_for(lambda: len([e for e in events() if e["resource"] == "release" and e["action"] == "update"]) >= 2,
             what="release updates at both webhooks")
    secrets = {hook["id"]: "s3cret", made_up.json()["id"]: generated}
    for headers, body in list(received):
        secret = secrets[json.loads(body)["webhook_metadata"]["webhook"]["id"]]
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        assert headers["Heroku-Webhook-Hmac-SHA256"] == expected
    release_events = [e for e in events() if e["resource"] == "release"]
    assert {(e["action"], e["data"]["status"]) for e in release_events} >= {("create", "pending"), ("update", "succeeded")}
    dyno_events = [e for e in events() if e["resource"] == "dyno"]
    assert {e["webhook_metadata"]["webhook"]["id"] for e in dyno_events} == {hook["id"]}  # only it asked for them
    assert {e["data"]["name"] for e in dyno_events} == {"web.1"}

    assert {h["id"] for h in api.ok("GET", "/apps/sbx-hooks/webhooks")} == set(secrets)
    assert api.ok("PATCH", f"/apps/sbx-hooks/webhooks/{hook['id']}", json={"include": ["api:dyno"]})["include"] == ["api:dyno"]
    assert api.ok("DELETE", f"/apps/sbx-hooks/webhooks/{hook['id']}")["id"] == hook["id"]
    assert api("GET", f"/apps/sbx-hooks/webhooks/{hook['id']}").status_code == 404
    bad = api("POST", "/apps/sbx-hooks/webhooks", json={"url": "ftp://x", "include": ["api:release"], "level": "notify"})
    assert bad.status_code == 422


# --- rate limit and faults ---------------------------------------------------------------------------


def test_the_rate_limit_answers_429_and_refills(tmp_path: Path) -> None:
    box = start(port=0, state_path=tmp_path / "s.json", work_dir=tmp_path / "w", postgres_url=SERVER_URL,
                rate_limit=5, rate_window=10.0)
    try:
        api = SandboxApi(box)
        answers = [api("GET", "/apps") for _ in range(6)]
        # 5 requests per 10 s: one comes back every 2 s, so the sixth finds the budget spent.
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
        assert answers[-1].json() == {"id": "rate_limit", "message": "Your account reached the API rate limit\n"
                                      "Please wait a few minutes before making new requests"}
        assert api.ok("GET", "/account/rate-limits") == {"remaining": 0}  # asking does not spend
        wait_for(lambda: api.ok("GET", "/account/rate-limits")["remaining"] >= 1, timeout=5, what="a refill")
        assert api("GET", "/apps").status_code == 200
    finally:
        box.stop(drop_databases=True)


def test_scripted_faults_answer_then_let_requests_through(api: SandboxApi, sandbox: Any) -> None:
    api.app("sbx-faults")
    rule = sandbox.faults.script(429, times=2, path=r"^/apps/sbx-faults$", retry_after=3)
    sandbox.faults.script(503, times=1, method="GET", path=r"^/apps/sbx-faults$")
    answers = [api("GET", "/apps/sbx-faults") for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 503, 200]
    assert answers[0].headers["Retry-After"] == "3" and answers[0].json()["id"] == "rate_limit"
    assert answers[2].json()["id"] == "service_unavailable"
    assert sandbox.faults.hits(rule) == 2
    assert api("GET", "/apps").status_code == 200  # other paths were never affected

    sandbox.faults.slow(0.4, path=r"^/apps$")
    began = time.monotonic()
    assert api("GET", "/apps").status_code == 200
    assert time.monotonic() - began >= 0.4

    posted = api("POST", "/sandbox/faults", json={"status": 500, "times": 1, "path": "/config-vars"})
    assert posted.status_code == 201
    assert [r["status"] for r in api.ok("GET", "/sandbox/faults")] == [500]
    assert api("GET", "/apps/sbx-faults/config-vars").status_code == 500
    assert api("POST", "/sandbox/faults", json={"status": 503, "bogus": 1}).status_code == 422
    assert api("POST", "/sandbox/faults", json={"fail_release": {"app": "sbx-faults"}}).status_code == 201
    assert requests.post(f"{sandbox.url}/sandbox/faults", json={"status": 500}, timeout=10).status_code == 401
    assert api.ok("DELETE", "/sandbox/faults") == []


# --- restart -------------------------------------------------------------------------------------------


def test_a_restarted_sandbox_keeps_its_apps_and_restarts_their_dynos(tmp_path: Path) -> None:
    paths = {"state_path": tmp_path / "state.json", "work_dir": tmp_path / "work", "postgres_url": SERVER_URL}
    box = start(port=0, token="tok-restart", **paths)
    try:
        api = SandboxApi(box)
        api.app("sbx-restart")
        api.ok("PATCH", "/apps/sbx-restart/config-vars", json={"FOO": "kept"})
        api.deploy("sbx-restart", {"server.py": WEB, "VERSION": "persisted"}, {"web": "python server.py"})
        web_url = api.ok("GET", "/apps/sbx-restart")["web_url"]
        assert api.web("sbx-restart")["code"] == "persisted"
    finally:
        box.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(web_url, timeout=2)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600

    again = start(port=0, token="tok-restart", **paths)
    try:
        api = SandboxApi(again)
        assert [r["description"] for r in api.ok("GET", "/apps/sbx-restart/releases")] == [
            "Initial release", "Set FOO config vars", "Deploy"]
        assert api.ok("GET", "/apps/sbx-restart/config-vars") == {"FOO": "kept"}
        seen = api.web("sbx-restart")
        assert (seen["code"], seen["env"]["FOO"]) == ("persisted", "kept")
        assert api.ok("GET", "/apps/sbx-restart")["web_url"] == web_url
    finally:
        again.stop(drop_databases=True)


def test_a_broken_state_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    from backout_sandbox.core.errors import StartError

    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(StartError, match="move it away"):
        start(port=0, state_path=state, work_dir=tmp_path / "w", postgres_url=SERVER_URL)
    with pytest.raises(StartError, match="cannot reach PostgreSQL"):
        start(port=0, state_path=tmp_path / "other.json", postgres_url="postgresql://postgres@127.0.0.1:1/postgres")
