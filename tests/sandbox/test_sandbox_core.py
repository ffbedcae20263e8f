"""The HTTP core both sandboxes stand on: routes, refusals, the JSON state file, and the package's
independence from backout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from backout_sandbox.core.errors import StartError
from backout_sandbox.core.messages import Refused, Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.core.server import HttpServer
from backout_sandbox.core.store import JsonStore


def test_patterns_match_segments_paths_numbers_and_shas() -> None:
    router = Router()
    for pattern in ("/repos/{owner}/{name}", "/refs/{ref:path}", "/releases/{id:int}", "/tags/{sha:sha}"):
        router.add("GET", pattern, lambda req, **params: Response(200, params))
    assert router.match("GET", "/repos/acme/widgets")[1] == {"owner": "acme", "name": "widgets"}
    assert router.match("GET", "/refs/tags/v1.2.3")[1] == {"ref": "tags/v1.2.3"}
    assert router.match("GET", "/repos/acme%2Fx/w")[1] == {"owner": "acme/x", "name": "w"}  # decoded after matching
    assert router.match("GET", "/tags/" + "ab" * 20)[1] == {"sha": "ab" * 20}
    for path in ("/releases/abc", "/tags/abc", "/repos/acme", "/repos/a/b/c"):
        with pytest.raises(Refused) as refused:
            router.match("GET", path)
        assert refused.value.kind == "no_route", path
    with pytest.raises(Refused) as refused:
        router.match("POST", "/releases/12")
    assert refused.value.kind == "method_not_allowed"


def test_the_server_answers_with_the_app_and_drops_a_connection_when_told(tmp_path: Path) -> None:
    def app(req: Request) -> Response:
        if req.path == "/drop":
            return Response(drop=True)
        return Response(201, {"path": req.path, "raw": req.raw_path, "body": req.json_object()})

    server = HttpServer(app, name="test")
    server.start()
    try:
        answer = requests.post(server.url + "/a%20b", json={"x": 1}, timeout=10)
        assert (answer.status_code, answer.json()) == (201, {"path": "/a b", "raw": "/a%20b", "body": {"x": 1}})
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/drop", timeout=10)
        with pytest.raises(StartError, match="cannot listen"):
            HttpServer(app, port=server.port)
    finally:
        server.stop()


def test_the_state_file_starts_fresh_and_refuses_another_format(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JsonStore(path, lambda: {"format": 1, "things": []}, "forge")
    with store.change() as data:
        data["things"].append("a")
    assert JsonStore(path, lambda: {"format": 1, "things": []}, "forge").data["things"] == ["a"]
    assert path.stat().st_mode & 0o777 == 0o600  # it may hold tokens and passwords
    with pytest.raises(StartError, match="is not a backout forge state .format 2.; give another --state file"):
        JsonStore(path, lambda: {"format": 2}, "forge")


def test_the_sandbox_imports_nothing_of_backout() -> None:
    # Every module of backout_sandbox, imported in a fresh interpreter, loads no module of backout.
    code = ("import importlib, pkgutil, sys, backout_sandbox\n"
            "for found in pkgutil.walk_packages(backout_sandbox.__path__, 'backout_sandbox.'):\n"
            "    importlib.import_module(found.name)\n"
            "print(sorted(n for n in sys.modules if n == 'backout' or n.startswith('backout.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
