"""Step 1 and the checks before anything changes: the plan of a package rollback.

The plan is computed from GitHub's API and PyPI's JSON API alone (no checkout is needed, so a dry
run needs nothing but a token), and refuses, with BadInput naming the problem and the fix, whatever
would stop the runbook half-way: an unknown repository, a bad version that does not exist, a good
version that is not older, a token that may not write, an unreadable changelog, a rollback
version that is already taken. The plan is a JSON document stored with the ledger request, so a
rerun carries on with the same versions even after the bad tag is gone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, TypedDict

from packaging.version import InvalidVersion, Version

from backout.errors import BadInput
from backout.package_rollback import changelog as changelog_module
from backout.package_rollback import version_file
from backout.package_rollback.github import GitHub
from backout.package_rollback.pypi import PyPI, yanked_versions
from backout.package_rollback.versions import (
    detect_prefix,
    next_patch,
    parse,
    version_of_tag,
)

REPO_FORM = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_MARKED = re.compile(r"yanked|rolled[ -]back|withdrawn|retracted", re.I)


class PackagePlan(TypedDict):
    """A package rollback's plan: stored with its request in the ledger, followed by the runbook."""

    repo: str  # owner/name
    html_url: str
    clone_url: str
    default_branch: str
    issues_enabled: bool
    token: str  # "classic" or "fine-grained" (the kind, never the token)
    bad: str
    good: str
    good_source: str  # --good, or why the runbook chose it
    rollback_version: str  # the next patch after `bad`: the good code, released anew
    tag_prefix: str
    tags: dict[str, str]  # "bad", "good", "new" -> tag names
    branch: str
    bad_tag: dict[str, Any] | None  # GitHub's tag objects
    good_tag: dict[str, Any]  # the good version must have one
    bad_release: dict[str, Any] | None  # the bad GitHub release, kept to restore or report
    changelog: str  # its path
    version_files: list[dict[str, str]]  # {"path", "kind"}
    version_from_tag: bool
    pypi_project: str | None
    pypi: dict[str, Any] | None  # what PyPI publishes of `bad` (see PyPI.release)
    skipped: list[dict[str, Any]]  # newer candidates passed over when choosing `good`
    warnings: list[str]
    reason: str


@dataclass
class Options:
    """What was asked for; every field is JSON-friendly (it is stored as the request's params)."""

    repo: str
    bad: str
    good: str | None = None
    tag_prefix: str | None = None
    version_file: str | None = None
    changelog: str | None = None
    checkout: str | None = None
    pypi_project: str | None = None
    reason: str = ""

    def check(self) -> None:
        """The checks that need no network: forms of the repository and the versions."""
        if not REPO_FORM.fullmatch(self.repo or ""):
            raise BadInput(f"--repo {self.repo!r} is not OWNER/NAME; give the GitHub repository, e.g. acme/widgets")
        bad = parse(self.bad, "--bad")
        if self.good is not None and parse(self.good, "--good") >= bad:
            raise BadInput(f"--good {self.good} is not older than --bad {self.bad}; the good version must be an "
                           "earlier release")
        if not self.reason.strip():
            self.reason = f"{self.bad} is broken"

    def params(self) -> dict[str, Any]:
        return {"repo": self.repo, "bad": self.bad, "good": self.good, "tag_prefix": self.tag_prefix,
                "version_file": self.version_file, "changelog": self.changelog, "checkout": self.checkout,
                "pypi_project": self.pypi_project, "reason": self.reason}


def make_plan(github: GitHub, pypi: PyPI, options: Options, *, rolled_back: Collection[str] = ()) -> PackagePlan:
    """The plan, or BadInput. `rolled_back`: bad versions of earlier package rollbacks (ledger)."""
    options.check()
    bad = Version(options.bad)
    repo, headers = github.get_repo()
    token = _check_token(github, repo, headers)
    default_branch = repo["default_branch"]
    tags = github.tags()
    releases = [r for r in github.releases() if not r.get("draft")]
    prefix = options.tag_prefix if options.tag_prefix is not None else detect_prefix(tags, bad)

    log = _read_changelog(github, options, default_branch)
    name = options.pypi_project or _project_name(github, default_branch)
    project_json = pypi.project(name) if name else None
    published = {version for v in (project_json or {}).get("releases", {}) if (version := _v(v)) is not None}
    release_versions = {v: r for r in releases if (v := version_of_tag(r["tag_name"], prefix)) is not None}

    bad_tag = _tag_named(tags, prefix, bad)
    bad_release = release_versions.get(bad)
    if bad_tag is None and bad_release is None and log.find(bad) is None and bad not in published:
        logged = {s.version for s in log.releases() if s.version is not None}
        known = sorted({*release_versions, *logged, *published}, reverse=True)[:5]
        raise BadInput(f"{options.repo} has no version {bad}: no tag {prefix}{bad}, no GitHub release, nothing in "
                       f"{log.path} or on PyPI (recent versions: {', '.join(map(str, known)) or 'none'}); check --bad")

    skipped: list[dict[str, Any]] = []
    if options.good is not None:
        good, source = Version(options.good), "--good"
    else:
        good, source, skipped = _last_good(bad, log, release_versions, yanked_versions(project_json), rolled_back)
    good_tag = _tag_named(tags, prefix, good)
    if good_tag is None:
        raise BadInput(f"the good version {good} has no tag {prefix}{good} in {options.repo}, so there is no code to "
                       "build the rollback from; pass --good with a tagged version, or --tag-prefix if tags differ")

    new = next_patch(bad)
    taken = [what for what, hit in (
        (f"tag {prefix}{new}", _tag_named(tags, prefix, new) is not None),
        ("a GitHub release", new in release_versions),
        (f"an entry in {log.path}", log.find(new) is not None),
        ("files on PyPI", new in published),
        (f"branch rollback-{new}", github.ref(f"heads/rollback-{new}") is not None),
    ) if hit]
    if taken:
        raise BadInput(f"the rollback version {new} (the next patch after {bad}) is taken: {', '.join(taken)}; "
                       f"{bad} is not the newest of its series, so roll back the newest bad release instead")
    newer = sorted({v for v in {*release_versions, *published, *(s.version for s in log.releases())}
                    if v is not None and v > bad and not v.is_prerelease})

    good_tag_name = f"{prefix}{_tag_text(tags, prefix, good)}"
    detected = version_file.detect(lambda p: github.read(p, good_tag_name), lambda p: github.listdir(p, good_tag_name),
                                   good, given=options.version_file, where=good_tag_name)
    name = name or detected.project_name
    return {
        "repo": repo["full_name"], "html_url": repo["html_url"], "clone_url": repo["clone_url"],
        "default_branch": default_branch, "issues_enabled": bool(repo.get("has_issues", True)), "token": token,
        "bad": str(bad), "good": str(good), "good_source": source, "rollback_version": str(new),
        "tag_prefix": prefix,
        "tags": {"bad": f"{prefix}{_tag_text(tags, prefix, bad) or bad}", "good": good_tag_name,
                 "new": f"{prefix}{new}"},
        "branch": f"rollback-{new}",
        "bad_tag": bad_tag, "good_tag": good_tag,
        "bad_release": _release_record(bad_release) if bad_release else None,
        "changelog": log.path,
        "version_files": [{"path": f.path, "kind": f.kind} for f in detected.files],
        "version_from_tag": detected.from_tag,
        "pypi_project": name,
        "pypi": pypi.release(name, str(bad)) if name else None,
        "skipped": skipped,
        "warnings": ([f"newer releases than {bad} exist ({', '.join(map(str, newer))}); they may carry the same "
                      "change and are not touched"] if newer else [])
        + ([] if name else ["no PyPI project name found (pyproject.toml, setup.cfg); pass --pypi-project to "
                            "check PyPI"]),
        "reason": options.reason,
    }


def _check_token(github: GitHub, repo: dict[str, Any], headers: Any) -> str:
    """'classic' or 'fine-grained', once it is clear the token may do every write of the runbook."""
    who = "the GitHub user of GITHUB_TOKEN"
    if not repo.get("permissions", {}).get("push"):
        raise BadInput(f"{who} cannot push to {repo['full_name']}; use a token of a maintainer of the repository")
    scopes_header = headers.get("X-OAuth-Scopes")
    if scopes_header is not None:
        scopes = {s.strip() for s in scopes_header.split(",") if s.strip()}
        if "repo" not in scopes and not ("public_repo" in scopes and not repo.get("private")):
            raise BadInput(
                f"GITHUB_TOKEN has the scopes {', '.join(sorted(scopes)) or '(none)'} but deleting tags and releases "
                f"and opening issues needs 'repo'{'' if repo.get('private') else ' or public_repo'}; create a "
                "classic token with it, or a fine-grained one with contents:write and issues:write"
            )
        return "classic"
    # Fine-grained tokens and GitHub App tokens say nothing of their permissions: ask with writes
    # GitHub rejects before doing anything (an empty body), 403 meaning "not permitted".
    needed = ["contents"] + (["issues"] if repo.get("has_issues", True) else [])
    missing = [what for what in needed if github.probe_write(what) in (401, 403, 404)]
    if missing:
        raise BadInput(f"GITHUB_TOKEN may not write {' and '.join(missing)} in {repo['full_name']}; give the "
                       f"fine-grained token {' and '.join(m + ':write' for m in missing)} on this repository")
    return "fine-grained"


def _read_changelog(github: GitHub, options: Options, branch: str) -> changelog_module.Changelog:
    names = [options.changelog] if options.changelog else None
    if names is None:
        listing = github.listdir("", branch) or {}
        names = [n for n in changelog_module.NAMES if n in listing and not listing[n]]
    for path in names:
        text = github.read(path, branch)
        if text is not None:
            return changelog_module.Changelog(text, path)
    wanted = options.changelog or " or ".join(changelog_module.NAMES[:4])
    raise BadInput(f"{options.repo} has no {wanted} on {branch}; the rollback is recorded in the changelog, so add "
                   "one (Keep a Changelog format) or pass --changelog PATH")


def _project_name(github: GitHub, ref: str) -> str | None:
    try:
        return version_file.project_name(lambda p: github.read(p, ref), where=ref)
    except BadInput:
        return None  # the good tag's files are read again, and judged, for the version


def _last_good(bad: Version, log: changelog_module.Changelog, releases: dict[Version, dict[str, Any]],
               yanked: set[str], rolled_back: Collection[str]) -> tuple[Version, str, list[dict[str, Any]]]:
    excluded: dict[Version, str] = {}
    for section in log.releases():
        if section.marked and section.version is not None:
            excluded[section.version] = f"marked yanked or rolled back in {log.path}"
    for version, release in releases.items():
        if _MARKED.search(release.get("name") or ""):
            excluded.setdefault(version, "marked yanked or rolled back in its GitHub release")
    for text in yanked:
        if (v := _v(text)) is not None:
            excluded.setdefault(v, "yanked on PyPI")
    for text in rolled_back:
        if (v := _v(text)) is not None:
            excluded.setdefault(v, "rolled back by an earlier backout package-rollback")
    sources = {s.version: log.path for s in log.releases() if s.version is not None}
    for version in releases:
        sources.setdefault(version, "GitHub releases")
    skipped = []
    for version in sorted(sources, reverse=True):
        if version >= bad:
            continue
        if version.is_prerelease and not bad.is_prerelease:
            skipped.append({"version": str(version), "why": "a pre-release"})
            continue
        if version in excluded:
            skipped.append({"version": str(version), "why": excluded[version]})
            continue
        return version, sources[version], skipped
    raise BadInput(f"no good version older than {bad} found in {log.path} or the GitHub releases"
                   f"{' (skipped: ' + ', '.join(s['version'] for s in skipped) + ')' if skipped else ''}; pass --good")


def _tag_named(tags: dict[str, dict[str, Any]], prefix: str, version: Version) -> dict[str, Any] | None:
    text = _tag_text(tags, prefix, version)
    return dict(tags[f"{prefix}{text}"]) if text is not None else None


def _tag_text(tags: dict[str, dict[str, Any]], prefix: str, version: Version) -> str | None:
    """The version part of the tag for `version` as spelled in the repository (1.2 vs 1.2.0)."""
    for name in tags:
        if version_of_tag(name, prefix) == version:
            return name[len(prefix):]
    return None


def _release_record(release: dict[str, Any]) -> dict[str, Any]:
    return {key: release.get(key) for key in ("id", "tag_name", "name", "body", "target_commitish", "draft",
                                               "prerelease", "html_url", "created_at", "published_at")}


def _v(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None
