"""A package rollback as a ledger request: plan it, run it (now, or on the worker), rerun it.

One request per repository and bad version: a rerun finds the request, keeps its plan (the bad tag
may be gone by then) and carries on with the steps not done. Runs of one repository never overlap
(the ledger's advisory lock, keyed by the repository).
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from typing import Any, Callable

from packaging.version import InvalidVersion, Version

from backout import ledger
from backout.errors import BackoutError, BadInput, PlanRefused
from backout.ledger.records import LedgerConnection, RequestRow, RequestStatus
from backout.package_rollback.github import GitHub
from backout.package_rollback.plan import Options, PackagePlan, make_plan
from backout.package_rollback.pypi import PyPI
from backout.package_rollback.runbook import Context, execute
from backout.settings import Settings

log = logging.getLogger(__name__)

KIND = "package"


@dataclass
class Planned:
    plan: PackagePlan
    request: RequestRow | None  # the existing request this continues, if any


def clients(settings: Settings, repo: str) -> tuple[GitHub, PyPI]:
    settings.require("GITHUB_TOKEN")
    assert settings.github_token is not None
    return GitHub(settings.github_api_url, settings.github_token, repo), PyPI(settings.pypi_url)


def find_request(conn: LedgerConnection, repo: str, bad: str) -> RequestRow | None:
    """The newest package rollback of `repo`'s version `bad` that was not refused."""
    for request in ledger.list_requests(conn, app=repo, limit=500):
        params = request.get("params") or {}
        if request["kind"] == KIND and request["status"] != RequestStatus.REFUSED and _same(params.get("bad"), bad):
            return request
    return None


def rolled_back(conn: LedgerConnection | None, repo: str) -> set[str]:
    """Bad versions of the repository's earlier package rollbacks."""
    if conn is None:
        return set()
    bad = {(r["params"] or {}).get("bad") for r in ledger.list_requests(conn, app=repo, limit=500)
           if r["kind"] == KIND and r["status"] != RequestStatus.REFUSED}
    return {version for version in bad if version is not None}


def plan_request(settings: Settings, options: Options, conn: LedgerConnection | None) -> Planned:
    """The plan of a new request, or the stored one of the request this continues."""
    options.check()
    existing = find_request(conn, options.repo, options.bad) if conn is not None else None
    if existing is not None and existing.get("plan"):
        plan = existing["plan"]
        if options.good is not None and not _same(options.good, plan["good"]):
            raise BadInput(f"request {existing['id']} already rolls {plan['bad']} back to {plan['good']}; rerun "
                           f"without --good, or with --good {plan['good']}")
        return Planned(plan, existing)
    github, pypi = clients(settings, options.repo)
    try:
        others = rolled_back(conn, options.repo) - {options.bad}
        return Planned(make_plan(github, pypi, options, rolled_back=others), None)
    finally:
        github.close()
        pypi.close()


def check_confirm(plan: PackagePlan, confirm: str | None) -> None:
    if (confirm or "").lower() != plan["repo"].lower():
        raise PlanRefused(
            f"deleting the tag and GitHub release of {plan['repo']} {plan['bad']} needs --confirm {plan['repo']}; "
            "look at the plan above (or run with --dry-run), then rerun with it"
        )


def start(settings: Settings, conn: LedgerConnection, planned: Planned, options: Options,
          requested_by: str | None = None, extra: dict[str, Any] | None = None) -> RequestRow:
    """The ledger request for `planned`: the existing one, or a new one written now."""
    if planned.request is not None:
        return planned.request
    return ledger.create_request(
        conn, app=planned.plan["repo"], target=planned.plan["bad"], db="none", dry_run=False,
        requested_by=requested_by or _who(), kind=KIND, plan=planned.plan, params={**options.params(), **(extra or {})},
    )


def run_request(settings: Settings, conn: LedgerConnection, request: RequestRow, *, recheck: bool = False,
                checkout: str | None = None, progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Run the request's remaining steps (only the PyPI re-check with `recheck`) under the
    repository's lock; return its result. `checkout` overrides the one the request was made with."""
    settings.require("BACKOUT_DATABASE_URL")
    assert settings.ledger_url is not None
    plan = request["plan"]
    params = request.get("params") or {}
    github, pypi = clients(settings, plan["repo"])
    ctx = Context(settings=settings, conn=conn, request_id=request["id"], plan=plan, github=github, pypi=pypi,
                  checkout=checkout or params.get("checkout"), progress=progress)
    try:
        # The lock is the request's `app` (the repository), the key the worker's recovery looks at.
        with ledger.app_lock(settings.ledger_url, request["app"], wait=False) as held:
            if not held:
                raise BackoutError(f"another package rollback of {plan['repo']} is running; wait for it to end "
                                   f"(request {request['id']})")
            return execute(ctx, recheck=recheck)
    finally:
        github.close()
        pypi.close()


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
