"""Who is asking GitHub, what they may do, and how many requests they have left.

`Authorization: Bearer` or `token`; a classic token's `X-OAuth-Scopes` header and 404s for what its
scopes do not cover; a fine-grained token's 403 "Resource not accessible by personal access token"
with `X-Accepted-GitHub-Permissions` (checked before the body is validated); `X-RateLimit-*`
headers and a 403 when the hour's requests are spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from backout_sandbox.core.messages import Request
from backout_sandbox.core.store import JsonStore
from backout_sandbox.forge.errors import DOCS, GitHubError

RATE_LIMIT = 5000
ANONYMOUS_RATE_LIMIT = 60
WRITE_ROLES = ("admin", "maintain", "write")


@dataclass
class Caller:
    login: str | None  # None: anonymous
    kind: str  # "anonymous", "classic", "fine-grained"
    scopes: tuple[str, ...] = ()
    permissions: dict[str, str] = field(default_factory=dict)
    repositories: Any = "all"  # "all" or a list of full names
    user_id: int = 0


@dataclass
class Call:
    """One GitHub API request: who makes it, and the headers its answer carries, error or not."""

    req: Request
    caller: Caller
    headers: dict[str, str] = field(default_factory=dict)


def authenticate(data: dict[str, Any], req: Request, headers: dict[str, str]) -> Caller:
    """The caller of `req` (anonymous without a token); 401 for a token the forge does not know."""
    authorization = req.headers.get("Authorization")
    if not authorization:
        return Caller(None, "anonymous")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    info = data["tokens"].get(token) if scheme.lower() in ("bearer", "token") else None
    if info is None:
        raise GitHubError(401, "Bad credentials")
    user_id = data["users"].get(info["login"], 1)
    if info["kind"] == "classic":
        headers["X-OAuth-Scopes"] = ", ".join(info.get("scopes", ()))
        return Caller(info["login"], "classic", scopes=tuple(info.get("scopes", ())), user_id=user_id)
    return Caller(info["login"], "fine-grained", permissions=dict(info.get("permissions", {})),
                  repositories=info.get("repositories", "all"), user_id=user_id)


def count_request(store: JsonStore, caller: Caller, headers: dict[str, str]) -> None:
    """Spend one of the caller's requests this hour; 403 once they are spent."""
    data = store.data
    key = caller.login or "anonymous"
    limit = data["rate_limit"] if caller.login else ANONYMOUS_RATE_LIMIT
    entry = data["rate"].get(key)
    now = int(time.time())
    if entry is None or entry["reset"] <= now:
        entry = data["rate"][key] = {"used": 0, "reset": now + 3600}
    spent = entry["used"] >= limit
    if not spent:
        entry["used"] += 1
    headers.update({
        "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - entry["used"])),
        "X-RateLimit-Reset": str(entry["reset"]), "X-RateLimit-Used": str(entry["used"]),
        "X-RateLimit-Resource": "core",
    })
    store.save()
    if spent:
        who = f"user ID {caller.user_id}" if caller.login else "127.0.0.1"
        raise GitHubError(403, f"API rate limit exceeded for {who}.", f"{DOCS}/overview/rate-limits-for-the-rest-api")


def role(repo: dict[str, Any], caller: Caller) -> str | None:
    """The caller's role on the repository (admin, maintain, write, triage, read), None for none."""
    return repo["collaborators"].get(caller.login or "")


def repo_for(call: Call, data: dict[str, Any], owner: str, name: str, need: str, doc: str) -> dict[str, Any]:
    """The repository, if the caller may do `need` ("read", "contents", "issues") to it."""
    caller = call.caller
    repo = data["repos"].get(f"{owner}/{name}".lower())
    not_found = GitHubError(404, "Not Found", doc)
    if repo is None:
        raise not_found
    their_role = role(repo, caller)
    if caller.kind == "anonymous":
        if need != "read":
            raise GitHubError(401, "Requires authentication", doc)
        if repo["private"]:
            raise not_found
        return repo
    if caller.kind == "classic":
        if "repo" in caller.scopes:
            covered = True
        else:
            covered = not repo["private"] and (need == "read" or "public_repo" in caller.scopes)
        if need != "read":
            call.headers["X-Accepted-OAuth-Scopes"] = "repo"
        if not covered or (repo["private"] and their_role is None):
            raise not_found
    else:
        allowed = caller.repositories == "all" and repo["owner"] == caller.login or (
            isinstance(caller.repositories, list)
            and repo["full_name"].lower() in [r.lower() for r in caller.repositories]
        )
        if not allowed and (repo["private"] or need != "read"):
            raise not_found
        if need != "read":
            call.headers["X-Accepted-GitHub-Permissions"] = f"{need}=write"
            if caller.permissions.get(need) != "write":
                raise GitHubError(403, "Resource not accessible by personal access token", doc)
    # Anyone may open an issue on a public repository; everything else needs push access.
    if need == "contents" or (need == "issues" and repo["private"]):
        if their_role not in WRITE_ROLES:
            raise not_found
    return repo
