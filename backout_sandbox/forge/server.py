"""The forge's server: one loopback port serving GitHub's REST API and PyPI's JSON API, and the
methods that set up its world (what GitHub and PyPI users did before the story starts).

    forge = start(port=0, state_path=tmp / "forge.json")
    forge.add_repo("acme/widgets", git_dir=bare, owner="alice")
    forge.add_token("ghp_x", login="alice", scopes=["repo"])
    ... BACKOUT_GITHUB_API_URL=forge.url BACKOUT_PYPI_URL=forge.url ...
    forge.stop()
"""

from __future__ import annotations

import copy
import logging
import secrets
from pathlib import Path
from typing import Any

from backout_sandbox.core.messages import HttpError, Refused, Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.core.server import HttpServer
from backout_sandbox.core.store import JsonStore, now
from backout_sandbox.forge import github, pypi
from backout_sandbox.forge.auth import RATE_LIMIT, Call, authenticate, count_request
from backout_sandbox.forge.errors import refusal

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_PORT = 5011
DEFAULT_STATE = ".backout/forge.json"


def fresh_state() -> dict[str, Any]:
    return {"format": FORMAT, "repos": {}, "tokens": {}, "pypi": {}, "rate": {}, "users": {}, "next_id": 1000,
            "rate_limit": RATE_LIMIT}


class Api:
    """Turns a request into a response. PyPI's routes (and the sandbox's own) are public; GitHub's
    know their caller, count against the caller's rate limit, and carry the caller's headers."""

    def __init__(self, store: JsonStore) -> None:
        self.store = store
        self.github, self.pypi = Router(), Router()
        github.GitHub(store).register(self.github)
        pypi.PyPI(store).register(self.pypi)

    def handle(self, req: Request) -> Response:
        req.raw_path = req.raw_path.rstrip("/") or "/"
        headers = {"X-GitHub-Request-Id": secrets.token_hex(8).upper()}
        try:
            with self.store.lock:
                if req.raw_path.startswith(("/pypi/", "/_sandbox/")):
                    route, params = self.pypi.match(req.method, req.raw_path)
                    response = route.handler(req, **params)
                else:
                    call = Call(req, authenticate(self.store.data, req, headers), headers)
                    count_request(self.store, call.caller, headers)
                    route, params = self.github.match(req.method, req.raw_path)
                    response = route.handler(call, **params)
        except Refused as exc:
            response = refusal(exc).response()
        except HttpError as exc:
            response = exc.response()
        except Exception as exc:  # noqa: BLE001 - a sandbox bug answers 500, like a server would
            log.exception("forge: %s %s failed", req.method, req.path)
            response = Response(500, {"message": f"sandbox error: {type(exc).__name__}: {exc}"})
        response.headers = {**headers, **response.headers}
        return response


class Forge:
    """A running forge sandbox: `url`, `stop()`, and methods that set up its world."""

    def __init__(self, store: JsonStore, server: HttpServer) -> None:
        self.store = store
        self._server = server
        self.url = server.url

    def stop(self) -> None:
        """Stop serving (a second call does nothing)."""
        self._server.stop()

    def __enter__(self) -> Forge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- setting up the world --

    def add_user(self, login: str) -> int:
        with self.store.change() as data:
            if login not in data["users"]:
                data["users"][login] = len(data["users"]) + 1
            return int(data["users"][login])

    def add_token(self, token: str, *, login: str, scopes: list[str] | None = None,
                  permissions: dict[str, str] | None = None, repositories: Any = "all") -> None:
        """A classic token (`scopes`) or, with `permissions`, a fine-grained one
        (`{"contents": "write", "issues": "write"}`, limited to `repositories` or "all")."""
        self.add_user(login)
        with self.store.change() as data:
            if permissions is not None:
                data["tokens"][token] = {"login": login, "kind": "fine-grained", "repositories": repositories,
                                         "permissions": {"metadata": "read", **permissions}}
            else:
                data["tokens"][token] = {"login": login, "kind": "classic", "scopes": list(scopes or [])}

    def add_repo(self, full_name: str, *, git_dir: str | Path, owner: str | None = None, private: bool = False,
                 default_branch: str = "main", collaborators: dict[str, str] | None = None,
                 has_issues: bool = True, publishes: dict[str, str] | None = None) -> None:
        """A repository whose git data is the bare repository `git_dir`. `publishes`
        (`{"project": "widgets", "tag_prefix": "v"}`) links it to a PyPI project: version tags
        pushed to it get uploaded there, as the project's release workflow would."""
        owner_login = owner or full_name.split("/")[0]
        self.add_user(owner_login)
        with self.store.change() as data:
            data["repos"][full_name.lower()] = {
                "id": github.next_id(data), "full_name": full_name, "private": private,
                "default_branch": default_branch, "git_dir": str(Path(git_dir).resolve()),
                "owner": owner_login, "collaborators": {owner_login: "admin", **(collaborators or {})},
                "has_issues": has_issues, "releases": [], "issues": [], "publishes": publishes,
                "created_at": now(),
            }

    def add_release(self, full_name: str, tag: str, *, name: str | None = None, body: str = "",
                    draft: bool = False, prerelease: bool = False, author: str | None = None) -> dict[str, Any]:
        with self.store.change() as data:
            repo = data["repos"][full_name.lower()]
            release = github.new_release(github.next_id(data), repo,
                                         {"tag_name": tag, "name": name if name is not None else tag,
                                          "body": body, "draft": draft, "prerelease": prerelease},
                                         author or repo["owner"])
            repo["releases"].append(release)
            return dict(release)

    def add_pypi_release(self, project: str, version: str, *, files: list[str] | None = None,
                         yanked: bool = False, yanked_reason: str | None = None) -> None:
        with self.store.change() as data:
            pypi.publish(data, project, version, files)
            if yanked:
                pypi.yank(data, project, version, yanked_reason)

    def yank(self, project: str, version: str, reason: str | None = None) -> None:
        """What a maintainer's click on PyPI's "Yank" button does."""
        with self.store.change() as data:
            pypi.yank(data, project, version, reason)

    def set_rate_limit(self, limit: int) -> None:
        """Requests per hour for each authenticated user (GitHub's default is 5000)."""
        with self.store.change() as data:
            data["rate_limit"] = limit
            data["rate"] = {}

    # -- reading it back, for tests --

    def releases(self, full_name: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return copy.deepcopy(self.store.data["repos"][full_name.lower()]["releases"])

    def issues(self, full_name: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return copy.deepcopy(self.store.data["repos"][full_name.lower()]["issues"])

    def pypi_project(self, project: str) -> dict[str, Any] | None:
        with self.store.change() as data:
            pypi.sync_workflows(data)
            found = data["pypi"].get(pypi.normalize_project(project))
            return copy.deepcopy(found) if found else None


def start(port: int = 0, state_path: str | Path = DEFAULT_STATE, host: str = "127.0.0.1") -> Forge:
    """Start the forge sandbox on `host:port` (0 picks a free port) with its state in `state_path`."""
    store = JsonStore(Path(state_path), fresh_state, "forge")
    store.save()
    server = HttpServer(Api(store).handle, port, host, name="backout-forge-sandbox", poll_interval=0.05)
    server.start()
    return Forge(store, server)
