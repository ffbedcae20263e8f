"""Steps 2 to 6 of the package rollback runbook, each recorded in the ledger.

A step is skipped on a rerun once the ledger says it is done (or skipped), and each step also looks
at GitHub or git before acting, so one interrupted between its effect and its record does not act
twice. Before a step destroys something it records what is about to go (the release's notes, the
tag's object and commit), so it can be put back. The PyPI step stays open ('started') until a
maintainer has yanked the release; later runs re-check it and record when the yank was seen.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from packaging.version import Version

from backout import ledger, notify
from backout.errors import BackoutError, BadInput
from backout.ledger.records import FINISHED_STEP, LedgerConnection, RequestStatus, StepRow, StepStatus
from backout.package_rollback import gitrepo, version_file
from backout.package_rollback.changelog import Changelog
from backout.package_rollback.github import GitHub
from backout.package_rollback.plan import PackagePlan
from backout.package_rollback.pypi import PyPI, manage_url, testpypi_url, yank_steps
from backout.redact import redact
from backout.settings import Settings

STEPS = ("delete_release", "delete_tag", "rollback_tag", "pypi_yank", "changelog", "release_notes",
         "notify_issue", "notify_webhook")
GIT_STEPS = ("rollback_tag", "changelog")
YANK_STEP = "pypi_yank"


@dataclass
class Context:
    settings: Settings
    conn: LedgerConnection
    request_id: str
    plan: PackagePlan
    github: GitHub
    pypi: PyPI
    checkout: str | None = None
    progress: Callable[[str], None] = lambda message: None
    _git: gitrepo.Git | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    def start(self, step: str, detail: dict[str, Any]) -> None:
        ledger.record_step(self.conn, self.request_id, step, StepStatus.STARTED, detail)

    def recorded(self, step: str) -> list[StepRow]:
        """What the ledger holds of `step` for this request, oldest first (earlier runs included)."""
        return [row for row in ledger.steps(self.conn, self.request_id) if row["step"] == step]

    def git(self) -> gitrepo.Git:
        if self._git is None:
            self._git = prepare_checkout(self.plan, self.checkout, self.settings.github_token, self._tempdir())
        return self._git

    def _tempdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="backout-package-")
        return Path(self._tmp.name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def recheck_command(self) -> str:
        return f"backout package-rollback --repo {self.plan['repo']} --bad {self.plan['bad']} --recheck"


def prepare_checkout(plan: PackagePlan, checkout: str | None, token: str | None, tmp: Path) -> gitrepo.Git:
    """The checkout to work in (the given one, else a fresh clone), once it is clear its origin is
    the repository: its good tag must be the very object GitHub reports."""
    if checkout:
        git = gitrepo.open_checkout(checkout)
        dirty = gitrepo.dirty_paths(git, [plan["changelog"]])
        if dirty:
            raise BadInput(f"{plan['changelog']} has uncommitted changes in {git.path}; commit or stash them, "
                           "then rerun (the rollback adds an entry to it)")
    else:
        git = gitrepo.clone(plan["clone_url"], tmp / "checkout", token)
    where = checkout or plan["clone_url"]
    found = gitrepo.fetch(git, f"refs/tags/{plan['tags']['good']}")
    if found is None:
        raise BadInput(f"origin of {where} has no tag {plan['tags']['good']}; is it a clone of {plan['repo']}?")
    if found != plan["good_tag"]["sha"]:
        raise BadInput(f"origin of {where} has tag {plan['tags']['good']} at {found[:12]} but GitHub has it at "
                       f"{plan['good_tag']['sha'][:12]}; is it a clone of {plan['repo']}?")
    return git


def execute(ctx: Context, *, recheck: bool = False) -> dict[str, Any]:
    """Run the steps not done yet (only the PyPI re-check with `recheck`); return the request's
    result. Raises on a failed step, with the request marked failed (refused if nothing changed).
    A re-check leaves the request's status alone: it only adds to what is known."""
    history = ledger.steps(ctx.conn, ctx.request_id)
    finished = {row["step"] for row in history if row["status"] in FINISHED_STEP}
    todo = [step for step in STEPS if step not in finished and (step == YANK_STEP or not recheck)]
    if not recheck:
        request = ledger.require_request(ctx.conn, ctx.request_id)
        ledger.update_request(ctx.conn, ctx.request_id, status=RequestStatus.RUNNING, attempts=request["attempts"] + 1,
                              **({} if request["started_at"] else {"started_at": "now"}))
    changed_anything = bool(finished)
    current: str | None = None
    try:
        if any(step in GIT_STEPS for step in todo):
            current = "checkout"
            ctx.git()  # a wrong or dirty checkout is refused before anything is deleted
        for current in todo:
            ctx.progress(f"{current.replace('_', ' ')}...")
            status, detail = _STEP_FUNCTIONS[current](ctx)
            ledger.record_step(ctx.conn, ctx.request_id, current, status, detail)
            changed_anything = changed_anything or status == StepStatus.DONE
            ctx.progress(f"{current.replace('_', ' ')}: {_summary(current, status, detail)}")
    except Exception as exc:
        message = redact(str(exc), ctx.settings.secrets())
        if current in STEPS:
            ledger.record_step(ctx.conn, ctx.request_id, current, StepStatus.FAILED, {"error": message})
        if not recheck:
            refused = isinstance(exc, BadInput) and not changed_anything
            ledger.update_request(ctx.conn, ctx.request_id, status=RequestStatus.REFUSED if refused else RequestStatus.FAILED,
                                  error=message, finished_at="now")
        raise
    finally:
        ctx.close()
    result = outcome(ledger.steps(ctx.conn, ctx.request_id), ctx.plan)
    if recheck:
        ledger.update_request(ctx.conn, ctx.request_id, result=result)
    else:
        ledger.update_request(ctx.conn, ctx.request_id, status=RequestStatus.SUCCEEDED, result=result, error=None,
                              finished_at="now")
    return result


def outcome(history: list[StepRow], plan: PackagePlan) -> dict[str, Any]:
    """The request's result from its steps: the latest record of each, and the yank's state."""
    latest = {row["step"]: row for row in history}
    yank = latest.get(YANK_STEP)
    if yank is None:
        state = "unknown"
    elif yank["status"] == StepStatus.SKIPPED:
        state = "not_published" if (yank.get("detail") or {}).get("indexes") else "unknown"
    elif yank["status"] == StepStatus.DONE:
        state = "yanked"
    else:
        state = "pending"
    return {
        "rollback_version": plan["rollback_version"], "tag": plan["tags"]["new"], "branch": plan["branch"],
        "yank": state,
        "steps": {name: latest[name]["status"] for name in STEPS if name in latest},
        "issue": ((issue["detail"] if (issue := latest.get("notify_issue")) else None) or {}).get("html_url"),
    }


# ---------------------------------------------------------------------------------------------
# the steps: each returns (status, detail) for the ledger


def delete_release(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 2a: the bad GitHub release goes; its notes are kept in the ledger first."""
    tag = ctx.plan["tags"]["bad"]
    current = ctx.github.release_by_tag(tag)
    if current is None:
        if ctx.plan["bad_release"] is None:
            return StepStatus.SKIPPED, {"why": f"no GitHub release for {tag}"}
        return StepStatus.DONE, {"release": ctx.plan["bad_release"], "deleted_earlier": True}
    record = {key: current.get(key) for key in ("id", "tag_name", "name", "body", "target_commitish", "draft",
                                                 "prerelease", "html_url", "created_at", "published_at")}
    ctx.start("delete_release", {"release": record})
    ctx.github.delete_release(current["id"])
    return StepStatus.DONE, {"release": record}


def delete_tag(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 2b: the bad tag goes; the object it named and its commit are kept in the ledger first."""
    tag = ctx.plan["tags"]["bad"]
    obj = ctx.github.ref(f"tags/{tag}")
    if obj is None:
        earlier = next((row["detail"] for row in reversed(ctx.recorded("delete_tag")) if row["status"] == StepStatus.STARTED),
                       None)
        if earlier is None and ctx.plan["bad_tag"] is None:
            return StepStatus.SKIPPED, {"why": f"no tag {tag} on GitHub"}
        return StepStatus.DONE, {**(earlier or {"tag": tag, "object": ctx.plan["bad_tag"]}), "deleted_earlier": True}
    record = {"tag": tag, "object": {"sha": obj["sha"], "type": obj["type"]}, "commit": ctx.github.peel(obj)}
    ctx.start("delete_tag", record)
    ctx.github.delete_ref(f"tags/{tag}")
    if ctx.checkout:
        # A local copy of the bad tag would come back with the next `git push --tags`.
        git = ctx.git()
        if git.run("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).stdout.strip() == obj["sha"]:
            git.run("tag", "--delete", tag)
            record["deleted_locally"] = str(git.path)
    # How to put it back: the object stays in GitHub's storage for a while after the ref goes.
    record["undo"] = {"method": "POST", "path": f"/repos/{ctx.plan['repo']}/git/refs",
                      "body": {"ref": f"refs/tags/{tag}", "sha": obj["sha"]}}
    return StepStatus.DONE, record


def rollback_tag(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 3: branch rollback-<new> from the good tag, the version bumped, tagged, pushed."""
    plan = ctx.plan
    git = ctx.git()
    new, good = Version(plan["rollback_version"]), Version(plan["good"])
    new_tag, branch = plan["tags"]["new"], plan["branch"]
    good_commit = gitrepo.peel(git, plan["good_tag"]["sha"])
    existing = gitrepo.remote_ref(git, f"refs/tags/{new_tag}")
    if existing is not None:
        return StepStatus.DONE, _adopt(ctx, git, existing, good_commit)
    with gitrepo.worktree(git, good_commit) as tree:
        touched = []
        for f in plan["version_files"]:
            path = tree / f["path"]
            path.write_text(version_file.bump(path.read_text(), f["kind"], good, new))
            touched.append(f["path"])
        log = tree / plan["changelog"]
        changelog_note = "no changelog at the good tag"
        if log.exists():
            try:
                text = log.read_text()
                log.write_text(Changelog(text, plan["changelog"]).with_rollback(
                    new=new, bad=Version(plan["bad"]), good=good, entry=changelog_entry(plan), date=_today(),
                    tags=plan["tags"]))
                touched.append(plan["changelog"])
                changelog_note = "entry added"
            except BadInput as exc:
                changelog_note = f"left as it is ({exc})"
        message = f"Release {new}: roll back {plan['bad']} to the code of {plan['good']}\n\n{plan['reason']}"
        commit = gitrepo.commit_all(git, tree, touched, message) if touched else good_commit
        tag_object = gitrepo.tag(git, tree, new_tag, f"Release {new} (rollback of {plan['bad']})")
        ok, why = gitrepo.push(git, tree, [f"HEAD:refs/heads/{branch}", f"refs/tags/{new_tag}:refs/tags/{new_tag}"])
        if not ok:
            raise BackoutError(f"origin refused the rollback branch and tag ({why}); nothing was pushed. Fix the "
                               "cause (credentials, branch or tag protection) and rerun")
    return StepStatus.DONE, {"branch": branch, "tag": new_tag, "commit": commit, "tag_object": tag_object,
                    "version_files": touched[: len(plan["version_files"])], "changelog": changelog_note}


def _adopt(ctx: Context, git: gitrepo.Git, existing: str, good_commit: str) -> dict[str, Any]:
    """The new tag is on GitHub already: an earlier attempt pushed it and stopped before recording
    that. Accept it only if it is a rollback commit on top of the good one."""
    gitrepo.fetch(git, f"refs/tags/{ctx.plan['tags']['new']}")
    commit = gitrepo.peel(git, existing)
    parent = git.run("rev-parse", f"{commit}^", check=False).stdout.strip()
    if commit != good_commit and parent != good_commit:
        raise BackoutError(f"tag {ctx.plan['tags']['new']} exists on GitHub but is not built on "
                           f"{ctx.plan['tags']['good']}; it was not made by this rollback. Look at it before rerunning")
    return {"branch": ctx.plan["branch"], "tag": ctx.plan["tags"]["new"], "commit": commit, "tag_object": existing,
            "pushed_earlier": True}


def pypi_yank(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 4: which files of the bad version PyPI (and TestPyPI) publish, and whether yanked."""
    plan = ctx.plan
    project = plan["pypi_project"]
    if not project:
        return StepStatus.SKIPPED, {"why": "no PyPI project name; pass --pypi-project to check PyPI"}
    indexes = [ctx.pypi] + ([PyPI(test)] if (test := testpypi_url(ctx.settings.pypi_url)) else [])
    states = [index.release(project, plan["bad"]) for index in indexes]
    published = [s for s in states if s["published"]]
    rollback = ctx.pypi.release(project, plan["rollback_version"])
    detail: dict[str, Any] = {"project": project, "version": plan["bad"], "indexes": states,
                              "rollback_version": plan["rollback_version"], "rollback_published": rollback["published"]}
    if not published:
        return StepStatus.SKIPPED, {**detail, "why": f"{plan['bad']} is not on PyPI"}
    if all(s["yanked"] for s in published):
        unyanked = [row["detail"]["checked_at"] for row in ctx.recorded(YANK_STEP)
                    if row["status"] == StepStatus.STARTED and row.get("detail")]
        return StepStatus.DONE, {**detail, "yanked_reason": published[0]["yanked_reason"],
                        "first_seen_yanked_at": published[0]["checked_at"],
                        "last_seen_unyanked_at": unyanked[-1] if unyanked else None}
    return StepStatus.STARTED, {**detail, "pending": True, "checked_at": published[0]["checked_at"],
                       "links": [manage_url("https://pypi.org", project, plan["bad"]),
                                 manage_url("https://test.pypi.org", project, plan["bad"])],
                       "yank_steps": yank_steps(project, plan["bad"], plan["reason"], ctx.recheck_command)}


def changelog(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 5a: the default branch's changelog gets the rollback entry and the bad one is marked."""
    plan = ctx.plan
    tag_detail: dict[str, Any] = next((row["detail"] for row in reversed(ctx.recorded("delete_tag"))
                                       if (row["detail"] or {}).get("commit")), {})

    def edit(text: str) -> str:
        return Changelog(text, plan["changelog"]).with_rollback(
            new=Version(plan["rollback_version"]), bad=Version(plan["bad"]), good=Version(plan["good"]),
            entry=changelog_entry(plan), date=_today(), tags=plan["tags"], bad_sha=tag_detail.get("commit"))

    result = gitrepo.commit_to_branch(
        ctx.git(), plan["default_branch"], {plan["changelog"]: edit},
        f"Changelog: {plan['rollback_version']} rolls back {plan['bad']}", fallback=f"backout/changelog-{plan['rollback_version']}",
    )
    return StepStatus.DONE, result


def release_notes(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 5b: the GitHub release of the new tag carries the rollback's notes."""
    plan = ctx.plan
    marker = _marker(ctx)
    notes = "\n".join(["## Rollback release", "", *[f"- {line}" for line in changelog_entry(plan)], "", marker])
    existing = ctx.github.release_by_tag(plan["tags"]["new"])
    if existing is None:
        made = ctx.github.create_release({"tag_name": plan["tags"]["new"], "name": plan["rollback_version"],
                                          "body": notes, "draft": False, "prerelease": False, "make_latest": "true"})
        return StepStatus.DONE, {"id": made["id"], "html_url": made["html_url"], "created": True}
    if marker not in (existing.get("body") or ""):
        # The release workflow made the release already; the rollback's notes go on top of its own.
        existing = ctx.github.update_release(existing["id"], {"body": f"{notes}\n\n{existing.get('body') or ''}"})
    return StepStatus.DONE, {"id": existing["id"], "html_url": existing["html_url"], "created": False}


def notify_issue(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 6a: an issue tells the users what happened and what to do."""
    if not ctx.plan["issues_enabled"]:
        return StepStatus.SKIPPED, {"why": "issues are disabled in the repository"}
    marker = _marker(ctx)
    issue = ctx.github.find_issue(marker)
    if issue is None:
        title, body = announcement(ctx)
        issue = ctx.github.create_issue(title, f"{body}\n\n{marker}", marker)
    return StepStatus.DONE, {"number": issue["number"], "html_url": issue["html_url"]}


def notify_webhook(ctx: Context) -> tuple[StepStatus, dict[str, Any]]:
    """Step 6b: BACKOUT_NOTIFY_URL (and Sentry) hear of it."""
    if not ctx.settings.notify_url and not ctx.settings.sentry_dsn:
        return StepStatus.SKIPPED, {"why": "BACKOUT_NOTIFY_URL is not set"}
    title, body = announcement(ctx)
    plan = ctx.plan
    notify.notify(ctx.settings, "package_rollback.succeeded", f"{title}\n{body}",
                  {"repo": plan["repo"], "bad": plan["bad"], "good": plan["good"],
                   "rollback_version": plan["rollback_version"], "request_id": ctx.request_id})
    return StepStatus.DONE, {"event": "package_rollback.succeeded"}


_STEP_FUNCTIONS: dict[str, Callable[[Context], tuple[StepStatus, dict[str, Any]]]] = {
    "delete_release": delete_release, "delete_tag": delete_tag, "rollback_tag": rollback_tag,
    "pypi_yank": pypi_yank, "changelog": changelog, "release_notes": release_notes,
    "notify_issue": notify_issue, "notify_webhook": notify_webhook,
}


# ---------------------------------------------------------------------------------------------
# words


def changelog_entry(plan: PackagePlan) -> list[str]:
    project = plan.get("pypi_project") or plan["repo"].split("/")[1]
    on_pypi = bool((plan.get("pypi") or {}).get("published"))
    what = " and ".join(part for part in (_gone(plan), "it is yanked on PyPI" if on_pypi else "") if part)
    return [
        f"Rolled back {plan['bad']}: this release is the code of {plan['good']}, published as "
        f"{plan['rollback_version']}. Reason: {plan['reason']}.",
        f"{plan['bad']} is withdrawn{': ' + what if what else ''}. If you pinned `{project}=={plan['bad']}`, "
        f"move to `{project}=={plan['rollback_version']}`.",
    ]


def _gone(plan: PackagePlan) -> str:
    """What of the bad version was deleted on GitHub, in words."""
    parts = [f"its tag `{plan['tags']['bad']}`" if plan.get("bad_tag") else "",
             "its GitHub release" if plan.get("bad_release") else ""]
    return " and ".join(p for p in parts if p) + (" are deleted" if all(parts) else " is deleted" if any(parts) else "")


def announcement(ctx: Context) -> tuple[str, str]:
    plan = ctx.plan
    project = plan.get("pypi_project") or plan["repo"].split("/")[1]
    yank = ctx.recorded(YANK_STEP)
    yank_texts: dict[str, str] = {
        StepStatus.DONE: f"- On PyPI, {plan['bad']} is yanked: installers skip it unless it is pinned exactly.",
        StepStatus.STARTED: f"- On PyPI, {plan['bad']} is being yanked: installers will skip it unless it is pinned exactly.",
    }
    pypi = yank_texts.get(yank[-1]["status"] if yank else "",
                          f"- {plan['bad']} was not published on PyPI." if plan.get("pypi") else "")
    title = f"{plan['bad']} was withdrawn; upgrade to {plan['rollback_version']}"
    lines = [
        f"Release {plan['bad']} of {project} was bad and has been rolled back. Reason: {plan['reason']}.",
        "",
        f"- {plan['rollback_version']} is the code of {plan['good']} again (tag `{plan['tags']['new']}`), "
        "published by the release workflow.",
        f"- {_gone(plan)[0].upper() + _gone(plan)[1:]}." if _gone(plan) else "",
        pypi,
        "",
        f"What to do: `pip install --upgrade {project}` gets {plan['rollback_version']}. If you pinned "
        f"`{project}=={plan['bad']}`, change the pin to `{project}=={plan['rollback_version']}`.",
    ]
    return title, "\n".join(lines)


def _marker(ctx: Context) -> str:
    return f"<!-- backout:package-rollback {ctx.request_id} -->"


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _summary(step: str, status: str, detail: dict[str, Any]) -> str:
    if status == StepStatus.SKIPPED:
        return f"skipped ({detail.get('why', '')})"
    if step == YANK_STEP and status == StepStatus.STARTED:
        return "waiting for a maintainer to yank it on PyPI"
    if detail.get("html_url"):
        return f"{status} ({detail['html_url']})"
    return status
