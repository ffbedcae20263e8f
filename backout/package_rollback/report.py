"""What `backout package-rollback` prints: the plan, the steps' story, the yank steps; or one JSON
document with the same content (keys sorted, fields below stable):

    repo, bad, good, good_source, rollback_version, tags {bad, good, new}, branch, dry_run,
    request_id (null in a dry run without a ledger request), status ("planned" in a dry run, else
    the request's: queued, running, succeeded, failed, refused),
    steps [{step, status ("planned", "started", "done", "skipped", "failed"), description, detail, at}],
    yank {state ("pending", "yanked", "not_published", "unknown"), project, files, links, steps},
    warnings [str], plan {the whole plan as stored in the ledger}
"""

from __future__ import annotations

from typing import Any

from backout.ledger.records import RequestRow, StepRow, StepStatus
from backout.package_rollback.plan import PackagePlan
from backout.package_rollback.pypi import manage_url, yank_steps
from backout.package_rollback.runbook import STEPS, YANK_STEP, outcome


def document(plan: PackagePlan, *, dry_run: bool, request: RequestRow | None = None, history: list[StepRow] | None = None,
             notify_configured: bool = False) -> dict[str, Any]:
    history = history or []
    latest = {row["step"]: row for row in history}
    steps = []
    for step in STEPS:
        row = latest.get(step)
        steps.append({"step": step, "status": row["status"] if row else "planned",
                      "description": describe(step, plan, notify_configured),
                      "detail": row.get("detail") if row else None, "at": row.get("at") if row else None})
    return {
        "repo": plan["repo"], "bad": plan["bad"], "good": plan["good"], "good_source": plan["good_source"],
        "rollback_version": plan["rollback_version"], "tags": plan["tags"], "branch": plan["branch"],
        "dry_run": dry_run, "request_id": request["id"] if request else None,
        "status": "planned" if dry_run or request is None else request["status"],
        "steps": steps, "yank": _yank(plan, latest, history), "warnings": plan["warnings"], "plan": plan,
    }


def _yank(plan: PackagePlan, latest: dict[str, Any], history: list[StepRow]) -> dict[str, Any]:
    project = plan.get("pypi_project")
    row = latest.get(YANK_STEP)
    if row is not None:
        state = outcome(history, plan)["yank"]
        indexes = (row.get("detail") or {}).get("indexes") or []
        files = [f for index in indexes for f in index.get("files", [])]
    else:
        observed = plan.get("pypi") or {}
        files = observed.get("files", [])
        state = ("unknown" if not project else "not_published" if not observed.get("published")
                 else "yanked" if observed.get("yanked") else "pending")
    recheck = f"backout package-rollback --repo {plan['repo']} --bad {plan['bad']} --recheck"
    pending = state == "pending"
    return {
        "state": state, "project": project, "files": files,
        "links": [manage_url("https://pypi.org", project, plan["bad"]),
                  manage_url("https://test.pypi.org", project, plan["bad"])] if project else [],
        "steps": yank_steps(project, plan["bad"], plan["reason"], recheck) if project and pending else [],
    }


def describe(step: str, plan: PackagePlan, notify_configured: bool) -> str:
    tags = plan["tags"]
    if step == "delete_release":
        release = plan.get("bad_release")
        return (f"delete the GitHub release of {tags['bad']} (id {release['id']}, {release.get('name')!r}); its "
                "notes are kept in the ledger" if release else f"no GitHub release of {tags['bad']} to delete")
    if step == "delete_tag":
        tag = plan.get("bad_tag")
        return (f"delete tag {tags['bad']} (object {tag['sha'][:12]}); the sha is kept in the ledger" if tag
                else f"no tag {tags['bad']} to delete")
    if step == "rollback_tag":
        files = ", ".join(f["path"] for f in plan["version_files"]) or "no file (the version comes from the tag)"
        return (f"branch {plan['branch']} from {tags['good']}; version {plan['good']} -> {plan['rollback_version']} "
                f"in {files}; {plan['changelog']} entry; tag {tags['new']}; push both to origin")
    if step == YANK_STEP:
        observed = plan.get("pypi")
        if not plan.get("pypi_project"):
            return "no PyPI project known; PyPI is not checked"
        if not observed or not observed.get("published"):
            return f"{plan['pypi_project']} {plan['bad']} is not on PyPI; nothing to yank"
        state = "yanked" if observed.get("yanked") else "not yanked: a maintainer is shown how to yank it"
        return f"{plan['pypi_project']} {plan['bad']} has {len(observed['files'])} file(s) on PyPI, {state}"
    if step == "changelog":
        return (f"{plan['changelog']} on {plan['default_branch']}: an entry for {plan['rollback_version']} saying "
                f"what was rolled back and why; {plan['bad']} marked [YANKED]")
    if step == "release_notes":
        return f"GitHub release {tags['new']} with the rollback's notes"
    if step == "notify_issue":
        return (f"open an issue in {plan['repo']} telling users to move to {plan['rollback_version']}"
                if plan["issues_enabled"] else "issues are disabled in the repository; no issue")
    return "post to BACKOUT_NOTIFY_URL" if notify_configured else "BACKOUT_NOTIFY_URL is not set; no webhook"


def _yank_note(status: str, detail: dict[str, Any]) -> str:
    project, version = detail.get("project"), detail.get("version")
    if status == "done":
        since = detail.get("last_seen_unyanked_at")
        return (f"{project} {version} is yanked on PyPI (seen {detail.get('first_seen_yanked_at')}"
                f"{f'; still there at {since}' if since else ''})")
    files = sum(len(index.get("files", [])) for index in detail.get("indexes", []))
    rollback = "published" if detail.get("rollback_published") else "not yet published"
    return (f"{project} {version} has {files} file(s) on PyPI, not yanked at {detail.get('checked_at')}; "
            f"{detail.get('rollback_version', 'the rollback version')} is {rollback} there")


def text(doc: dict[str, Any]) -> str:
    plan = doc["plan"]
    state = "dry run: nothing changed" if doc["dry_run"] else "plan" if doc["status"] == "planned" else doc["status"]
    lines = [f"{doc['repo']}: roll back {doc['bad']} to the code of {doc['good']}, published as "
             f"{doc['rollback_version']} ({state})"]
    if doc["request_id"]:
        lines.append(f"  request {doc['request_id']}")
    lines.append(f"  last good version {doc['good']} (from {doc['good_source']})")
    for skipped in plan.get("skipped", []):
        lines.append(f"  skipped {skipped['version']}: {skipped['why']}")
    lines.append("")
    width = max(len(s["step"]) for s in doc["steps"])
    for number, step in enumerate(doc["steps"], 1):
        shown = "waiting" if step["step"] == YANK_STEP and step["status"] == StepStatus.STARTED else step["status"]
        note = step["description"]
        if step["status"] == StepStatus.FAILED and step["detail"]:
            note = f"FAILED: {step['detail'].get('error')}"
        elif step["status"] == StepStatus.SKIPPED and step["detail"]:
            note = step["detail"].get("why") or note
        elif step["step"] == YANK_STEP and step["detail"]:
            note = _yank_note(step["status"], step["detail"])
        elif step["detail"] and step["detail"].get("html_url"):
            note = f"{note} ({step['detail']['html_url']})"
        elif step["detail"] and step["detail"].get("refused_by"):
            note = (f"{step['detail']['refused_by']} refused the push; the commit is on branch "
                    f"{step['detail']['branch']}: open a pull request from it")
        lines.append(f"  {number}. {step['step'].ljust(width)}  {shown:<8} {note}")
    for warning in doc["warnings"]:
        lines.append(f"  warning: {warning}")
    yank = doc["yank"]
    if yank["state"] == "pending":
        files = ", ".join(f["filename"] for f in yank["files"])
        lines += ["", f"PyPI publishes {yank['project']} {doc['bad']} ({files}) and it is not yanked. PyPI has no "
                  "API for this; a maintainer yanks it:"]
        lines += [f"  {number}. {step}" for number, step in enumerate(yank["steps"], 1)]
    elif yank["state"] == "yanked":
        lines += ["", f"PyPI: {yank['project']} {doc['bad']} is yanked."]
    return "\n".join(lines)
