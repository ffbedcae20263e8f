"""The part of GitHub's REST API a package rollback uses: repository, git refs and tags, releases,
issues, contents. Every call goes through `http_retry.RetryingSession`; a POST that may have taken
effect on a 5xx is repeated only after looking that it did not.

Errors come back as `GitHubError` with GitHub's message, except those that mean the same whatever
was asked (a refused token, a spent rate limit), which come back as BadInput or BackoutError with
the fix.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import requests

from backout.errors import BackoutError, BadInput
from backout.http_retry import BearerAuth, RetryingSession

API_VERSION = "2022-11-28"


class GitHubError(BackoutError):
    """An error answer from GitHub's REST API."""

    def __init__(self, response: requests.Response, method: str, path: str) -> None:
        self.status = response.status_code
        self.method = method
        self.path = path
        self.headers = response.headers
        try:
            body = response.json()
        except ValueError:
            body = {}
        self.message = str(body.get("message") or response.reason or "error") if isinstance(body, dict) else "error"
        self.errors = body.get("errors") if isinstance(body, dict) else None
        self.rate_limited = self.status in (403, 429) and response.headers.get("X-RateLimit-Remaining") == "0"
        super().__init__(f"GitHub API {self.status} {self.message} ({method} {path})")

    def refusal(self, repo: str) -> BackoutError:
        """The error to raise: BadInput when the request cannot succeed as given, else itself."""
        if self.status == 401:
            return BadInput(f"GitHub refused GITHUB_TOKEN ({self.message}); create a new token and set GITHUB_TOKEN")
        if self.rate_limited:
            reset = self.headers.get("X-RateLimit-Reset", "")
            when = (datetime.fromtimestamp(int(reset), timezone.utc).strftime("%H:%M UTC") if reset.isdigit()
                    else "the reset time")
            return BackoutError(f"GitHub's API rate limit for this token is spent until {when}; rerun then "
                                "(the rollback continues where it stopped)")
        if self.status == 403 and "personal access token" in self.message:
            needed = self.headers.get("X-Accepted-GitHub-Permissions") or "more permissions"
            return BadInput(f"GITHUB_TOKEN may not {self.method} {self.path} on {repo}: GitHub says "
                            f"{self.message!r} and needs {needed}; give the fine-grained token that permission")
        return self


class GitHub:
    """A client for one repository, `owner/name`."""

    def __init__(self, api_url: str, token: str, repo: str, *, session: RetryingSession | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.repo = repo
        self.session = session or RetryingSession(
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                     "User-Agent": "backout-package-rollback"},
            auth=BearerAuth(token), timeout=30.0,
        )
        self._base = f"/repos/{repo}"

    def close(self) -> None:
        self.session.close()

    # -- transport --

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), json: Any = None,
             params: dict[str, Any] | None = None, before_retry: Any = None) -> requests.Response:
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        response = self.session.request(method, url, json=json, params=params, before_retry=before_retry)
        if response.status_code not in ok:
            error = GitHubError(response, method, path.replace(self.api_url, "").split("?")[0])
            # A refused token or a spent rate limit means the same whatever was asked.
            raise error.refusal(self.repo)
        return response

    def _pages(self, path: str, params: dict[str, Any] | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """Every item of a paginated list, following the Link header (at most `limit` pages)."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        for _ in range(limit):
            if url is None:
                break
            response = self.call("GET", url, params=query)
            items += response.json()
            url, query = response.links.get("next", {}).get("url"), None
        return items

    # -- repository --

    def get_repo(self) -> tuple[dict[str, Any], requests.structures.CaseInsensitiveDict]:
        """The repository and the answer's headers (they carry the token's scopes)."""
        try:
            response = self.call("GET", self._base)
        except GitHubError as exc:
            if exc.status == 404:
                raise BadInput(f"repository {self.repo} was not found on GitHub, or GITHUB_TOKEN cannot see it; "
                               "check --repo OWNER/NAME and the token's repository access") from None
            raise
        return response.json(), response.headers

    def probe_write(self, what: str) -> int:
        """Status of a deliberately incomplete write ("contents" or "issues"). GitHub checks the
        token's permission before the body, so 422 means "allowed" and nothing is created."""
        path = f"{self._base}/git/refs" if what == "contents" else f"{self._base}/issues"
        response = self.session.request("POST", f"{self.api_url}{path}", json={})
        return response.status_code

    # -- git data --

    def tags(self) -> dict[str, dict[str, Any]]:
        """Every tag: name -> the ref's object (`sha`, `type` "tag" for annotated or "commit")."""
        refs = self.call("GET", f"{self._base}/git/matching-refs/tags").json()
        return {r["ref"][len("refs/tags/"):]: r["object"] for r in refs}

    def ref(self, ref: str) -> dict[str, Any] | None:
        """`tags/v1.2.3` or `heads/main`: the ref's object, None when there is none."""
        try:
            return self.call("GET", f"{self._base}/git/ref/{quote(ref)}").json()["object"]
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise

    def peel(self, obj: dict[str, Any]) -> str:
        """The commit a ref's object names (an annotated tag is followed to its commit)."""
        while obj["type"] == "tag":
            obj = self.call("GET", f"{self._base}/git/tags/{obj['sha']}").json()["object"]
        return obj["sha"]

    def delete_ref(self, ref: str) -> bool:
        """Delete `tags/v1.2.3`; False when it did not exist."""
        try:
            self.call("DELETE", f"{self._base}/git/refs/{quote(ref)}", ok=(204,))
        except GitHubError as exc:
            if exc.status == 422 and "does not exist" in exc.message:
                return False
            raise
        return True

    def create_ref(self, ref: str, sha: str) -> None:
        """Create `refs/tags/...` at `sha` (undoing a deletion)."""
        self.call("POST", f"{self._base}/git/refs", ok=(201,), json={"ref": ref, "sha": sha},
                  before_retry=lambda: self.ref(ref.removeprefix("refs/")) is None)

    # -- releases --

    def releases(self) -> list[dict[str, Any]]:
        return self._pages(f"{self._base}/releases")

    def release_by_tag(self, tag: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", f"{self._base}/releases/tags/{quote(tag)}").json()
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise

    def create_release(self, body: dict[str, Any]) -> dict[str, Any]:
        tag = body["tag_name"]
        return self.call("POST", f"{self._base}/releases", ok=(201,), json=body,
                         before_retry=lambda: self.release_by_tag(tag) is None).json()

    def update_release(self, release_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", f"{self._base}/releases/{release_id}", json=body).json()

    def delete_release(self, release_id: int) -> bool:
        """False when it was already gone."""
        try:
            self.call("DELETE", f"{self._base}/releases/{release_id}", ok=(204,))
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- issues --

    def find_issue(self, marker: str) -> dict[str, Any] | None:
        """The issue whose body carries `marker` (an earlier attempt's), newest pages first."""
        for issue in self._pages(f"{self._base}/issues", {"state": "all"}, limit=3):
            if marker in (issue.get("body") or ""):
                return issue
        return None

    def create_issue(self, title: str, body: str, marker: str) -> dict[str, Any]:
        return self.call("POST", f"{self._base}/issues", ok=(201,), json={"title": title, "body": body},
                         before_retry=lambda: self.find_issue(marker) is None).json()

    # -- contents --

    def read(self, path: str, ref: str) -> str | None:
        """A file's text at `ref`, None when there is no such file."""
        try:
            body = self.call("GET", f"{self._base}/contents/{quote(path)}", params={"ref": ref}).json()
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, dict) or body.get("type") != "file":
            return None
        return base64.b64decode(body["content"]).decode("utf-8", errors="replace")

    def listdir(self, path: str, ref: str) -> dict[str, bool] | None:
        """A directory's entries at `ref` as {name: is a directory}, None when it is not one."""
        try:
            body = self.call("GET", f"{self._base}/contents/{quote(path)}" if path else f"{self._base}/contents",
                             params={"ref": ref}).json()
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(body, list):
            return None
        return {entry["name"]: entry["type"] == "dir" for entry in body}
