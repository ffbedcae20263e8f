"""Putting back what a package rollback deleted on GitHub, from what the ledger kept of it.

The tag comes back at the object it named (the annotated tag object stays in GitHub's storage for a
while after its ref is gone; failing that, at its commit) and the release with its name and notes.
Nothing already there again is touched, so undoing twice does it once.
"""

from __future__ import annotations

from typing import Any

from backout import ledger
from backout.errors import BackoutError, BadInput
from backout.ledger.records import RequestRow, StepStatus
from backout.package_rollback.github import GitHub, GitHubError
from backout.settings import Settings


def undo_deletion(settings: Settings, request_id: str) -> dict[str, Any]:
    """Recreate the bad tag and GitHub release that request `request_id` deleted; returns what
    was put back."""
    settings.require("BACKOUT_DATABASE_URL", "GITHUB_TOKEN")
    assert settings.ledger_url is not None and settings.github_token is not None
    conn = ledger.connect(settings.ledger_url)
    try:
        request = ledger.get_request(conn, request_id)
        if request is None or request["kind"] != "package":
            raise BadInput(f"{request_id} is not a package rollback request in the ledger")
        kept = {row["step"]: row["detail"] for row in ledger.steps(conn, request_id)
                if row["step"] in ("delete_tag", "delete_release") and row["status"] in (StepStatus.STARTED, StepStatus.DONE)
                and row.get("detail")}
        github = GitHub(settings.github_api_url, settings.github_token, request["plan"]["repo"])
        try:
            restored = _restore(github, settings.ledger_url, request, kept)
        finally:
            github.close()
        ledger.record_step(conn, request_id, "undo_deletion", StepStatus.DONE, restored)
        return restored
    finally:
        conn.close()


def _restore(github: GitHub, ledger_url: str, request: RequestRow, kept: dict[str, Any]) -> dict[str, Any]:
    restored: dict[str, Any] = {}
    with ledger.app_lock(ledger_url, request["app"], wait=False) as held:
        if not held:
            raise BackoutError(f"a package rollback of {request['app']} is running; undo after it ends")
        tag = kept.get("delete_tag")
        if tag and "object" in tag and github.ref(f"tags/{tag['tag']}") is None:
            restored["tag"] = _recreate_tag(github, tag)
        release = (kept.get("delete_release") or {}).get("release")
        if release and github.release_by_tag(release["tag_name"]) is None:
            made = github.create_release({
                "tag_name": release["tag_name"], "name": release.get("name"), "body": release.get("body") or "",
                "prerelease": bool(release.get("prerelease")), "draft": False,
                "target_commitish": (tag or {}).get("commit") or release.get("target_commitish"),
            })
            restored["release"] = {"id": made["id"], "html_url": made["html_url"]}
    return restored


def _recreate_tag(github: GitHub, kept: dict[str, Any]) -> dict[str, Any]:
    ref = f"refs/tags/{kept['tag']}"
    try:
        github.create_ref(ref, kept["object"]["sha"])
        return {"tag": kept["tag"], "sha": kept["object"]["sha"]}
    except GitHubError as exc:
        if exc.status != 422 or not kept.get("commit"):
            raise
    # The tag object was collected: the tag comes back lightweight, on the same commit.
    github.create_ref(ref, kept["commit"])
    return {"tag": kept["tag"], "sha": kept["commit"], "lightweight": True}
