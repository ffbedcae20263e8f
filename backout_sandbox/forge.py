"""The forge sandbox: the part of GitHub's REST API and PyPI's JSON API that package rollbacks use.

A real HTTP server on 127.0.0.1 (one port serves both APIs) with its state in a JSON file, for
tests and for rehearsing `backout package-rollback` before doing it for real. A repository's git
data is a real bare repository on disk: the git refs and contents endpoints read and write it with
git itself, so a `git push` to the bare repository shows up in the API at once, as a push to GitHub
does. Releases, issues, tokens and PyPI projects live in the state file.

GitHub routes: `GET /repos/{o}/{r}`, `GET .../git/ref/{ref}`, `GET .../git/matching-refs/{prefix}`,
`POST .../git/refs`, `DELETE .../git/refs/{ref}`, `GET .../git/tags/{sha}`, `GET|POST .../releases`,
`GET .../releases/tags/{tag}`, `GET|PATCH|DELETE .../releases/{id}`, `GET|POST .../issues`,
`GET .../contents/{path}?ref=`. PyPI routes: `GET /pypi/{project}/json`,
`GET /pypi/{project}/{version}/json`, and `POST /_sandbox/pypi/{project}/{version}/yank`.

Fidelity, as on GitHub: `Authorization: Bearer` or `token`; a classic token's `X-OAuth-Scopes`
header and 404s for what its scopes do not cover; a fine-grained token's 403 "Resource not
accessible by personal access token" with `X-Accepted-GitHub-Permissions` (checked before the body
is validated); `X-RateLimit-*` headers and a 403 when the limit is spent; Link-header pagination;
error bodies `{"message", "documentation_url", "status"}`; deleting a tag turns its release into a
draft. PyPI: `/pypi/<project>/json` and `/pypi/<project>/<version>/json` with `urls`, per-file and
per-release `yanked` and `yanked_reason`, name normalisation with a redirect to the canonical name.

Sandbox-only routes (under `/_sandbox/`) stand for what people do in a browser: yanking a release on
PyPI. A repository can be linked to a PyPI project (`publishes`): every version tag pushed to it is
then "uploaded" by a stand-in for the project's release workflow the next time PyPI is read.

    forge = start(port=0, state_path=tmp / "forge.json")
    forge.add_repo("acme/widgets", git_dir=bare, owner="alice")
    forge.add_token("ghp_x", login="alice", scopes=["repo"])
    ... BACKOUT_GITHUB_API_URL=forge.url BACKOUT_PYPI_URL=forge.url ...
    forge.stop()

Run it for a rehearsal with `python -m backout_sandbox.forge --port 5011 --demo DIR`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from packaging.version import InvalidVersion, Version

DOCS = "https://docs.github.com/rest"
ZERO_SHA = "0" * 40
RATE_LIMIT = 5000
ANONYMOUS_RATE_LIMIT = 60
WRITE_ROLES = ("admin", "maintain", "write")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_project(name: str) -> str:
    """PEP 503 normalisation: PyPI treats `Foo_Bar` and `foo-bar` as one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------
# git, on the bare repositories that stand for GitHub's git storage


class GitFailed(Exception):
    pass


def _git(git_dir: str, *args: str, input: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
    )
    if result.returncode != 0:
        raise GitFailed(result.stderr.decode(errors="replace").strip())
    return result.stdout


def _refs(git_dir: str) -> list[tuple[str, str, str]]:
    """(refname, objecttype, sha) of every ref, sorted by name."""
    out = _git(git_dir, "for-each-ref", "--format=%(refname)%00%(objecttype)%00%(objectname)")
    refs = [tuple(line.split("\0")) for line in out.decode().splitlines() if line]
    return sorted(refs)  # type: ignore[arg-type]


def _resolve_commit(git_dir: str, rev: str) -> str | None:
    try:
        return _git(git_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip() or None
    except GitFailed:
        return None


def _ls_tree(git_dir: str, commit: str, path: str | None) -> list[tuple[str, str, str, int]]:
    """(path, kind, sha, size) of the tree entries at `path` (a trailing slash lists inside it)."""
    args = ["ls-tree", "-l", "-z", commit] + (["--", path] if path else [])
    entries = []
    for item in _git(git_dir, *args).decode().split("\0"):
        if item:
            meta, _, item_path = item.partition("\t")
            _mode, kind, sha, size = meta.split()
            entries.append((item_path, kind, sha, 0 if size == "-" else int(size)))
    return entries


def _object_type(git_dir: str, sha: str) -> str | None:
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        return None
    try:
        return _git(git_dir, "cat-file", "-t", sha).decode().strip()
    except GitFailed:
        return None


# ---------------------------------------------------------------------------------------------
# state


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Answered as GitHub's error body."""

    def __init__(self, status: int, message: str, doc: str = DOCS, errors: list | None = None) -> None:
        super().__init__(message)
        body: dict[str, Any] = {"message": message, "documentation_url": doc, "status": str(status)}
        if errors:
            body["errors"] = errors
        self.reply = Reply(status, body)


class State:
    """The sandbox's state, kept in memory and written to its JSON file after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        if path.exists() and path.stat().st_size:
            self.data = json.loads(path.read_text())
        else:
            self.data = {}
        for key, default in (("repos", {}), ("tokens", {}), ("pypi", {}), ("rate", {}), ("users", {})):
            self.data.setdefault(key, default)
        self.data.setdefault("next_id", 1000)
        self.data.setdefault("rate_limit", RATE_LIMIT)
        self.save()

    def next_id(self) -> int:
        self.data["next_id"] += 1
        return self.data["next_id"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".forge-")
        with os.fdopen(fd, "w") as out:
            json.dump(self.data, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    @contextmanager
    def changing(self) -> Iterator[dict]:
        with self.lock:
            yield self.data
            self.save()


# ---------------------------------------------------------------------------------------------
# who is asking


@dataclass
class Caller:
    login: str | None  # None: anonymous
    kind: str  # "anonymous", "classic", "fine-grained"
    scopes: tuple[str, ...] = ()
    permissions: dict[str, str] = field(default_factory=dict)
    repositories: Any = "all"  # "all" or a list of full names
    user_id: int = 0

    def headers(self) -> dict[str, str]:
        if self.kind == "classic":
            return {"X-OAuth-Scopes": ", ".join(self.scopes)}
        return {}


def _caller(state: State, authorization: str | None) -> Caller:
    if not authorization:
        return Caller(None, "anonymous")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    info = state.data["tokens"].get(token) if scheme.lower() in ("bearer", "token") else None
    if info is None:
        raise ApiError(401, "Bad credentials")
    user_id = state.data["users"].get(info["login"], 1)
    if info["kind"] == "classic":
        return Caller(info["login"], "classic", scopes=tuple(info.get("scopes", ())), user_id=user_id)
    return Caller(info["login"], "fine-grained", permissions=dict(info.get("permissions", {})),
                  repositories=info.get("repositories", "all"), user_id=user_id)


# ---------------------------------------------------------------------------------------------
# the API


class Forge:
    """A running forge sandbox: `url`, `stop()`, and methods that set up its world."""

    def __init__(self, state: State, server: ThreadingHTTPServer) -> None:
        self.state = state
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="forge-sandbox", daemon=True)
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving (a second call does nothing)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    def __enter__(self) -> "Forge":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- setting up the world (what GitHub and PyPI users did before the story starts) --

    def add_user(self, login: str) -> int:
        with self.state.changing() as data:
            if login not in data["users"]:
                data["users"][login] = len(data["users"]) + 1
            return data["users"][login]

    def add_token(self, token: str, *, login: str, scopes: list[str] | None = None,
                  permissions: dict[str, str] | None = None, repositories: Any = "all") -> None:
        """A classic token (`scopes`) or, with `permissions`, a fine-grained one
        (`{"contents": "write", "issues": "write"}`, limited to `repositories` or "all")."""
        self.add_user(login)
        with self.state.changing() as data:
            if permissions is not None:
                data["tokens"][token] = {"login": login, "kind": "fine-grained", "repositories": repositories,
                                         "permissions": {"metadata": "read", **permissions}}
            else:
                data["tokens"][token] = {"login": login, "kind": "classic", "scopes": list(scopes or [])}

    def add_repo(self, full_name: str, *, git_dir: str | Path, owner: str | None = None, private: bool = False,
                 default_branch: str = "main", collaborators: dict[str, str] | None = None,
                 has_issues: bool = True, publishes: dict | None = None) -> None:
        """A repository whose git data is the bare repository `git_dir`. `publishes`
        (`{"project": "widgets", "tag_prefix": "v"}`) links it to a PyPI project: version tags
        pushed to it get uploaded there, as the project's release workflow would."""
        owner_login = owner or full_name.split("/")[0]
        self.add_user(owner_login)
        with self.state.changing() as data:
            data["repos"][full_name.lower()] = {
                "id": self.state.next_id(), "full_name": full_name, "private": private,
                "default_branch": default_branch, "git_dir": str(Path(git_dir).resolve()),
                "owner": owner_login, "collaborators": {owner_login: "admin", **(collaborators or {})},
                "has_issues": has_issues, "releases": [], "issues": [], "publishes": publishes,
                "created_at": _now(),
            }

    def add_release(self, full_name: str, tag: str, *, name: str | None = None, body: str = "",
                    draft: bool = False, prerelease: bool = False, author: str | None = None) -> dict:
        with self.state.changing() as data:
            repo = data["repos"][full_name.lower()]
            release = _new_release(self.state, repo, {"tag_name": tag, "name": name if name is not None else tag,
                                                      "body": body, "draft": draft, "prerelease": prerelease},
                                   author or repo["owner"])
            repo["releases"].append(release)
            return dict(release)

    def add_pypi_release(self, project: str, version: str, *, files: list[str] | None = None,
                         yanked: bool = False, yanked_reason: str | None = None) -> None:
        with self.state.changing() as data:
            _publish(data, project, version, files)
            if yanked:
                _yank(data, project, version, yanked_reason)

    def yank(self, project: str, version: str, reason: str | None = None) -> None:
        """What a maintainer's click on PyPI's "Yank" button does."""
        with self.state.changing() as data:
            _yank(data, project, version, reason)

    def set_rate_limit(self, limit: int) -> None:
        """Requests per hour for each authenticated user (GitHub's default is 5000)."""
        with self.state.changing() as data:
            data["rate_limit"] = limit
            data["rate"] = {}

    # -- reading it back, for tests --

    def releases(self, full_name: str) -> list[dict]:
        with self.state.lock:
            return json.loads(json.dumps(self.state.data["repos"][full_name.lower()]["releases"]))

    def issues(self, full_name: str) -> list[dict]:
        with self.state.lock:
            return json.loads(json.dumps(self.state.data["repos"][full_name.lower()]["issues"]))

    def pypi_project(self, project: str) -> dict | None:
        with self.state.changing() as data:
            _sync_workflows(data)
            found = data["pypi"].get(normalize_project(project))
            return json.loads(json.dumps(found)) if found else None


def _new_release(state: State, repo: dict, body: dict, author: str) -> dict:
    release_id = state.next_id()
    now = _now()
    return {
        "id": release_id, "tag_name": body["tag_name"], "target_commitish": body.get("target_commitish")
        or repo["default_branch"], "name": body.get("name"), "body": body.get("body") or "",
        "draft": bool(body.get("draft", False)), "prerelease": bool(body.get("prerelease", False)),
        "created_at": now, "published_at": None if body.get("draft") else now, "author": author,
    }


class _Api:
    """One request: routing, access checks, and the handlers."""

    def __init__(self, state: State, base_url: str, method: str, path: str, query: dict[str, list[str]],
                 headers: Any, body: bytes) -> None:
        self.state = state
        self.base = base_url
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.raw_body = body
        self.extra_headers: dict[str, str] = {}

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json_body(self) -> dict:
        if not self.raw_body:
            return {}
        try:
            body = json.loads(self.raw_body)
        except ValueError:
            raise ApiError(400, "Problems parsing JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Problems parsing JSON")
        return body

    # -- routing --

    def handle(self) -> Reply:
        try:
            with self.state.lock:
                if self.path.startswith("/pypi/") or self.path.startswith("/_sandbox/"):
                    return self._route(_PYPI_ROUTES)
                caller = _caller(self.state, self.headers.get("Authorization"))
                self.extra_headers.update(caller.headers())
                self._count_rate(caller)
                reply = self._route(_GITHUB_ROUTES, caller)
        except ApiError as exc:
            reply = exc.reply
        reply.headers = {**self.extra_headers, **reply.headers}
        return reply

    def _route(self, routes: list, *extra: Any) -> Reply:
        for method, pattern, handler in routes:
            match = pattern.fullmatch(self.path)
            if match and method == self.method:
                return handler(self, *extra, **{k: unquote(v) for k, v in match.groupdict().items() if v is not None})
        raise ApiError(404, "Not Found")

    def _count_rate(self, caller: Caller) -> None:
        data = self.state.data
        key = caller.login or "anonymous"
        limit = data["rate_limit"] if caller.login else ANONYMOUS_RATE_LIMIT
        entry = data["rate"].get(key)
        now = int(time.time())
        if entry is None or entry["reset"] <= now:
            entry = data["rate"][key] = {"used": 0, "reset": now + 3600}
        spent = entry["used"] >= limit
        if not spent:
            entry["used"] += 1
        self.extra_headers.update({
            "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - entry["used"])),
            "X-RateLimit-Reset": str(entry["reset"]), "X-RateLimit-Used": str(entry["used"]),
            "X-RateLimit-Resource": "core",
        })
        self.state.save()
        if spent:
            who = f"user ID {caller.user_id}" if caller.login else "127.0.0.1"
            raise ApiError(403, f"API rate limit exceeded for {who}.",
                           f"{DOCS}/overview/rate-limits-for-the-rest-api")

    # -- access --

    def repo(self, caller: Caller, owner: str, name: str, need: str, doc: str) -> dict:
        """The repository, if `caller` may do `need` ("read", "contents", "issues") to it."""
        repo = self.state.data["repos"].get(f"{owner}/{name}".lower())
        not_found = ApiError(404, "Not Found", doc)
        if repo is None:
            raise not_found
        role = repo["collaborators"].get(caller.login or "")
        if caller.kind == "anonymous":
            if need != "read":
                raise ApiError(401, "Requires authentication", doc)
            if repo["private"]:
                raise not_found
            return repo
        if caller.kind == "classic":
            if "repo" in caller.scopes:
                covered = True
            else:
                covered = not repo["private"] and (need == "read" or "public_repo" in caller.scopes)
            if need != "read":
                self.extra_headers["X-Accepted-OAuth-Scopes"] = "repo"
            if not covered or (repo["private"] and role is None):
                raise not_found
        else:
            allowed = caller.repositories == "all" and repo["owner"] == caller.login or (
                isinstance(caller.repositories, list)
                and repo["full_name"].lower() in [r.lower() for r in caller.repositories]
            )
            if not allowed and (repo["private"] or need != "read"):
                raise not_found
            if need != "read":
                self.extra_headers["X-Accepted-GitHub-Permissions"] = f"{need}=write"
                if caller.permissions.get(need) != "write":
                    raise ApiError(403, "Resource not accessible by personal access token", doc)
        # Anyone may open an issue on a public repository; everything else needs push access.
        if need == "contents" or (need == "issues" and repo["private"]):
            if role not in WRITE_ROLES:
                raise not_found
        return repo

    # -- GitHub: repository --

    def get_repo(self, caller: Caller, owner: str, name: str) -> Reply:
        repo = self.repo(caller, owner, name, "read", f"{DOCS}/repos/repos#get-a-repository")
        return Reply(200, self._repo_json(repo, caller))

    def _repo_json(self, repo: dict, caller: Caller) -> dict:
        full = repo["full_name"]
        role = repo["collaborators"].get(caller.login or "")
        rank = {"admin": 5, "maintain": 4, "write": 3, "triage": 2, "read": 1}.get(role or "", 1 if not repo["private"] else 0)
        return {
            "id": repo["id"], "node_id": f"R_{repo['id']}", "name": full.split("/")[1], "full_name": full,
            "private": repo["private"], "visibility": "private" if repo["private"] else "public",
            "owner": {"login": repo["owner"], "id": self.state.data["users"].get(repo["owner"], 0), "type": "User"},
            "html_url": f"{self.base}/{full}", "url": f"{self.base}/repos/{full}",
            "clone_url": Path(repo["git_dir"]).as_uri(), "default_branch": repo["default_branch"],
            "has_issues": repo["has_issues"], "created_at": repo["created_at"],
            "permissions": {"admin": rank >= 5, "maintain": rank >= 4, "push": rank >= 3, "triage": rank >= 2,
                            "pull": rank >= 1},
        }

    # -- GitHub: git refs --

    def _ref_json(self, repo: dict, refname: str, kind: str, sha: str) -> dict:
        path = "tags" if kind == "tag" else "commits"
        api = f"{self.base}/repos/{repo['full_name']}"
        return {"ref": refname, "node_id": f"REF_{hashlib.sha1(refname.encode()).hexdigest()[:12]}",
                "url": f"{api}/git/{refname}", "object": {"sha": sha, "type": kind, "url": f"{api}/git/{path}/{sha}"}}

    def get_ref(self, caller: Caller, owner: str, name: str, ref: str) -> Reply:
        doc = f"{DOCS}/git/refs#get-a-reference"
        repo = self.repo(caller, owner, name, "read", doc)
        for refname, kind, sha in _refs(repo["git_dir"]):
            if refname == f"refs/{ref}":
                return Reply(200, self._ref_json(repo, refname, kind, sha))
        raise ApiError(404, "Not Found", doc)

    def get_tag_object(self, caller: Caller, owner: str, name: str, sha: str) -> Reply:
        doc = f"{DOCS}/git/tags#get-a-tag"
        repo = self.repo(caller, owner, name, "read", doc)
        if _object_type(repo["git_dir"], sha) != "tag":
            raise ApiError(404, "Not Found", doc)
        raw = _git(repo["git_dir"], "cat-file", "tag", sha).decode()
        headers, _, message = raw.partition("\n\n")
        fields = dict(line.split(" ", 1) for line in headers.splitlines() if " " in line)
        target_type = fields.get("type", "commit")
        api = f"{self.base}/repos/{repo['full_name']}/git"
        return Reply(200, {"node_id": f"TAG_{sha[:12]}", "sha": sha, "url": f"{api}/tags/{sha}", "tag": fields.get("tag"),
                           "message": message, "tagger": {"name": fields.get("tagger", "").split(" <")[0]},
                           "object": {"sha": fields["object"], "type": target_type,
                                      "url": f"{api}/{target_type}s/{fields['object']}"}})

    def matching_refs(self, caller: Caller, owner: str, name: str, ref: str = "") -> Reply:
        repo = self.repo(caller, owner, name, "read", f"{DOCS}/git/refs#list-matching-references")
        prefix = f"refs/{ref}"
        return Reply(200, [self._ref_json(repo, r, k, s) for r, k, s in _refs(repo["git_dir"]) if r.startswith(prefix)])

    def create_ref(self, caller: Caller, owner: str, name: str) -> Reply:
        doc = f"{DOCS}/git/refs#create-a-reference"
        repo = self.repo(caller, owner, name, "contents", doc)
        body = self.json_body()
        ref, sha = body.get("ref"), body.get("sha")
        if not isinstance(ref, str) or not isinstance(sha, str):
            raise ApiError(422, "Invalid request.\n\n\"ref\" and \"sha\" weren't supplied.", doc)
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise ApiError(422, "Reference name must start with 'refs/' and have at least two slashes.", doc)
        kind = _object_type(repo["git_dir"], sha)
        if kind is None:
            raise ApiError(422, "Object does not exist", doc)
        if any(r == ref for r, _, _ in _refs(repo["git_dir"])):
            raise ApiError(422, "Reference already exists", doc)
        try:
            _git(repo["git_dir"], "update-ref", ref, sha, ZERO_SHA)
        except GitFailed:
            raise ApiError(422, "Reference update failed", doc) from None
        return Reply(201, self._ref_json(repo, ref, kind, sha), {"Location": f"{self.base}/repos/{repo['full_name']}/git/{ref}"})

    def delete_ref(self, caller: Caller, owner: str, name: str, ref: str) -> Reply:
        doc = f"{DOCS}/git/refs#delete-a-reference"
        repo = self.repo(caller, owner, name, "contents", doc)
        refname = f"refs/{ref}"
        if not any(r == refname for r, _, _ in _refs(repo["git_dir"])):
            raise ApiError(422, "Reference does not exist", doc)
        _git(repo["git_dir"], "update-ref", "-d", refname)
        if refname.startswith("refs/tags/"):
            # GitHub turns a published release whose tag is deleted back into a draft.
            tag = refname[len("refs/tags/"):]
            changed = False
            for release in repo["releases"]:
                if release["tag_name"] == tag and not release["draft"]:
                    release["draft"] = True
                    changed = True
            if changed:
                self.state.save()
        return Reply(204)

    # -- GitHub: releases --

    def _release_json(self, repo: dict, release: dict) -> dict:
        api = f"{self.base}/repos/{repo['full_name']}/releases/{release['id']}"
        tag = release["tag_name"]
        html = f"{self.base}/{repo['full_name']}/releases/{'tag/' + quote(tag) if not release['draft'] else 'edit/' + quote(tag)}"
        author = release["author"]
        return {
            "url": api, "html_url": html, "assets_url": f"{api}/assets", "upload_url": f"{api}/assets{{?name,label}}",
            "tarball_url": f"{self.base}/repos/{repo['full_name']}/tarball/{quote(tag)}",
            "zipball_url": f"{self.base}/repos/{repo['full_name']}/zipball/{quote(tag)}",
            "id": release["id"], "node_id": f"RE_{release['id']}", "tag_name": tag,
            "target_commitish": release["target_commitish"], "name": release["name"], "body": release["body"],
            "draft": release["draft"], "prerelease": release["prerelease"], "created_at": release["created_at"],
            "published_at": release["published_at"],
            "author": {"login": author, "id": self.state.data["users"].get(author, 0), "type": "User"},
            "assets": [],
        }

    def list_releases(self, caller: Caller, owner: str, name: str) -> Reply:
        repo = self.repo(caller, owner, name, "read", f"{DOCS}/releases/releases#list-releases")
        can_write = repo["collaborators"].get(caller.login or "") in WRITE_ROLES
        # Drafts are visible only to people with push access; newest first.
        visible = [r for r in reversed(repo["releases"]) if can_write or not r["draft"]]
        return self._page([self._release_json(repo, r) for r in visible])

    def _find_release(self, repo: dict, release_id: str, doc: str) -> dict:
        for release in repo["releases"]:
            if str(release["id"]) == release_id:
                return release
        raise ApiError(404, "Not Found", doc)

    def release_by_tag(self, caller: Caller, owner: str, name: str, tag: str) -> Reply:
        doc = f"{DOCS}/releases/releases#get-a-release-by-tag-name"
        repo = self.repo(caller, owner, name, "read", doc)
        for release in reversed(repo["releases"]):
            if release["tag_name"] == tag and not release["draft"]:
                return Reply(200, self._release_json(repo, release))
        raise ApiError(404, "Not Found", doc)

    def get_release(self, caller: Caller, owner: str, name: str, release_id: str) -> Reply:
        doc = f"{DOCS}/releases/releases#get-a-release"
        repo = self.repo(caller, owner, name, "read", doc)
        return Reply(200, self._release_json(repo, self._find_release(repo, release_id, doc)))

    def create_release(self, caller: Caller, owner: str, name: str) -> Reply:
        doc = f"{DOCS}/releases/releases#create-a-release"
        repo = self.repo(caller, owner, name, "contents", doc)
        body = self.json_body()
        tag = body.get("tag_name")
        if not isinstance(tag, str) or not tag:
            raise ApiError(422, "Validation Failed", doc, [{"resource": "Release", "code": "missing_field", "field": "tag_name"}])
        if any(r["tag_name"] == tag and not r["draft"] for r in repo["releases"]):
            raise ApiError(422, "Validation Failed", doc, [{"resource": "Release", "code": "already_exists", "field": "tag_name"}])
        git_dir = repo["git_dir"]
        if not body.get("draft") and not any(r == f"refs/tags/{tag}" for r, _, _ in _refs(git_dir)):
            # Publishing a release for a missing tag creates the tag at target_commitish.
            sha = _resolve_commit(git_dir, body.get("target_commitish") or repo["default_branch"])
            if sha is None:
                raise ApiError(422, "Validation Failed", doc, [{"resource": "Release", "code": "invalid", "field": "target_commitish"}])
            _git(git_dir, "update-ref", f"refs/tags/{tag}", sha, ZERO_SHA)
        release = _new_release(self.state, repo, body, caller.login or "")
        repo["releases"].append(release)
        self.state.save()
        return Reply(201, self._release_json(repo, release), {"Location": self._release_json(repo, release)["url"]})

    def update_release(self, caller: Caller, owner: str, name: str, release_id: str) -> Reply:
        doc = f"{DOCS}/releases/releases#update-a-release"
        repo = self.repo(caller, owner, name, "contents", doc)
        body = self.json_body()
        release = self._find_release(repo, release_id, doc)
        for key in ("tag_name", "target_commitish", "name", "body", "draft", "prerelease"):
            if key in body:
                release[key] = body[key]
        if not release["draft"] and release["published_at"] is None:
            release["published_at"] = _now()
        self.state.save()
        return Reply(200, self._release_json(repo, release))

    def delete_release(self, caller: Caller, owner: str, name: str, release_id: str) -> Reply:
        doc = f"{DOCS}/releases/releases#delete-a-release"
        repo = self.repo(caller, owner, name, "contents", doc)
        release = self._find_release(repo, release_id, doc)
        repo["releases"].remove(release)
        self.state.save()
        return Reply(204)

    # -- GitHub: issues --

    def _issue_json(self, repo: dict, issue: dict) -> dict:
        api = f"{self.base}/repos/{repo['full_name']}/issues/{issue['number']}"
        return {
            "id": issue["id"], "node_id": f"I_{issue['id']}", "url": api,
            "html_url": f"{self.base}/{repo['full_name']}/issues/{issue['number']}", "number": issue["number"],
            "title": issue["title"], "body": issue["body"], "state": issue["state"],
            "labels": [{"name": label} for label in issue["labels"]],
            "user": {"login": issue["user"], "id": self.state.data["users"].get(issue["user"], 0), "type": "User"},
            "created_at": issue["created_at"], "updated_at": issue["created_at"], "comments": 0,
        }

    def create_issue(self, caller: Caller, owner: str, name: str) -> Reply:
        doc = f"{DOCS}/issues/issues#create-an-issue"
        repo = self.repo(caller, owner, name, "issues", doc)
        if not repo["has_issues"]:
            raise ApiError(410, "Issues are disabled for this repo", doc)
        body = self.json_body()
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ApiError(422, "Invalid request.\n\n\"title\" wasn't supplied.", doc)
        labels = [str(label) for label in body.get("labels") or []]
        can_triage = repo["collaborators"].get(caller.login or "") in WRITE_ROLES + ("triage",)
        issue = {"id": self.state.next_id(), "number": len(repo["issues"]) + 1, "title": title,
                 "body": body.get("body") or "", "state": "open", "labels": labels if can_triage else [],
                 "user": caller.login, "created_at": _now()}
        repo["issues"].append(issue)
        self.state.save()
        return Reply(201, self._issue_json(repo, issue))

    def list_issues(self, caller: Caller, owner: str, name: str) -> Reply:
        repo = self.repo(caller, owner, name, "read", f"{DOCS}/issues/issues#list-repository-issues")
        state = self.param("state", "open")
        creator = self.param("creator")
        labels = [x for x in (self.param("labels") or "").split(",") if x]
        found = [i for i in reversed(repo["issues"])
                 if (state == "all" or i["state"] == state) and (creator is None or i["user"] == creator)
                 and all(label in i["labels"] for label in labels)]
        return self._page([self._issue_json(repo, i) for i in found])

    # -- GitHub: contents --

    def get_contents(self, caller: Caller, owner: str, name: str, path: str = "") -> Reply:
        doc = f"{DOCS}/repos/contents#get-repository-content"
        repo = self.repo(caller, owner, name, "read", doc)
        git_dir, full = repo["git_dir"], repo["full_name"]
        ref = self.param("ref") or repo["default_branch"]
        commit = _resolve_commit(git_dir, ref)
        if commit is None:
            raise ApiError(404, f"No commit found for the ref {ref}", doc)
        path = path.strip("/")
        api = f"{self.base}/repos/{full}/contents"

        def entry(item_path: str, kind: str, sha: str, size: int) -> dict:
            blob = kind == "blob"
            return {"type": {"blob": "file", "tree": "dir"}.get(kind, "submodule"), "size": size,
                    "name": item_path.rsplit("/", 1)[-1], "path": item_path, "sha": sha,
                    "url": f"{api}/{quote(item_path)}?ref={quote(ref)}",
                    "git_url": f"{self.base}/repos/{full}/git/{'blobs' if blob else 'trees'}/{sha}",
                    "html_url": f"{self.base}/{full}/{'blob' if blob else 'tree'}/{quote(ref)}/{quote(item_path)}",
                    "download_url": f"{self.base}/raw/{full}/{quote(ref)}/{quote(item_path)}" if blob else None}

        if path:
            found = [e for e in _ls_tree(git_dir, commit, path) if e[0] == path]
            if not found:
                raise ApiError(404, "Not Found", doc)
            item_path, kind, sha, size = found[0]
            if kind == "blob":
                content = _git(git_dir, "cat-file", "blob", sha)
                encoded = base64.encodebytes(content).decode()  # wrapped lines, as GitHub sends them
                return Reply(200, {**entry(item_path, kind, sha, size), "encoding": "base64", "content": encoded})
        return Reply(200, [entry(*e) for e in _ls_tree(git_dir, commit, path + "/" if path else None)])

    # -- pagination --

    def _page(self, items: list) -> Reply:
        try:
            per_page = max(1, min(100, int(self.param("per_page", "30") or 30)))
            page = max(1, int(self.param("page", "1") or 1))
        except ValueError:
            raise ApiError(400, "Invalid pagination parameters") from None
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []

        def link(number: int, rel: str) -> str:
            query = {k: v[0] for k, v in self.query.items()}
            query.update(per_page=str(per_page), page=str(number))
            return f'<{self.base}{self.path}?{urlencode(query)}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        return Reply(200, chunk, {"Link": ", ".join(links)} if links else {})

    # -- PyPI --

    def pypi_project(self, project: str) -> Reply:
        return self._pypi(project, None)

    def pypi_release(self, project: str, version: str) -> Reply:
        return self._pypi(project, version)

    def _pypi(self, project: str, version: str | None) -> Reply:
        data = self.state.data
        if _sync_workflows(data):
            self.state.save()
        entry = data["pypi"].get(normalize_project(project))
        if entry is None or not entry["releases"]:
            return Reply(404, {"message": "Not Found"})
        if project != entry["name"]:
            tail = f"/{version}/json" if version else "/json"
            return Reply(301, None, {"Location": f"{self.base}/pypi/{entry['name']}{tail}"})
        releases = entry["releases"]
        if version is None:
            chosen = _latest(releases)
        else:
            chosen = next((v for v in releases if _same_version(v, version)), None)
            if chosen is None:
                return Reply(404, {"message": "Not Found"})
        release = releases[chosen]
        info = {
            "name": entry["name"], "version": chosen, "summary": entry.get("summary", ""),
            "requires_python": release.get("requires_python"), "yanked": release["yanked"],
            "yanked_reason": release["yanked_reason"],
            "package_url": f"https://pypi.org/project/{entry['name']}/",
            "project_url": f"https://pypi.org/project/{entry['name']}/",
            "release_url": f"https://pypi.org/project/{entry['name']}/{chosen}/",
        }
        body: dict[str, Any] = {"info": info, "last_serial": entry["last_serial"],
                                "urls": release["files"], "vulnerabilities": []}
        if version is None:
            body["releases"] = {v: r["files"] for v, r in releases.items()}
        return Reply(200, body, {"X-PyPI-Last-Serial": str(entry["last_serial"])})

    def sandbox_yank(self, project: str, version: str) -> Reply:
        body = self.json_body()
        try:
            _yank(self.state.data, project, version, body.get("reason"))
        except KeyError:
            return Reply(404, {"message": "Not Found"})
        self.state.save()
        return Reply(200, {"yanked": True, "project": project, "version": version})


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _latest(releases: dict) -> str:
    def key(version: str) -> tuple:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return (0, 0, Version("0"))
        return (not releases[version]["yanked"], not parsed.is_prerelease, parsed)

    return max(releases, key=key)


def _publish(data: dict, project: str, version: str, files: list[str] | None = None) -> None:
    key = normalize_project(project)
    entry = data["pypi"].setdefault(key, {"name": project, "releases": {}, "last_serial": 0})
    dist = re.sub(r"[-.]+", "_", project).lower()
    names = files if files is not None else [f"{dist}-{version}.tar.gz", f"{dist}-{version}-py3-none-any.whl"]
    now = datetime.now(timezone.utc)
    out = []
    for filename in names:
        digest = hashlib.sha256(f"{filename}".encode()).hexdigest()
        wheel = filename.endswith(".whl")
        out.append({
            "filename": filename, "packagetype": "bdist_wheel" if wheel else "sdist",
            "python_version": "py3" if wheel else "source", "size": 1000 + len(filename),
            "digests": {"sha256": digest, "md5": hashlib.md5(filename.encode()).hexdigest(),
                        "blake2b_256": hashlib.blake2b(filename.encode(), digest_size=32).hexdigest()},
            "md5_digest": hashlib.md5(filename.encode()).hexdigest(),
            "upload_time": now.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "url": f"https://files.pythonhosted.org/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
            "yanked": False, "yanked_reason": None, "requires_python": None, "comment_text": "",
            "has_sig": False, "downloads": -1,
        })
    entry["releases"][version] = {"files": out, "yanked": False, "yanked_reason": None}
    entry["last_serial"] += 1


def _yank(data: dict, project: str, version: str, reason: str | None) -> None:
    """PyPI yanks whole releases: every file of the version is marked, with the reason."""
    entry = data["pypi"][normalize_project(project)]
    chosen = next(v for v in entry["releases"] if _same_version(v, version))
    release = entry["releases"][chosen]
    release["yanked"] = True
    release["yanked_reason"] = reason or None
    for file in release["files"]:
        file["yanked"] = True
        file["yanked_reason"] = reason or None
    entry["last_serial"] += 1


def _sync_workflows(data: dict) -> bool:
    """Upload every version tag of a publishing repository that PyPI does not have yet."""
    changed = False
    for repo in data["repos"].values():
        publishes = repo.get("publishes")
        if not publishes:
            continue
        prefix = publishes.get("tag_prefix", "v")
        entry = data["pypi"].get(normalize_project(publishes["project"]), {"releases": {}})
        for refname, _, _ in _refs(repo["git_dir"]):
            if not refname.startswith(f"refs/tags/{prefix}"):
                continue
            text = refname[len(f"refs/tags/{prefix}"):]
            try:
                Version(text)
            except InvalidVersion:
                continue
            if not any(_same_version(v, text) for v in entry["releases"]):
                _publish(data, publishes["project"], text)
                entry = data["pypi"][normalize_project(publishes["project"])]
                changed = True
    return changed


_O = r"(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)"
_GITHUB_ROUTES: list[tuple[str, re.Pattern, Callable]] = [
    ("GET", re.compile(rf"/repos/{_O}"), _Api.get_repo),
    ("GET", re.compile(rf"/repos/{_O}/git/ref/(?P<ref>.+)"), _Api.get_ref),
    ("GET", re.compile(rf"/repos/{_O}/git/tags/(?P<sha>[0-9a-f]{{40}})"), _Api.get_tag_object),
    ("GET", re.compile(rf"/repos/{_O}/git/matching-refs(?:/(?P<ref>.*))?"), _Api.matching_refs),
    ("POST", re.compile(rf"/repos/{_O}/git/refs"), _Api.create_ref),
    ("DELETE", re.compile(rf"/repos/{_O}/git/refs/(?P<ref>.+)"), _Api.delete_ref),
    ("GET", re.compile(rf"/repos/{_O}/releases"), _Api.list_releases),
    ("POST", re.compile(rf"/repos/{_O}/releases"), _Api.create_release),
    ("GET", re.compile(rf"/repos/{_O}/releases/tags/(?P<tag>.+)"), _Api.release_by_tag),
    ("GET", re.compile(rf"/repos/{_O}/releases/(?P<release_id>\d+)"), _Api.get_release),
    ("PATCH", re.compile(rf"/repos/{_O}/releases/(?P<release_id>\d+)"), _Api.update_release),
    ("DELETE", re.compile(rf"/repos/{_O}/releases/(?P<release_id>\d+)"), _Api.delete_release),
    ("POST", re.compile(rf"/repos/{_O}/issues"), _Api.create_issue),
    ("GET", re.compile(rf"/repos/{_O}/issues"), _Api.list_issues),
    ("GET", re.compile(rf"/repos/{_O}/contents(?:/(?P<path>.*))?"), _Api.get_contents),
]
_PYPI_ROUTES: list[tuple[str, re.Pattern, Callable]] = [
    ("GET", re.compile(r"/pypi/(?P<project>[^/]+)/json/?"), _Api.pypi_project),
    ("GET", re.compile(r"/pypi/(?P<project>[^/]+)/(?P<version>[^/]+)/json/?"), _Api.pypi_release),
    ("POST", re.compile(r"/_sandbox/pypi/(?P<project>[^/]+)/(?P<version>[^/]+)/yank"), _Api.sandbox_yank),
]


def _handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "backout-forge-sandbox"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # requests are not logged: their headers carry tokens

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            host, port = self.server.server_address[:2]
            api = _Api(state, f"http://{host}:{port}", self.command, parts.path.rstrip("/") or "/",
                       parse_qs(parts.query), self.headers, body)
            try:
                reply = api.handle()
            except Exception as exc:  # noqa: BLE001 - a sandbox bug answers 500, like a server would
                reply = Reply(500, {"message": f"sandbox error: {type(exc).__name__}: {exc}"})
            payload = b"" if reply.body is None else json.dumps(reply.body, indent=1).encode()
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-GitHub-Request-Id", hashlib.sha1(os.urandom(8)).hexdigest()[:16].upper())
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _serve

    return Handler


def start(port: int = 0, state_path: str | Path = ".backout/forge.json", host: str = "127.0.0.1") -> Forge:
    """Start the forge sandbox on `host:port` (0 picks a free port) with its state in `state_path`."""
    state = State(Path(state_path))
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True
    forge = Forge(state, server)
    forge._thread.start()
    return forge


# ---------------------------------------------------------------------------------------------
# a demo package, for rehearsals


DEMO_REPO = "acme/widgets"
DEMO_TOKEN = "ghp_sandboxdemotoken0000000000000000000000"


def _run_git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
           "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com", "GIT_TERMINAL_PROMPT": "0"}
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise GitFailed(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def demo_package(forge: Forge, workdir: str | Path, *, repo: str = DEMO_REPO, project: str = "widgets",
                 versions: tuple[str, ...] = ("1.2.0", "1.2.1", "1.2.2", "1.2.3"), token: str = DEMO_TOKEN) -> dict:
    """A package whose last release is bad: a bare repository standing for GitHub's copy, a
    working checkout of it, a tag, a GitHub release and PyPI files for each version, and a classic
    token with the `repo` scope. Returns where everything is."""
    workdir = Path(workdir).resolve()
    bare, checkout = workdir / "remote.git", workdir / "checkout"
    owner = repo.split("/")[0]
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    subprocess.run(["git", "init", "--quiet", "--initial-branch=main", str(checkout)], check=True)
    _run_git(checkout, "remote", "add", "origin", str(bare))
    package = checkout / "src" / project
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The widgets library."""\n')
    changelog: list[str] = []
    for number, version in enumerate(versions):
        bad = number == len(versions) - 1
        (checkout / "pyproject.toml").write_text(
            f'[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{project}"\nversion = "{version}"\ndescription = "Widgets for everyone"\n'
            f'requires-python = ">=3.9"\n'
        )
        (package / "core.py").write_text(
            "def spin(n):\n    return n * 2\n" if not bad else "def spin(n):\n    return n / 0  # oops\n"
        )
        change = "Faster spinning (it divides by zero)" if bad else f"Improvements in {version}"
        changelog[0:0] = [f"## [{version}] - 2024-{number + 1:02d}-15\n", "\n", "### Changed\n", "\n", f"- {change}\n", "\n"]
        links = [f"[{v}]: https://github.com/{repo}/releases/tag/v{v}\n" for v in reversed(versions[: number + 1])]
        (checkout / "CHANGELOG.md").write_text(
            "# Changelog\n\nAll notable changes to this project are documented in this file.\n\n"
            "The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/),\n"
            "and this project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).\n\n"
            "## [Unreleased]\n\n" + "".join(changelog) + "".join(links)
        )
        _run_git(checkout, "add", "-A")
        _run_git(checkout, "commit", "--quiet", "-m", f"Release {version}")
        _run_git(checkout, "tag", "-a", f"v{version}", "-m", f"Release {version}")
    _run_git(checkout, "push", "--quiet", "origin", "main", "--tags")
    forge.add_repo(repo, git_dir=bare, owner=owner, publishes={"project": project, "tag_prefix": "v"})
    forge.add_token(token, login=owner, scopes=["repo", "workflow"])
    for version in versions:
        forge.add_release(repo, f"v{version}", name=version, body=f"Release notes of {version}.")
    forge.pypi_project(project)  # the release workflow has uploaded every tag
    return {"repo": repo, "project": project, "bare": str(bare), "checkout": str(checkout), "token": token,
            "bad": versions[-1], "good": versions[-2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backout_sandbox.forge",
                                     description="Serve the GitHub REST subset and PyPI JSON API on loopback.")
    parser.add_argument("--port", type=int, default=5011, help="port on 127.0.0.1 (default 5011; 0 picks one)")
    parser.add_argument("--state", default=".backout/forge.json", help="state file (default .backout/forge.json)")
    parser.add_argument("--demo", metavar="DIR", help="also create a demo package with a bad release in DIR")
    args = parser.parse_args(argv)
    forge = start(port=args.port, state_path=args.state)
    print(f"forge sandbox on {forge.url} (state {args.state})", flush=True)
    print(f"  export BACKOUT_GITHUB_API_URL={forge.url} BACKOUT_PYPI_URL={forge.url}", flush=True)
    if args.demo:
        demo = demo_package(forge, args.demo)
        print(f"  export GITHUB_TOKEN={demo['token']}", flush=True)
        print(f"  backout package-rollback --repo {demo['repo']} --bad {demo['bad']} --checkout {demo['checkout']}"
              f" --dry-run", flush=True)
        print(f"  yank on the sandbox's PyPI: curl -X POST {forge.url}/_sandbox/pypi/{demo['project']}/"
              f"{demo['bad']}/yank -d '{{\"reason\": \"broken\"}}'", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    forge.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
