"""Computing and validating a rollback plan before anything changes.

A plan says which release the app goes back to, how it was chosen, what the code/config change is
(config var names only, never values), whether it is already done, and the database step
(`backout.rollback.database`). `build_plan` only reads: from the Platform API and the ledger. It
raises `PlanRefused` (exit status 2) for anything that cannot be carried out:

- an unknown app, release or checkpoint, or a `--to` that is not `vNN`, a checkpoint id or `previous`;
- a target release that is not eligible for rollback (failed, pending, expired slug);
- a database step (`--db down|restore`) without `--confirm <app>` (a dry run needs none), or one the
  plan cannot complete.

A target whose slug and config vars are already the current release's is not refused: the plan
says `noop: true`, and the job records success without making a release.

The plan is a JSON document stored in the ledger with the request; its keys are stable:
`app`, `to`, `resolved_by` (`version`, `checkpoint`, `verified-checkpoint`, `previous-release`),
`current` and `target` (releases: `version`, `id`, `slug_id`, `description`, `created_at`,
`checkpoint_id`; the target also `verified_healthy_at`), `config_changes` (`added`, `removed`,
`changed`: lists of names), `addon_config_vars` (names set by add-ons, which a rollback leaves as
they are), `noop`, `db`, `db_step` (null, or the database step), `verdict` (null when not going
back, else what the rollback costs by the verdicts recorded with the checkpoints:
`backout.verdict.cost`), and `steps` (what the job will do, in order).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Collection, Mapping, TypeAlias, TypedDict

from backout import ledger
from backout.errors import HerokuAPIError, PlanRefused
from backout.heroku import ApiObject, HerokuClient
from backout.ledger.records import CheckpointRow, StepName
from backout.release_version import parse_release_version, slug_id
from backout.settings import Settings, load

if TYPE_CHECKING:  # the steps' modules load only when a plan has such a step
    from backout.rollback.database.step import DbStep
    from backout.rollback.files_step import FilesStep

TO_FORMS = "vNN (a release version), a checkpoint id (cp_...), or `previous`"
DB_CHOICES = ("none", "down", "restore")
_CHECKPOINT = re.compile(r"cp_[0-9A-Z]{26}")


class ReleaseSummary(TypedDict):
    """A release as a plan names it."""

    version: int
    id: str
    slug_id: str | None
    description: str | None
    created_at: str | None
    checkpoint_id: str | None  # its deploy checkpoint, if the ledger has one


class TargetRelease(ReleaseSummary):
    verified_healthy_at: str | None


# "added", "removed" and "changed", each a sorted list of config var names (names only: values are secrets).
ConfigChanges: TypeAlias = dict[str, list[str]]


class Plan(TypedDict):
    """A rollback plan: stored with its request in the ledger, printed by --dry-run, carried out by
    backout.jobs.rollback. Its keys are stable (see this module's docstring)."""

    app: str
    to: str
    resolved_by: str
    current: ReleaseSummary
    target: TargetRelease
    config_changes: ConfigChanges
    addon_config_vars: list[str]
    noop: bool
    db: str
    db_step: DbStep | None
    files: str
    files_step: FilesStep | None
    verdict: dict[str, Any] | None  # backout.verdict.cost's document
    steps: list[str]  # StepName values, in the order the job runs them


def build_plan(
    client: HerokuClient, conn: ledger.LedgerConnection, app: str, to: str, db: str = "none",
    confirm: str | None = None, settings: Settings | None = None, dry_run: bool = False, files: str = "none",
) -> Plan:
    """The plan for rolling `app` back to `to`, or PlanRefused saying why it cannot be done."""
    if db not in DB_CHOICES:
        raise PlanRefused(f"--db {db!r} is not one of {', '.join(DB_CHOICES)}")
    to = (to or "").strip()
    if not (to == "previous" or _version(to) is not None or _CHECKPOINT.fullmatch(to)):
        raise PlanRefused(f"--to {to!r} is not understood; expected {TO_FORMS}")
    try:
        client.app_info(app)
    except HerokuAPIError as exc:
        if exc.status == 404:
            raise PlanRefused(f"unknown app {app!r}: {exc.message}") from None
        raise
    current = client.current_release(app)
    target, checkpoint, resolved_by = _resolve_target(client, conn, app, to, current)
    if target["version"] != current["version"]:
        _check_eligible(app, target)

    current_config = client.release_config_vars(app, current["version"])
    target_config = client.release_config_vars(app, target["version"])
    managed = addon_config_vars(client, app)
    changes = config_changes(current_config, target_config, managed)
    noop = slug_id(target) == slug_id(current) and not any(changes.values())

    if db != "none" and confirm != app and not dry_run:  # a dry run changes nothing: nothing to confirm
        raise PlanRefused(
            f"--db {db} discards data written since the checkpoint; to allow it, add --confirm {app}"
        )
    if files != "none" and confirm != app and not dry_run:
        raise PlanRefused(
            f"--files {files} puts the uploaded files back as they were at the checkpoint; to allow it, add --confirm {app}"
        )
    step = database_step(conn, app, db, current, target, checkpoint, settings=settings, client=client)
    files_step = None
    if files != "none":
        from backout.rollback.files_step import plan_files_step  # S3 loads only for a files step

        files_step = plan_files_step(settings or load(), conn, app, checkpoint, files,
                                     target_version=target["version"], current_version=current["version"])

    # Exactly the steps the job runs: a database step behind its safety checkpoint, the files step,
    # and no code rollback (nor its release phase) when the app already runs the target's code and config.
    steps: list[str] = [] if step is None else (
        ([StepName.SAFETY_CHECKPOINT] if step.get("safety_checkpoint") else []) + [step["kind"]])
    steps += [] if files_step is None else [files_step["kind"]]
    steps += [StepName.VERIFY] if noop else [StepName.CODE_ROLLBACK, StepName.RELEASE_PHASE, StepName.VERIFY]
    cost = None
    if target["version"] < current["version"]:
        from backout.verdict.cost import cost_now

        cost = cost_now(settings or load(), conn, app, target["version"], current["version"])
    return {
        "app": app,
        "to": to,
        "resolved_by": resolved_by,
        "current": _release_summary(current, ledger.checkpoint_for_release(conn, app, current["version"])),
        "target": {
            **_release_summary(target, checkpoint),
            "verified_healthy_at": checkpoint.get("verified_healthy_at") if checkpoint else None,
        },
        "config_changes": changes,
        "addon_config_vars": sorted(managed),
        "noop": noop,
        "db": db,
        "db_step": step,
        "files": files,
        "files_step": files_step,
        "verdict": cost,
        "steps": steps,
    }


def database_step(
    conn: ledger.LedgerConnection, app: str, db: str, current: ApiObject, target: ApiObject,
    checkpoint: CheckpointRow | None, settings: Settings | None = None, client: HerokuClient | None = None,
) -> DbStep | None:
    """The database part of the plan: None for `--db none`.

    For `down` it lists the migrations to revert (from the down scripts saved in the checkpoints)
    and refuses to cross an irreversible one; for `restore`, the backup to restore and the data
    written since that would be lost. Both always begin with a safety checkpoint. See
    `backout.rollback.database.step.plan_db_step`.
    """
    if db == "none":
        return None
    from backout.rollback.database.step import plan_db_step

    return plan_db_step(settings or load(), conn, app, checkpoint, db, target_version=target["version"],
                        current_version=current["version"], heroku=client)


def addon_config_vars(client: HerokuClient, app: str) -> set[str]:
    """The config var names the app's add-ons set. A rollback leaves them as they are now (Heroku
    does not roll back add-ons), so plans and verification leave them out."""
    names: set[str] = set()
    for addon in client.addons(app):
        names.update(addon.get("config_vars") or [])
    for attachment in client.attachments(app):
        names.add(f"{attachment['name']}_URL")
    return names


def config_changes(current: Mapping[str, Any], target: Mapping[str, Any], managed: Collection[str] = ()) -> ConfigChanges:
    """Which config var names a rollback adds, removes or changes (names only: values are secrets).

    Names in `managed` (set by add-ons) are left out: a rollback does not change them.
    """
    current = {k: v for k, v in current.items() if k not in managed}
    target = {k: v for k, v in target.items() if k not in managed}
    return {
        "added": sorted(set(target) - set(current)),
        "removed": sorted(set(current) - set(target)),
        "changed": sorted(k for k in set(current) & set(target) if current[k] != target[k]),
    }


def describe(plan: Plan) -> str:
    """The plan as lines a person reads."""
    current, target = plan["current"], plan["target"]
    how = {
        "version": "as asked",
        "checkpoint": f"from checkpoint {target.get('checkpoint_id')}",
        "verified-checkpoint": f"the newest release verified healthy (checkpoint {target.get('checkpoint_id')})",
        "previous-release": "the newest release eligible for rollback before the current one (none verified healthy)",
    }[plan["resolved_by"]]
    lines = [
        f"app:     {plan['app']}",
        f"current: v{current['version']}  {current.get('description') or ''}".rstrip(),
        f"target:  v{target['version']}  {target.get('description') or ''}  ({how})".rstrip(),
    ]
    if plan["noop"]:
        lines.append("nothing to do: the app already runs the target's slug and config vars")
    else:
        slug = "same slug" if current.get("slug_id") == target.get("slug_id") else "slug changes"
        changes = plan["config_changes"]
        config = ", ".join(f"{kind}: {' '.join(names)}" for kind, names in changes.items() if names) or "no config changes"
        lines.append(f"code:    {slug}; config vars {config}")
    # .get: plans stored by an older backout may lack the newer keys.
    if verdict := plan.get("verdict"):
        from backout.verdict.cost import describe as describe_cost

        lines += describe_cost(verdict)
    step = plan["db_step"]
    lines.append(f"database: {'left as it is' if step is None else step.get('summary', plan['db'])}")
    if files_step := plan.get("files_step"):
        lines.append(f"files:   {files_step['summary']}")
    lines.append("steps:   " + " -> ".join(plan["steps"]))
    return "\n".join(lines)


def _resolve_target(
    client: HerokuClient, conn: ledger.LedgerConnection, app: str, to: str, current: ApiObject
) -> tuple[dict[str, Any], CheckpointRow | None, str]:
    if to == "previous":
        checkpoint = ledger.latest_verified_checkpoint(conn, app, before_version=current["version"])
        if checkpoint is not None and (version := checkpoint["release_version"]):
            return _release(client, app, version), checkpoint, "verified-checkpoint"
        for release in client.list_releases(app):
            if release["version"] < current["version"] and _eligible(release):
                return release, ledger.checkpoint_for_release(conn, app, release["version"]), "previous-release"
        raise PlanRefused(
            f"app {app!r} has no release before v{current['version']} that is eligible for rollback, "
            "and no checkpoint verified healthy; name a release with --to vNN"
        )
    if to.startswith("cp_"):
        checkpoint = ledger.get_checkpoint(conn, to)
        if checkpoint is None or checkpoint["app"] != app:
            raise PlanRefused(f"checkpoint {to} is not a checkpoint of {app!r}; `backout checkpoints --app {app}` lists them")
        if not (version := checkpoint["release_version"]):
            raise PlanRefused(f"checkpoint {to} records no release version, so there is nothing to roll back to")
        return _release(client, app, version), checkpoint, "checkpoint"
    number = _version(to)
    assert number is not None  # build_plan let through only the forms above
    return _release(client, app, number), ledger.checkpoint_for_release(conn, app, number), "version"


def _release(client: HerokuClient, app: str, version: int) -> ApiObject:
    try:
        return client.release_info(app, version)
    except HerokuAPIError as exc:
        if exc.status == 404:
            raise PlanRefused(f"app {app!r} has no release v{version}; `backout status --app {app}` lists them") from None
        raise


def _eligible(release: ApiObject) -> bool:
    # `eligible_for_rollback` comes with the API's sdk variant; without it, a succeeded release is.
    return release.get("status") == "succeeded" and release.get("eligible_for_rollback", True) is not False


def _check_eligible(app: str, target: ApiObject) -> None:
    if _eligible(target):
        return
    status = target.get("status")
    why = f"its status is {status}" if status != "succeeded" else "Heroku says it is not eligible (its slug may have expired)"
    raise PlanRefused(f"release v{target['version']} of {app!r} cannot be rolled back to: {why}; choose another with --to vNN")


def _version(to: str) -> int | None:
    """The release version of a `--to vNN` (a bare number is not one: it could be mistaken for a count)."""
    return parse_release_version(to) if to[:1] in ("v", "V") else None


def _release_summary(release: ApiObject, checkpoint: CheckpointRow | None) -> ReleaseSummary:
    return {
        "version": release["version"],
        "id": release["id"],
        "slug_id": slug_id(release),
        "description": release.get("description"),
        "created_at": release.get("created_at"),
        "checkpoint_id": checkpoint["id"] if checkpoint else None,
    }
