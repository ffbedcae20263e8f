"""PyPI's JSON API: `/pypi/<project>/json` and `/pypi/<project>/<version>/json` with `urls`, per-file
and per-release `yanked` and `yanked_reason`, and name normalisation with a redirect to the
canonical name.

Yanking is done in PyPI's web pages, so the forge has a sandbox-only route for it,
`POST /_sandbox/pypi/<project>/<version>/yank`. A repository can be linked to a project
(`publishes`): every version tag pushed to it is then "uploaded" by a stand-in for the project's
release workflow the next time PyPI is read.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from packaging.version import InvalidVersion, Version

from backout_sandbox.core.messages import Request, Response
from backout_sandbox.core.router import Router
from backout_sandbox.core.store import JsonStore
from backout_sandbox.forge import git

NOT_FOUND = {"message": "Not Found"}


def normalize_project(name: str) -> str:
    """PEP 503 normalisation: PyPI treats `Foo_Bar` and `foo-bar` as one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PyPI:
    def __init__(self, store: JsonStore) -> None:
        self.store = store

    def register(self, router: Router) -> None:
        router.add("GET", "/pypi/{project}/json", self.project, public=True)
        router.add("GET", "/pypi/{project}/{version}/json", self.release, public=True)
        router.add("POST", "/_sandbox/pypi/{project}/{version}/yank", self.sandbox_yank, public=True)

    def project(self, req: Request, project: str) -> Response:
        return self._answer(req, project, None)

    def release(self, req: Request, project: str, version: str) -> Response:
        return self._answer(req, project, version)

    def _answer(self, req: Request, project: str, version: str | None) -> Response:
        data = self.store.data
        if sync_workflows(data):
            self.store.save()
        entry = data["pypi"].get(normalize_project(project))
        if entry is None or not entry["releases"]:
            return Response(404, NOT_FOUND)
        if project != entry["name"]:
            tail = f"/{version}/json" if version else "/json"
            return Response(301, None, {"Location": f"{req.base_url}/pypi/{entry['name']}{tail}"})
        releases = entry["releases"]
        if version is None:
            chosen = _latest(releases)
        else:
            found = next((v for v in releases if same_version(v, version)), None)
            if found is None:
                return Response(404, NOT_FOUND)
            chosen = found
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
        return Response(200, body, {"X-PyPI-Last-Serial": str(entry["last_serial"])})

    def sandbox_yank(self, req: Request, project: str, version: str) -> Response:
        reason = req.json_object().get("reason")
        try:
            with self.store.change() as data:
                yank(data, project, version, reason)
        except KeyError:
            return Response(404, NOT_FOUND)
        return Response(200, {"yanked": True, "project": project, "version": version})


def same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _latest(releases: dict[str, Any]) -> str:
    def key(version: str) -> tuple[bool, bool, Version]:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return (False, False, Version("0"))
        return (not releases[version]["yanked"], not parsed.is_prerelease, parsed)

    return max(releases, key=key)


def publish(data: dict[str, Any], project: str, version: str, files: list[str] | None = None) -> None:
    """An upload of `files` (by default an sdist and a wheel) as `version` of `project`."""
    key = normalize_project(project)
    entry = data["pypi"].setdefault(key, {"name": project, "releases": {}, "last_serial": 0})
    dist = re.sub(r"[-.]+", "_", project).lower()
    names = files if files is not None else [f"{dist}-{version}.tar.gz", f"{dist}-{version}-py3-none-any.whl"]
    at = datetime.now(timezone.utc)
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
            "upload_time": at.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "url": f"https://files.pythonhosted.org/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
            "yanked": False, "yanked_reason": None, "requires_python": None, "comment_text": "",
            "has_sig": False, "downloads": -1,
        })
    entry["releases"][version] = {"files": out, "yanked": False, "yanked_reason": None}
    entry["last_serial"] += 1


def yank(data: dict[str, Any], project: str, version: str, reason: str | None) -> None:
    """PyPI yanks whole releases: every file of the version is marked, with the reason."""
    entry = data["pypi"][normalize_project(project)]
    chosen = next((v for v in entry["releases"] if same_version(v, version)), None)
    if chosen is None:
        raise KeyError(version)
    release = entry["releases"][chosen]
    release["yanked"] = True
    release["yanked_reason"] = reason or None
    for file in release["files"]:
        file["yanked"] = True
        file["yanked_reason"] = reason or None
    entry["last_serial"] += 1


def sync_workflows(data: dict[str, Any]) -> bool:
    """Upload every version tag of a publishing repository that PyPI does not have yet."""
    changed = False
    for repo in data["repos"].values():
        publishes = repo.get("publishes")
        if not publishes:
            continue
        prefix = f"refs/tags/{publishes.get('tag_prefix', 'v')}"
        project = publishes["project"]
        for refname, _, _ in git.refs(repo["git_dir"]):
            if not refname.startswith(prefix):
                continue
            text = refname[len(prefix):]
            try:
                Version(text)
            except InvalidVersion:
                continue
            known = data["pypi"].get(normalize_project(project), {"releases": {}})["releases"]
            if not any(same_version(v, text) for v in known):
                publish(data, project, text)
                changed = True
    return changed
