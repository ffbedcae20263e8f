"""The sandbox checked against Heroku's official Platform API schema.

A walk calls every Platform API route the sandbox serves and validates each request body against
its link's `schema` and each answer against its `targetSchema`, with jsonschema. The check is
stricter than the schema itself: a resource the sandbox answers with must carry every property the
schema lists for it, and nothing it does not list (the schema's `strictProperties`). Formats are
checked too (uuid, date-time, email, uri). One knowing departure: `app.web_url` is the app's router
on loopback (http://127.0.0.1:<port>/), not https://<app>.herokuapp.com/, so its pattern is dropped.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest
import requests

from backout.heroku import ACCEPT
from tests.support import slug_tarball, wait_for

pytestmark = pytest.mark.integration

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "heroku-platform-api-schema.json"
# Resources the sandbox answers with in full: all their properties are required here.
SERVED = ("account", "app", "slug", "release", "formation", "dyno", "add-on", "add-on-attachment", "rate-limit",
          "log-session")
# What the Heroku CLI reads from a Data API transfer (heroku/cli, src/lib/pg/types.ts BackupTransfer).
TRANSFER_FIELDS = {"created_at", "canceled_at", "finished_at", "from_name", "from_type", "num", "options",
                   "processed_bytes", "schedule", "started_at", "source_bytes", "succeeded", "to_name", "to_type",
                   "to_url", "updated_at", "warnings", "uuid"}
# The walk's web process: a static file server.
WEB = ("import http.server, os\nhttp.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), "
       "http.server.SimpleHTTPRequestHandler).serve_forever()\n")


def _schema_file() -> Path:
    for candidate in (SCHEMA_PATH, Path("/work/shared/reference/heroku-platform-api-schema.json")):
        if candidate.exists():
            return candidate
    raise AssertionError(f"the official schema is missing: expected {SCHEMA_PATH}")


def strict_schema() -> dict[str, Any]:
    schema = json.loads(_schema_file().read_text())
    strict = copy.deepcopy(schema)

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("strictProperties") is True and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(strict)
    for name in SERVED:
        definition = strict["definitions"][name]
        definition["required"] = sorted(definition["properties"])
        definition["additionalProperties"] = False
    hook = strict["definitions"]["app-webhook"]["definitions"]["app_webhook"]
    hook["required"], hook["additionalProperties"] = sorted(hook["properties"]), False
    del strict["definitions"]["app"]["definitions"]["web_url"]["pattern"]
    return strict


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        return not isinstance(value, str) or (
            bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value))
            and datetime.fromisoformat(value.replace("Z", "+00:00")) is not None)

    @checker.checks("uuid", raises=ValueError)
    def is_uuid(value: object) -> bool:
        return not isinstance(value, str) or str(uuid.UUID(value)) == value.lower()

    @checker.checks("uri")
    def uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parts = urlsplit(value)
        return bool(parts.scheme and parts.netloc)

    return checker


class Walk:
    """Calls the sandbox and validates every Platform API exchange against the schema."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.schema = strict_schema()
        self.checker = _format_checker()
        # POST /apps/{app}/releases is two links (Create and Rollback): keep them all.
        self.links: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for definition in self.schema["definitions"].values():
            for link in definition.get("links", []):
                self.links.setdefault((link["method"], unquote(link["href"])), []).append(link)
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {box.token}", "Accept": ACCEPT})
        self.covered: set[tuple[str, str]] = set()

    def errors(self, instance: Any, schema: dict[str, Any]) -> list[str]:
        # The link's subschema becomes a document of its own that carries the definitions its
        # "#/definitions/..." references point into.
        document = {**schema, "definitions": self.schema["definitions"]}
        validator = jsonschema.Draft4Validator(document, format_checker=self.checker)
        return [f"{list(e.path)}: {e.message}" for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))]

    def validate(self, instance: Any, schema: dict[str, Any], what: str) -> None:
        errors = self.errors(instance, schema)
        assert not errors, f"{what}: " + "; ".join(errors[:5])

    def link(self, method: str, href: str, body: Any) -> dict[str, Any]:
        """The schema link a request follows: the one whose request schema accepts its body."""
        candidates = self.links[(method, href)]
        if body is None or len(candidates) == 1:
            return candidates[0]
        fitting = [link for link in candidates if not self.errors(body, link.get("schema", {}))]
        assert fitting, f"no link of {method} {href} accepts {body}"
        return fitting[0]

    def __call__(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                 expect: int | None = None) -> Any:
        answer = self.http.request(method, self.box.url + path, json=body, headers=headers, timeout=60)
        route_method, pattern, href = self.box.match(method, path)
        assert href is not None, f"{method} {pattern} names no schema link"
        link = self.link(method, href, body)
        if body is not None and "schema" in link:
            self.validate(body, link["schema"], f"request {method} {path}")
        assert answer.status_code == (expect or answer.status_code) and answer.status_code < 300, \
            (method, path, answer.status_code, answer.text)
        document = answer.json()
        self.validate(document, link["targetSchema"], f"answer to {method} {path}")
        self.covered.add((route_method, pattern))
        return document


def test_every_platform_route_is_a_link_of_the_official_schema(sandbox: Any) -> None:
    walk = Walk(sandbox)
    for method, pattern, href in sandbox.routes:
        if pattern.startswith(("/client/", "/sandbox/")):
            assert href is None
            continue
        assert href is not None, f"{method} {pattern} names no schema link"
        assert (method, href) in walk.links, f"{method} {href} is not in the official schema"
        # The route's path pattern and the link's href agree segment by segment.
        placeholders = re.findall(r"\{\(#/definitions/([^/]+)/definitions/\w+\)\}", href)
        assert re.sub(r"\{\w+\}", "{}", pattern) == re.sub(r"\{\([^)]*\)\}", "{}", href), (pattern, href)
        assert len(placeholders) == pattern.count("{")


def test_a_walk_through_every_platform_route_matches_the_schema(sandbox: Any) -> None:
    call = Walk(sandbox)
    call("GET", "/account/rate-limits")
    account = call("GET", "/account")
    app = call("POST", "/apps", {"name": "sbx-schema"}, expect=201)
    call("GET", "/apps")
    assert [a["name"] for a in call("GET", "/users/~/apps")] == ["sbx-schema"]
    assert call("GET", f"/users/{account['email']}/apps") == call("GET", f"/users/{account['id']}/apps")
    call("GET", f"/apps/{app['id']}")
    call("GET", "/apps/sbx-schema")

    slug = call("POST", "/apps/sbx-schema/slugs", {
        "process_types": {"web": "python web.py", "worker": "sleep 600", "release": "echo released"},
        "commit": "0123456789abcdef0123456789abcdef01234567", "commit_description": "schema walk"}, expect=201)
    assert requests.put(slug["blob"]["url"], data=slug_tarball({"web.py": WEB}), timeout=30).status_code == 200
    call("GET", f"/apps/sbx-schema/slugs/{slug['id']}")
    release = call("POST", "/apps/sbx-schema/releases", {"slug": slug["id"], "description": "walk"}, expect=201)
    wait_for(lambda: call("GET", f"/apps/sbx-schema/releases/{release['id']}")["status"] == "succeeded", what="release")
    call("GET", "/apps/sbx-schema/releases", headers={"Range": "version ..; order=desc, max=1"})
    session = call("POST", "/apps/sbx-schema/log-sessions", {"lines": 5, "source": "app", "tail": False}, expect=201)
    stream = requests.get(session["logplex_url"], timeout=30)  # signed: no token, as Logplex's
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert re.search(r"^data: \S+ app\[release\.1\]: released$", stream.text, re.M), stream.text
    call("GET", f"/apps/sbx-schema/releases/{release['version']}")

    call("PATCH", "/apps/sbx-schema/config-vars", {"FOO": "bar", "GONE": None})
    call("GET", "/apps/sbx-schema/config-vars")
    call("GET", f"/apps/sbx-schema/releases/{release['id']}/config-vars")
    rollback = call("POST", "/apps/sbx-schema/releases", {"release": release["id"]}, expect=201)
    # Its release phase restarts the dynos when it ends: wait, so that dyno ids stay put below.
    wait_for(lambda: call("GET", f"/apps/sbx-schema/releases/{rollback['id']}")["status"] == "succeeded", what="rollback")

    call("GET", "/apps/sbx-schema/formation")
    call("PATCH", "/apps/sbx-schema/formation", {"updates": [{"type": "worker", "quantity": 1}]})
    call("GET", "/apps/sbx-schema/formation/web")
    call("PATCH", "/apps/sbx-schema/formation/worker", {"quantity": 1, "dyno_size": {"name": "Standard-1X"}})
    dynos = wait_for(lambda: len(d := call("GET", "/apps/sbx-schema/dynos")) == 2 and d, what="two dynos")
    call("GET", f"/apps/sbx-schema/dynos/{dynos[0]['name']}")
    call("DELETE", f"/apps/sbx-schema/dynos/{dynos[0]['id']}", expect=202)
    call("DELETE", "/apps/sbx-schema/formations/worker", expect=202)
    call("DELETE", "/apps/sbx-schema/dynos", expect=202)

    addon = call("POST", "/apps/sbx-schema/addons", {"plan": "heroku-postgresql:essential-0",
                                                      "attachment": {"name": "MAIN_DB"}}, expect=201)
    call("GET", "/apps/sbx-schema/addons")
    call("GET", f"/apps/sbx-schema/addons/{addon['name']}")
    call("GET", "/addons")
    call("GET", f"/addons/{addon['id']}")
    attachment = call("POST", "/addon-attachments", {"addon": addon["id"], "app": "sbx-schema", "name": "DATABASE"},
                      expect=201)
    call("GET", "/addon-attachments")
    call("GET", f"/addon-attachments/{attachment['id']}")
    call("GET", "/apps/sbx-schema/addon-attachments")
    call("GET", "/apps/sbx-schema/addon-attachments/DATABASE")
    call("GET", f"/addons/{addon['id']}/addon-attachments")
    resolved = call("POST", "/actions/addon-attachments/resolve", {"addon_attachment": "MAIN_DB", "app": "sbx-schema"})
    assert [a["addon"]["id"] for a in resolved] == [addon["id"]]
    call("DELETE", f"/addon-attachments/{attachment['id']}")

    hook = call("POST", "/apps/sbx-schema/webhooks", {"url": "http://127.0.0.1:9/hook", "include": ["api:release"],
                                                       "level": "notify", "secret": "x", "authorization": None},
                expect=201)
    call("GET", "/apps/sbx-schema/webhooks")
    call("GET", f"/apps/sbx-schema/webhooks/{hook['id']}")
    call("PATCH", f"/apps/sbx-schema/webhooks/{hook['id']}", {"level": "sync"})
    call("DELETE", f"/apps/sbx-schema/webhooks/{hook['id']}")

    call("DELETE", f"/apps/sbx-schema/addons/{addon['id']}")
    call("DELETE", "/apps/sbx-schema")

    platform_routes = {(m, p) for m, p, _ in sandbox.routes if not p.startswith(("/client/", "/sandbox/"))}
    assert platform_routes - call.covered == set()


def test_requests_the_schema_refuses_are_refused(sandbox: Any) -> None:
    call = Walk(sandbox)
    call("POST", "/apps", {"name": "sbx-refuse"}, expect=201)
    refused = [
        ("POST", "/apps/sbx-refuse/slugs", {"commit": "abc"}),  # process_types is required
        ("POST", "/apps/sbx-refuse/releases", {"description": "no slug"}),  # slug is required
        ("PATCH", "/apps/sbx-refuse/config-vars", {"NOT-A-NAME": "x"}),
        ("PATCH", "/apps/sbx-refuse/formation", {}),  # updates is required
        ("POST", "/apps/sbx-refuse/addons", {"config": {}}),  # plan is required
        ("POST", "/addon-attachments", {"app": "sbx-refuse"}),  # addon is required
        ("POST", "/apps/sbx-refuse/webhooks", {"url": "http://127.0.0.1:9/", "include": ["api:release"]}),  # level
        ("POST", "/apps/sbx-refuse/webhooks", {"url": "http://127.0.0.1:9/", "include": ["api:release"],
                                                 "level": "notify", "surprise": 1}),
    ]
    for method, path, body in refused:
        href = sandbox.match(method, path)[2]
        assert all(call.errors(body, link["schema"]) for link in call.links[(method, href)])
        answer = call.http.request(method, sandbox.url + path, json=body, timeout=30)
        assert answer.status_code == 422, (method, path, answer.text)
        assert set(answer.json()) == {"id", "message"} and answer.json()["id"] == "invalid_params"


def test_data_api_transfers_carry_what_the_heroku_cli_reads(sandbox: Any) -> None:
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {sandbox.token}", "Accept": ACCEPT})
    http.post(f"{sandbox.url}/apps", json={"name": "sbx-cli-shape"}, timeout=30).raise_for_status()
    addon = http.post(f"{sandbox.url}/apps/sbx-cli-shape/addons", json={"plan": "heroku-postgresql:essential-0"},
                      timeout=60).json()
    transfer = http.post(f"{sandbox.url}/client/v11/databases/{addon['id']}/backups", timeout=30).json()
    assert TRANSFER_FIELDS <= set(transfer)
    verbose = http.get(f"{sandbox.url}/client/v11/apps/sbx-cli-shape/transfers/{transfer['num']}?verbose=true",
                       timeout=30).json()
    assert all(set(line) == {"created_at", "message"} for line in verbose["logs"])
    status = http.get(f"{sandbox.url}/client/v11/databases/{addon['id']}/wait_status", timeout=30).json()
    assert set(status) == {"waiting?", "error?", "message"}
    info = http.get(f"{sandbox.url}/client/v11/databases/{addon['id']}", timeout=30).json()
    assert all(set(item) == {"name", "values"} for item in info["info"])
