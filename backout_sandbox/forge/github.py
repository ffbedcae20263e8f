"""GitHub's REST API, the part package rollbacks use: repositories, git refs and tags, releases,
issues and contents.

A repository's git data is a real bare repository on disk: the refs and contents routes read and
write it with git itself, so a `git push` to it shows up in the API at once, as on GitHub. Deleting
a tag turns its release into a draft, as on GitHub.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from backout_sandbox.core.messages import Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.core.store import JsonStore, now
from backout_sandbox.forge import git
from backout_sandbox.forge.auth import WRITE_ROLES, Call, repo_for, role
from backout_sandbox.forge.errors import DOCS, GitHubError

REPO = "/repos/{owner}/{name}"
PER_PAGE = 30
PER_PAGE_MAX = 100


def new_release(release_id: int, repo: dict[str, Any], body: dict[str, Any], author: str) -> dict[str, Any]:
    at = now()
    return {
        "id": release_id, "tag_name": body["tag_name"], "target_commitish": body.get("target_commitish")
        or repo["default_branch"], "name": body.get("name"), "body": body.get("body") or "",
        "draft": bool(body.get("draft", False)), "prerelease": bool(body.get("prerelease", False)),
        "created_at": at, "published_at": None if body.get("draft") else at, "author": author,
    }


def next_id(data: dict[str, Any]) -> int:
    """A new id for a repository, release or issue (one sequence, as GitHub's ids never repeat)."""
    data["next_id"] += 1
    return int(data["next_id"])


class GitHub:
    def __init__(self, store: JsonStore) -> None:
        self.store = store

    def register(self, router: Router) -> None:
        for method, pattern, handler in (
            ("GET", REPO, self.get_repo),
            ("GET", f"{REPO}/git/ref/{{ref:path}}", self.get_ref),
            ("GET", f"{REPO}/git/tags/{{sha:sha}}", self.get_tag_object),
            ("GET", f"{REPO}/git/matching-refs", self.matching_refs),
            ("GET", f"{REPO}/git/matching-refs/{{ref:path}}", self.matching_refs),
            ("POST", f"{REPO}/git/refs", self.create_ref),
            ("DELETE", f"{REPO}/git/refs/{{ref:path}}", self.delete_ref),
            ("GET", f"{REPO}/releases", self.list_releases),
            ("POST", f"{REPO}/releases", self.create_release),
            ("GET", f"{REPO}/releases/tags/{{tag:path}}", self.release_by_tag),
            ("GET", f"{REPO}/releases/{{release_id:int}}", self.get_release),
            ("PATCH", f"{REPO}/releases/{{release_id:int}}", self.update_release),
            ("DELETE", f"{REPO}/releases/{{release_id:int}}", self.delete_release),
            ("POST", f"{REPO}/issues", self.create_issue),
            ("GET", f"{REPO}/issues", self.list_issues),
            ("GET", f"{REPO}/contents", self.get_contents),
            ("GET", f"{REPO}/contents/{{path:path}}", self.get_contents),
        ):
            router.add(method, pattern, handler)

    def _user(self, login: str) -> dict[str, Any]:
        return {"login": login, "id": self.store.data["users"].get(login, 0), "type": "User"}

    # -- repository --

    def get_repo(self, call: Call, owner: str, name: str) -> Response:
        repo = repo_for(call, self.store.data, owner, name, "read", f"{DOCS}/repos/repos#get-a-repository")
        full, base = repo["full_name"], call.req.base_url
        rank = {"admin": 5, "maintain": 4, "write": 3, "triage": 2, "read": 1}.get(
            role(repo, call.caller) or "", 1 if not repo["private"] else 0)
        return Response(200, {
            "id": repo["id"], "node_id": f"R_{repo['id']}", "name": full.split("/")[1], "full_name": full,
            "private": repo["private"], "visibility": "private" if repo["private"] else "public",
            "owner": self._user(repo["owner"]), "html_url": f"{base}/{full}", "url": f"{base}/repos/{full}",
            "clone_url": Path(repo["git_dir"]).as_uri(), "default_branch": repo["default_branch"],
            "has_issues": repo["has_issues"], "created_at": repo["created_at"],
            "permissions": {"admin": rank >= 5, "maintain": rank >= 4, "push": rank >= 3, "triage": rank >= 2,
                            "pull": rank >= 1},
        })

    # -- git refs and tags --

    def _ref_json(self, call: Call, repo: dict[str, Any], refname: str, kind: str, sha: str) -> dict[str, Any]:
        path = "tags" if kind == "tag" else "commits"
        api = f"{call.req.base_url}/repos/{repo['full_name']}"
        return {"ref": refname, "node_id": f"REF_{hashlib.sha1(refname.encode()).hexdigest()[:12]}",
                "url": f"{api}/git/{refname}", "object": {"sha": sha, "type": kind, "url": f"{api}/git/{path}/{sha}"}}

    def get_ref(self, call: Call, owner: str, name: str, ref: str) -> Response:
        doc = f"{DOCS}/git/refs#get-a-reference"
        repo = repo_for(call, self.store.data, owner, name, "read", doc)
        for refname, kind, sha in git.refs(repo["git_dir"]):
            if refname == f"refs/{ref}":
                return Response(200, self._ref_json(call, repo, refname, kind, sha))
        raise GitHubError(404, "Not Found", doc)

    def get_tag_object(self, call: Call, owner: str, name: str, sha: str) -> Response:
        doc = f"{DOCS}/git/tags#get-a-tag"
        repo = repo_for(call, self.store.data, owner, name, "read", doc)
        if git.object_type(repo["git_dir"], sha) != "tag":
            raise GitHubError(404, "Not Found", doc)
        raw = git.git(repo["git_dir"], "cat-file", "tag", sha).decode()
        headers, _, message = raw.partition("\n\n")
        fields = dict(line.split(" ", 1) for line in headers.splitlines() if " " in line)
        target_type = fields.get("type", "commit")
        api = f"{call.req.base_url}/repos/{repo['full_name']}/git"
        return Response(200, {"node_id": f"TAG_{sha[:12]}", "sha": sha, "url": f"{api}/tags/{sha}",
                              "tag": fields.get("tag"), "message": message,
                              "tagger": {"name": fields.get("tagger", "").split(" <")[0]},
                              "object": {"sha": fields["object"], "type": target_type,
                                         "url": f"{api}/{target_type}s/{fields['object']}"}})

    def matching_refs(self, call: Call, owner: str, name: str, ref: str = "") -> Response:
        repo = repo_for(call, self.store.data, owner, name, "read", f"{DOCS}/git/refs#list-matching-references")
        prefix = f"refs/{ref}"
        return Response(200, [self._ref_json(call, repo, r, k, s) for r, k, s in git.refs(repo["git_dir"])
                              if r.startswith(prefix)])

    def create_ref(self, call: Call, owner: str, name: str) -> Response:
        doc = f"{DOCS}/git/refs#create-a-reference"
        repo = repo_for(call, self.store.data, owner, name, "contents", doc)
        body = call.req.json_object()
        ref, sha = body.get("ref"), body.get("sha")
        if not isinstance(ref, str) or not isinstance(sha, str):
            raise GitHubError(422, "Invalid request.\n\n\"ref\" and \"sha\" weren't supplied.", doc)
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise GitHubError(422, "Reference name must start with 'refs/' and have at least two slashes.", doc)
        kind = git.object_type(repo["git_dir"], sha)
        if kind is None:
            raise GitHubError(422, "Object does not exist", doc)
        if git.has_ref(repo["git_dir"], ref):
            raise GitHubError(422, "Reference already exists", doc)
        try:
            git.git(repo["git_dir"], "update-ref", ref, sha, git.ZERO_SHA)
        except git.GitFailed:
            raise GitHubError(422, "Reference update failed", doc) from None
        return Response(201, self._ref_json(call, repo, ref, kind, sha),
                        {"Location": f"{call.req.base_url}/repos/{repo['full_name']}/git/{ref}"})

    def delete_ref(self, call: Call, owner: str, name: str, ref: str) -> Response:
        doc = f"{DOCS}/git/refs#delete-a-reference"
        repo = repo_for(call, self.store.data, owner, name, "contents", doc)
        refname = f"refs/{ref}"
        if not git.has_ref(repo["git_dir"], refname):
            raise GitHubError(422, "Reference does not exist", doc)
        git.git(repo["git_dir"], "update-ref", "-d", refname)
        if refname.startswith("refs/tags/"):
            # GitHub turns a published release whose tag is deleted back into a draft.
            tag = refname[len("refs/tags/"):]
            with self.store.change():
                for release in repo["releases"]:
                    if release["tag_name"] == tag:
                        release["draft"] = True
        return Response(204)

    # -- releases --

    def _release_json(self, call: Call, repo: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
        base, full = call.req.base_url, repo["full_name"]
        api = f"{base}/repos/{full}/releases/{release['id']}"
        tag = release["tag_name"]
        html = f"{base}/{full}/releases/{'tag/' + quote(tag) if not release['draft'] else 'edit/' + quote(tag)}"
        return {
            "url": api, "html_url": html, "assets_url": f"{api}/assets", "upload_url": f"{api}/assets{{?name,label}}",
            "tarball_url": f"{base}/repos/{full}/tarball/{quote(tag)}",
            "zipball_url": f"{base}/repos/{full}/zipball/{quote(tag)}",
            "id": release["id"], "node_id": f"RE_{release['id']}", "tag_name": tag,
            "target_commitish": release["target_commitish"], "name": release["name"], "body": release["body"],
            "draft": release["draft"], "prerelease": release["prerelease"], "created_at": release["created_at"],
            "published_at": release["published_at"], "author": self._user(release["author"]), "assets": [],
        }

    def list_releases(self, call: Call, owner: str, name: str) -> Response:
        repo = repo_for(call, self.store.data, owner, name, "read", f"{DOCS}/releases/releases#list-releases")
        can_write = role(repo, call.caller) in WRITE_ROLES
        # Drafts are visible only to people with push access; newest first.
        visible = [r for r in reversed(repo["releases"]) if can_write or not r["draft"]]
        return link_page([self._release_json(call, repo, r) for r in visible], call.req)

    def _find_release(self, repo: dict[str, Any], release_id: str, doc: str) -> dict[str, Any]:
        for release in repo["releases"]:
            if str(release["id"]) == release_id:
                return release
        raise GitHubError(404, "Not Found", doc)

    def release_by_tag(self, call: Call, owner: str, name: str, tag: str) -> Response:
        doc = f"{DOCS}/releases/releases#get-a-release-by-tag-name"
        repo = repo_for(call, self.store.data, owner, name, "read", doc)
        for release in reversed(repo["releases"]):
            if release["tag_name"] == tag and not release["draft"]:
                return Response(200, self._release_json(call, repo, release))
        raise GitHubError(404, "Not Found", doc)

    def get_release(self, call: Call, owner: str, name: str, release_id: str) -> Response:
        doc = f"{DOCS}/releases/releases#get-a-release"
        repo = repo_for(call, self.store.data, owner, name, "read", doc)
        return Response(200, self._release_json(call, repo, self._find_release(repo, release_id, doc)))

    def create_release(self, call: Call, owner: str, name: str) -> Response:
        doc = f"{DOCS}/releases/releases#create-a-release"
        repo = repo_for(call, self.store.data, owner, name, "contents", doc)
        body = call.req.json_object()
        tag = body.get("tag_name")
        if not isinstance(tag, str) or not tag:
            raise GitHubError(422, "Validation Failed", doc,
                              [{"resource": "Release", "code": "missing_field", "field": "tag_name"}])
        if any(r["tag_name"] == tag and not r["draft"] for r in repo["releases"]):
            raise GitHubError(422, "Validation Failed", doc,
                              [{"resource": "Release", "code": "already_exists", "field": "tag_name"}])
        git_dir = repo["git_dir"]
        if not body.get("draft") and not git.has_ref(git_dir, f"refs/tags/{tag}"):
            # Publishing a release for a missing tag creates the tag at target_commitish.
            sha = git.resolve_commit(git_dir, body.get("target_commitish") or repo["default_branch"])
            if sha is None:
                raise GitHubError(422, "Validation Failed", doc,
                                  [{"resource": "Release", "code": "invalid", "field": "target_commitish"}])
            git.git(git_dir, "update-ref", f"refs/tags/{tag}", sha, git.ZERO_SHA)
        with self.store.change() as data:
            release = new_release(next_id(data), repo, body, call.caller.login or "")
            repo["releases"].append(release)
        answer = self._release_json(call, repo, release)
        return Response(201, answer, {"Location": answer["url"]})

    def update_release(self, call: Call, owner: str, name: str, release_id: str) -> Response:
        doc = f"{DOCS}/releases/releases#update-a-release"
        repo = repo_for(call, self.store.data, owner, name, "contents", doc)
        body = call.req.json_object()
        release = self._find_release(repo, release_id, doc)
        with self.store.change():
            for key in ("tag_name", "target_commitish", "name", "body", "draft", "prerelease"):
                if key in body:
                    release[key] = body[key]
            if not release["draft"] and release["published_at"] is None:
                release["published_at"] = now()
        return Response(200, self._release_json(call, repo, release))

    def delete_release(self, call: Call, owner: str, name: str, release_id: str) -> Response:
        doc = f"{DOCS}/releases/releases#delete-a-release"
        repo = repo_for(call, self.store.data, owner, name, "contents", doc)
        release = self._find_release(repo, release_id, doc)
        with self.store.change():
            repo["releases"].remove(release)
        return Response(204)

    # -- issues --

    def _issue_json(self, call: Call, repo: dict[str, Any], issue: dict[str, Any]) -> dict[str, Any]:
        html = f"{call.req.base_url}/{repo['full_name']}/issues/{issue['number']}"
        return {
            "id": issue["id"], "node_id": f"I_{issue['id']}",
            "url": f"{call.req.base_url}/repos/{repo['full_name']}/issues/{issue['number']}",
            "html_url": html, "number": issue["number"],
            "title": issue["title"], "body": issue["body"], "state": issue["state"],
            "labels": [{"name": label} for label in issue["labels"]], "user": self._user(issue["user"]),
            "created_at": issue["created_at"], "updated_at": issue["created_at"], "comments": 0,
        }

    def create_issue(self, call: Call, owner: str, name: str) -> Response:
        doc = f"{DOCS}/issues/issues#create-an-issue"
        repo = repo_for(call, self.store.data, owner, name, "issues", doc)
        if not repo["has_issues"]:
            raise GitHubError(410, "Issues are disabled for this repo", doc)
        body = call.req.json_object()
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise GitHubError(422, "Invalid request.\n\n\"title\" wasn't supplied.", doc)
        labels = [str(label) for label in body.get("labels") or []]
        can_triage = role(repo, call.caller) in WRITE_ROLES + ("triage",)
        with self.store.change() as data:
            issue = {"id": next_id(data), "number": len(repo["issues"]) + 1, "title": title,
                     "body": body.get("body") or "", "state": "open", "labels": labels if can_triage else [],
                     "user": call.caller.login, "created_at": now()}
            repo["issues"].append(issue)
        return Response(201, self._issue_json(call, repo, issue))

    def list_issues(self, call: Call, owner: str, name: str) -> Response:
        repo = repo_for(call, self.store.data, owner, name, "read", f"{DOCS}/issues/issues#list-repository-issues")
        req = call.req
        state = req.param("state") or "open"
        creator = req.param("creator")
        labels = [x for x in (req.param("labels") or "").split(",") if x]
        found = [i for i in reversed(repo["issues"])
                 if (state == "all" or i["state"] == state) and (creator is None or i["user"] == creator)
                 and all(label in i["labels"] for label in labels)]
        return link_page([self._issue_json(call, repo, i) for i in found], req)

    # -- contents --

    def get_contents(self, call: Call, owner: str, name: str, path: str = "") -> Response:
        doc = f"{DOCS}/repos/contents#get-repository-content"
        repo = repo_for(call, self.store.data, owner, name, "read", doc)
        git_dir, full, base = repo["git_dir"], repo["full_name"], call.req.base_url
        ref = call.req.param("ref") or repo["default_branch"]
        commit = git.resolve_commit(git_dir, ref)
        if commit is None:
            raise GitHubError(404, f"No commit found for the ref {ref}", doc)
        path = path.strip("/")

        def entry(item_path: str, kind: str, sha: str, size: int) -> dict[str, Any]:
            blob = kind == "blob"
            return {"type": {"blob": "file", "tree": "dir"}.get(kind, "submodule"), "size": size,
                    "name": item_path.rsplit("/", 1)[-1], "path": item_path, "sha": sha,
                    "url": f"{base}/repos/{full}/contents/{quote(item_path)}?ref={quote(ref)}",
                    "git_url": f"{base}/repos/{full}/git/{'blobs' if blob else 'trees'}/{sha}",
                    "html_url": f"{base}/{full}/{'blob' if blob else 'tree'}/{quote(ref)}/{quote(item_path)}",
                    "download_url": f"{base}/raw/{full}/{quote(ref)}/{quote(item_path)}" if blob else None}

        if path:
            found = [e for e in git.ls_tree(git_dir, commit, path) if e[0] == path]
            if not found:
                raise GitHubError(404, "Not Found", doc)
            item_path, kind, sha, size = found[0]
            if kind == "blob":
                content = git.git(git_dir, "cat-file", "blob", sha)
                encoded = base64.encodebytes(content).decode()  # wrapped lines, as GitHub sends them
                return Response(200, {**entry(item_path, kind, sha, size), "encoding": "base64", "content": encoded})
        return Response(200, [entry(*e) for e in git.ls_tree(git_dir, commit, path + "/" if path else None)])


def link_page(items: list[dict[str, Any]], req: Request) -> Response:
    """The page of `items` that `?per_page=30&page=2` asks for (at most 100 a page), with the
    neighbouring pages in a Link header: `<...?page=3>; rel="next", <...?page=5>; rel="last"`."""
    try:
        per_page = max(1, min(PER_PAGE_MAX, int(req.param("per_page") or PER_PAGE)))
        page = max(1, int(req.param("page") or 1))
    except ValueError:
        raise GitHubError(400, "Invalid pagination parameters") from None
    last = max(1, -(-len(items) // per_page))

    def link(number: int, rel: str) -> str:
        query = {k: v[0] for k, v in req.query.items()}
        query.update(per_page=str(per_page), page=str(number))
        return f'<{req.base_url}{req.raw_path}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page > 1:
        links += [link(page - 1, "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    return Response(200, items[(page - 1) * per_page: page * per_page], {"Link": ", ".join(links)} if links else {})
