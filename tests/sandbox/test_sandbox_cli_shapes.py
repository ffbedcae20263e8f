"""What the Heroku CLI sends and reads, served by the sandbox (read from the CLI's source: heroku 11,
`commands/logs.ts` and `lib/run/log-displayer.ts`, `commands/ps/scale.ts`, `lib/addons/create-addon.ts`,
and heroku-cli-util's `DatabaseResolver` for `pg:info`). tests/test_heroku_cli.py runs the CLI itself."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
import requests

from tests.support import SandboxApi, wait_for

pytestmark = pytest.mark.integration

SDK = {"Accept": "application/vnd.heroku+json; version=3.sdk"}


@pytest.fixture
def api(sandbox: Any) -> SandboxApi:
    return SandboxApi(sandbox)


def events(text: str) -> list[str]:
    return re.findall(r"^data: (.*)$", text, re.M)


def test_addon_releases_run_no_release_phase_as_on_heroku(api: SandboxApi) -> None:
    api.app("sbx-addon-release")
    deployed = api.deploy("sbx-addon-release", {}, {"release": "echo migrating; test -n \"$DATABASE_URL\""})
    assert deployed["status"] == "failed"  # no database yet: the release phase fails
    # The CLI's form of the plan: {"name": ...}; Accept-Expansion: plan adds its price.
    first = api.ok("POST", "/apps/sbx-addon-release/addons", json={"plan": {"name": "heroku-postgresql:essential-0"}},
                   headers={"Accept-Expansion": "plan"})
    assert first["plan"]["price"] == {"cents": 0, "contract": False, "unit": "month"}
    second = api.ok("POST", "/apps/sbx-addon-release/addons", json={"plan": "heroku-postgresql:essential-0"})
    assert "price" not in second["plan"]
    # Promotion: attach the second as DATABASE (the first keeps another name), then detach it.
    attachment = api.ok("POST", "/addon-attachments", json={"addon": second["id"], "app": "sbx-addon-release",
                                                            "name": "DATABASE"})
    api.ok("DELETE", f"/addon-attachments/{attachment['id']}")
    releases = api.ok("GET", "/apps/sbx-addon-release/releases")
    made_by_addons = [r for r in releases if r["description"].startswith(("Attach", "Detach"))]
    assert len(made_by_addons) == 6  # 2 attached, promotion: old one renamed, DATABASE detached and attached; 1 detached
    # Marked succeeded without running the release command, so they have no output.
    assert {(r["status"], r["output_stream_url"]) for r in made_by_addons} == {("succeeded", None)}


def test_attachments_include_what_pg_info_reads_and_resolve(api: SandboxApi) -> None:
    api.app("sbx-pg-info")
    addon = api.ok("POST", "/apps/sbx-pg-info/addons", json={"plan": {"name": "heroku-postgresql:essential-0"}})
    include = {**SDK, "Accept-Inclusion": "addon:plan,config_vars"}
    (attachment,) = api.ok("GET", "/apps/sbx-pg-info/addon-attachments", headers=include)
    assert attachment["addon"]["plan"]["name"] == "heroku-postgresql:essential-0"
    assert attachment["config_vars"] == ["DATABASE_URL"]
    plain = api.ok("GET", "/apps/sbx-pg-info/addon-attachments")[0]
    assert "config_vars" not in plain and "plan" not in plain["addon"]
    resolved = api.ok("POST", "/actions/addon-attachments/resolve", headers=include,
                      json={"addon_attachment": "sbx-pg-info::DATABASE"})
    assert [(a["name"], a["addon"]["id"], a["config_vars"]) for a in resolved] == \
        [("DATABASE", addon["id"], ["DATABASE_URL"])]
    missing = api("POST", "/actions/addon-attachments/resolve", json={"addon_attachment": "NOPE", "app": "sbx-pg-info"})
    assert (missing.status_code, missing.json()["id"]) == (404, "not_found")


def test_ps_scale_sends_quantities_as_strings_absolute_or_relative(api: SandboxApi) -> None:
    api.app("sbx-scale")
    api.deploy("sbx-scale", {}, {"worker": "sleep 600"})
    scale = lambda quantity: api.ok("PATCH", "/apps/sbx-scale/formation",  # noqa: E731
                                    json={"updates": [{"type": "worker", "quantity": quantity}]})[0]["quantity"]
    assert [scale("2"), scale("+1"), scale("-2"), scale(0)] == [2, 3, 1, 0]
    refused = api("PATCH", "/apps/sbx-scale/formation", json={"updates": [{"type": "worker", "quantity": "-1"}]})
    assert refused.status_code == 422  # below zero


def test_log_sessions_stream_recent_lines_filtered_then_tail(api: SandboxApi) -> None:
    api.app("sbx-logs")
    api.deploy("sbx-logs", {}, {"release": "echo one; echo two; echo three", "worker": "echo working; sleep 600"})
    api.ok("PATCH", "/apps/sbx-logs/formation", json={"updates": [{"type": "worker", "quantity": 1}]})
    wait_for(lambda: any(d["state"] == "up" for d in api.ok("GET", "/apps/sbx-logs/dynos")), what="the worker")

    def session(**body: Any) -> dict[str, Any]:
        return api.ok("POST", "/apps/sbx-logs/log-sessions", json=body, headers=SDK)

    # What `heroku logs -n 2 --source app --dyno release` asks for (the CLI sends `dyno`).
    recent = requests.get(session(lines=2, source="app", dyno="release")["logplex_url"], timeout=30)
    assert recent.headers["Content-Type"] == "text/event-stream"
    assert [line.split(" ", 1)[1] for line in events(recent.text)] == ["app[release.1]: two", "app[release.1]: three"]
    everything = events(requests.get(session()["logplex_url"], timeout=30).text)
    assert any("app[api]: Release v2 created by user" in line for line in everything)
    assert any("heroku[worker.1]: State changed from starting to up" in line for line in everything)
    assert requests.get(session()["logplex_url"] + "x", timeout=30).status_code == 403

    # A tail: the newest line, then every new one; a reconnect resumes after the last event's id.
    tail = requests.get(session(lines=1, tail=True, type="web")["logplex_url"], stream=True, timeout=30)
    seen: list[str] = []
    last_id: list[str] = []

    def read() -> None:
        for line in tail.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                last_id.append(line[4:])
            elif line.startswith("data: "):
                seen.append(line[6:])
                if len(seen) == 1:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    api.deploy("sbx-logs", {}, {"web": "echo serving; exec sleep 600"}, wait=False)
    reader.join(30)
    tail.close()
    assert seen and re.search(r" (heroku|app)\[web\.1\]: ", seen[0]), seen
    resumed = requests.get(session(tail=False)["logplex_url"], headers={"Last-Event-ID": last_id[-1]}, timeout=30)
    assert seen[0] not in events(resumed.text)  # only what came after it


def test_bad_log_session_requests_are_refused(api: SandboxApi) -> None:
    api.app("sbx-logs-bad")
    for body in ({"lines": 0}, {"lines": 1501}, {"tail": "yes"}, {"dyno": ""}):
        answer = api("POST", "/apps/sbx-logs-bad/log-sessions", json=body)
        assert (answer.status_code, answer.json()["id"]) == (422, "invalid_params"), body


def test_the_account_and_the_users_apps(api: SandboxApi) -> None:
    api.app("sbx-account")
    account = api.ok("GET", "/account", headers=SDK)
    assert [a["owner"]["email"] for a in api.ok("GET", "/users/~/apps")] == [account["email"]]
    assert (api("GET", "/users/someone@example.com/apps").status_code) == 404
