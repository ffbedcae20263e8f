"""What PyPI (and TestPyPI) publish of a release, through PyPI's JSON API, and how to yank it.

PyPI has no API to yank or delete a release: a maintainer does it on the project's management
page. Yanking (PEP 592) is preferred over deleting: installers skip a yanked release unless it is
pinned exactly, so nobody who pinned it breaks, while a deletion breaks them and frees nothing
(PyPI never accepts the same file name again).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from backout.errors import BackoutError
from backout.http_retry import RetryingSession

PYPI = "https://pypi.org"
TESTPYPI = "https://test.pypi.org"


def normalize(name: str) -> str:
    """PEP 503 name normalisation, as PyPI's URLs use it."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PyPI:
    """Reads one index's JSON API (`https://pypi.org`, `https://test.pypi.org`, or the sandbox)."""

    def __init__(self, url: str, *, session: RetryingSession | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = session or RetryingSession(headers={"Accept": "application/json",
                                                           "User-Agent": "backout-package-rollback"}, timeout=20.0)

    def close(self) -> None:
        self.session.close()

    def _get(self, path: str) -> dict[str, Any] | None:
        response = self.session.request("GET", f"{self.url}{path}", authenticated=False)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackoutError(f"{self.url} answered {response.status_code} for {path}; try again later")
        return response.json()

    def project(self, project: str) -> dict[str, Any] | None:
        """`/pypi/<project>/json`, None when the index has no such project."""
        return self._get(f"/pypi/{quote(normalize(project))}/json")

    def release(self, project: str, version: str) -> dict[str, Any]:
        """What the index publishes of one version: its files and whether it is yanked.

        `{"published": bool, "files": [{filename, packagetype, yanked, yanked_reason, upload_time}],
        "yanked": bool, "yanked_reason": str | None, "checked_at": iso time, "index": url}`.
        """
        body = self._get(f"/pypi/{quote(normalize(project))}/{quote(version)}/json")
        checked = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if body is None:
            return {"index": self.url, "published": False, "files": [], "yanked": False, "yanked_reason": None,
                    "checked_at": checked}
        files = [{key: f.get(key) for key in ("filename", "packagetype", "yanked", "yanked_reason", "upload_time")}
                 for f in body.get("urls", [])]
        info = body.get("info", {})
        # PyPI yanks whole releases; a file-level flag is read too in case an index yanks files.
        yanked = bool(info.get("yanked")) or (bool(files) and all(f["yanked"] for f in files))
        reason = info.get("yanked_reason") or next((f["yanked_reason"] for f in files if f["yanked_reason"]), None)
        return {"index": self.url, "published": True, "files": files, "yanked": yanked, "yanked_reason": reason,
                "checked_at": checked}


def yanked_versions(project_json: dict[str, Any] | None) -> set[str]:
    """Versions of a project whose every file is yanked (from `/pypi/<project>/json`)."""
    if not project_json:
        return set()
    return {version for version, files in project_json.get("releases", {}).items()
            if files and all(f.get("yanked") for f in files)}


def manage_url(index: str, project: str, version: str) -> str:
    """The page where a maintainer yanks `version` (PyPI's and TestPyPI's web UI)."""
    return f"{index.rstrip('/')}/manage/project/{normalize(project)}/release/{version}/"


def testpypi_url(pypi_url: str) -> str | None:
    """TestPyPI beside the configured index: known only when that index is PyPI itself."""
    return TESTPYPI if pypi_url.rstrip("/") == PYPI else None


def yank_steps(project: str, version: str, reason: str, recheck: str) -> list[str]:
    """The exact steps for a maintainer, one line each."""
    return [
        f"Open {manage_url(PYPI, project, version)} signed in as an owner or maintainer of {project}.",
        f"Click Options next to {version}, then Yank; give the reason \"{reason}\" and confirm by typing {version}.",
        f"If the release workflow also uploads to TestPyPI, do the same at {manage_url(TESTPYPI, project, version)}",
        "Yank, do not delete: installers skip a yanked release unless it is pinned with ==, so pinned users keep "
        "working; a deletion breaks them and the file name can never be uploaded again.",
        f"Then run: {recheck}",
    ]
