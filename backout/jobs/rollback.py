"""The code/config rollback job: `run_rollback(request_id)`.

The job takes only the ledger request's id; everything else (the plan, the app, who asked) is read
from the ledger, and secrets from the worker's environment. It

1. takes the app's lock, so one rollback per app runs at a time (a second request waits for it);
2. checks whether the app already runs the target's slug and config vars: then it records success
   without making a release (a request merged into an earlier one that got there first, or a job
   delivered twice);
3. runs the data steps of the plan first, when there are any: the database step, then the files step;
4. calls the Platform API rollback, follows the new release's release phase to `succeeded` or
   `failed`, and verifies that the current release has the target's slug and config vars (except
   those that add-ons set: Heroku does not roll back add-ons, so they stay as they are);
5. records each step in the ledger and tells people (webhook, Sentry) how it ended.

A job that runs twice rolls back once: the rollback release it made is recorded as soon as Heroku
answers, and a retried job also looks for a `Rollback to vN` release made since the plan before it
asks for another. A job cut short by the worker's shutdown puts its request back in the queue.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from rq.exceptions import ShutDownImminentException

from backout import ledger
from backout.errors import BackoutError
from backout.heroku import ApiObject, HerokuClient
from backout.ledger.records import FINAL_STATUSES, RequestRow, RequestStatus, StepName, StepStatus
from backout.notify import notify
from backout.output import Progress
from backout.redact import redact
from backout.release_version import slug_id
from backout.rollback.plan import TargetRelease, addon_config_vars, config_changes
from backout.settings import Settings, load

log = logging.getLogger(__name__)

# How long a request waits for another rollback of the same app before it gives up.
LOCK_WAIT = 30 * 60
RELEASE_POLL = 1.0


class RollbackFailed(BackoutError):
    """The rollback was carried out as far as it could go and did not reach the target."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def run_rollback(request_id: str) -> dict[str, Any]:
    """Carry out one rollback request from the ledger; returns its result (also stored in the ledger)."""
    settings = load()
    settings.require("BACKOUT_DATABASE_URL", "HEROKU_API_KEY")
    assert settings.ledger_url is not None
    # A point-in-time restore may move the ledger to the promoted database: the connection follows.
    conn = ledger.FollowingConnection(ledger.connect(settings.ledger_url))
    try:
        request = ledger.get_request(conn, request_id)
        if request is None:
            # Another ledger's (apps sharing a Redis; an older backout shared one queue among
            # them): failing it here would fail it for the app that owns it. Its own worker's
            # sweep finds it unfinished and gives it its job again.
            log.warning("rollback request %s is not in this worker's ledger; left to its own", request_id)
            return {"status": "not in this ledger"}
        if ledger.moved_away(conn, request_id):
            log.warning("rollback request %s moved with the ledger to a promoted database; this copy is stale",
                        request_id)
            return {"status": "moved with the ledger"}
        if request["status"] in FINAL_STATUSES or request["dry_run"]:
            log.info("rollback request %s is already %s; nothing to do", request_id, request["status"])
            return request["result"] or {"status": request["status"]}
        ledger.update_request(conn, request_id, attempts=request["attempts"] + 1)
        with _app_lock(conn, settings, request) as held:
            if not held:
                return _finish(conn, settings, request, RequestStatus.FAILED, {"status": RequestStatus.FAILED},
                               f"another rollback of {request['app']} held the app's lock for {LOCK_WAIT // 60} minutes")
            # Another delivery of this same request may have finished it while this one waited.
            request = ledger.require_request(conn, request_id)
            if request["status"] in FINAL_STATUSES:
                return request["result"] or {"status": request["status"]}
            ledger.update_request(conn, request_id, status=RequestStatus.RUNNING,
                                  **({} if request["started_at"] else {"started_at": "now"}))
            try:
                with HerokuClient.from_settings(settings) as client:
                    result = _carry_out(conn, client, request)
            except ShutDownImminentException:
                ledger.record_step(conn, request_id, StepName.INTERRUPTED, StepStatus.FAILED,
                                   {"reason": "the worker is shutting down; the request goes back to the queue"})
                ledger.update_request(conn, request_id, status=RequestStatus.QUEUED)
                raise
            except RollbackFailed as exc:
                return _finish(conn, settings, request, RequestStatus.FAILED, exc.result, str(exc))
            except Exception as exc:
                error = redact(f"{type(exc).__name__}: {exc}", settings.secrets())
                _close_open_step(conn, request_id, error)
                _finish(conn, settings, request, RequestStatus.FAILED, {"status": RequestStatus.FAILED}, error)
                if isinstance(exc, BackoutError):
                    return {"status": RequestStatus.FAILED}
                raise  # a bug: let RQ and Sentry report it too
            return _finish(conn, settings, request, RequestStatus.SUCCEEDED, result, None)
    finally:
        conn.close()


def _carry_out(conn: ledger.FollowingConnection, client: HerokuClient, request: RequestRow) -> dict[str, Any]:
    request_id, app = request["id"], request["app"]
    plan = request["plan"]
    target = plan["target"]
    result: dict[str, Any] = {"status": RequestStatus.FAILED, "target_version": target["version"], "rolled_back": False}
    target_config = client.release_config_vars(app, target["version"])
    managed = addon_config_vars(client, app)

    release = _release_made_earlier(conn, client, request)
    if release is None:
        current = client.current_release(app)
        if _runs(client, app, current, target, target_config, managed):
            merged = _merged_into(conn, request, current)
            # The code is there already; the database step still runs unless the request merged
            # into did the same one.
            if plan.get("db_step") and not _same_database_step(conn, merged, plan["db_step"]):
                result["db"] = _run_database_step(conn, request)
            if plan.get("files_step"):
                result["files"] = _run_files_step(request)
            detail = {"reason": "the app already runs the target's slug and config vars",
                      "current_version": current["version"], "merged_into": merged}
            ledger.record_step(conn, request_id, StepName.CODE_ROLLBACK, StepStatus.SKIPPED, detail)
            ledger.record_step(conn, request_id, StepName.VERIFY, StepStatus.DONE, {"release_version": current["version"]})
            return {**result, "status": RequestStatus.SUCCEEDED, "release_version": current["version"],
                    "release_id": current["id"], "merged_into": merged}
        if plan.get("db_step"):
            result["db"] = _run_database_step(conn, request)
            managed = addon_config_vars(client, app)  # a promoted rollback database attaches anew
        if plan.get("files_step"):
            result["files"] = _run_files_step(request)
        ledger.record_step(conn, request_id, StepName.CODE_ROLLBACK, StepStatus.STARTED,
                           {"target_version": target["version"], "from_version": current["version"]})
        release = client.rollback(app, target["id"])
        ledger.record_step(conn, request_id, StepName.CODE_ROLLBACK, StepStatus.DONE,
                           {"release_id": release["id"], "release_version": release["version"]})
    result.update(rolled_back=True, release_version=release["version"], release_id=release["id"])

    ledger.record_step(conn, request_id, StepName.RELEASE_PHASE, StepStatus.STARTED, {"release_version": release["version"]})
    final = client.wait_release(app, release["id"], poll=RELEASE_POLL)
    if final.get("status") != "succeeded":
        current = client.current_release(app)
        result["current_version"] = current["version"]
        ledger.record_step(conn, request_id, StepName.RELEASE_PHASE, StepStatus.FAILED,
                           {"release_version": final["version"], "status": final.get("status"),
                            "current_version": current["version"]})
        raise RollbackFailed(
            f"the release phase of v{final['version']} (rollback to v{target['version']}) ended "
            f"{final.get('status')}; {app} is still on v{current['version']}", result)
    ledger.record_step(conn, request_id, StepName.RELEASE_PHASE, StepStatus.DONE, {"release_version": final["version"]})

    current = client.current_release(app)
    problems = []
    if current["id"] != final["id"]:
        problems.append(f"the current release is v{current['version']}, not the rollback release v{final['version']}")
    if slug_id(current) != target.get("slug_id"):
        problems.append(f"its slug is {slug_id(current)}, not v{target['version']}'s {target.get('slug_id')}")
    changes = config_changes(target_config, client.config_vars(app), managed)
    differ = sorted(name for names in changes.values() for name in names)
    if differ:
        problems.append(f"config vars differ from v{target['version']}'s: {', '.join(differ)}")
    result["current_version"] = current["version"]
    if problems:
        ledger.record_step(conn, request_id, StepName.VERIFY, StepStatus.FAILED, {"problems": problems})
        raise RollbackFailed("verification failed: " + "; ".join(problems), result)
    ledger.record_step(conn, request_id, StepName.VERIFY, StepStatus.DONE,
                       {"release_version": current["version"], "slug_id": slug_id(current)})
    return {**result, "status": RequestStatus.SUCCEEDED}


def _release_made_earlier(conn: Any, client: HerokuClient, request: RequestRow) -> dict[str, Any] | None:
    """The rollback release an earlier run of this request made, if any."""
    for step in reversed(ledger.steps(conn, request["id"])):
        if step["step"] == StepName.CODE_ROLLBACK and step["status"] == StepStatus.DONE:
            return client.release_info(request["app"], step["detail"]["release_id"])
    if request["attempts"] <= 1:
        return None  # this is the first run: nothing can have been made yet
    # A run killed between Heroku's answer and the ledger write left no step; Heroku has the release.
    plan = request["plan"]
    release = client.rollback_release_since(request["app"], plan["target"]["version"], plan["current"]["version"],
                                            failed=False)
    if release is not None:
        ledger.record_step(conn, request["id"], StepName.CODE_ROLLBACK, StepStatus.DONE,
                           {"release_id": release["id"], "release_version": release["version"],
                            "found": "made by an earlier run of this request"})
    return release


def _runs(client: HerokuClient, app: str, current: ApiObject, target: TargetRelease,
          target_config: Mapping[str, Any], managed: set[str]) -> bool:
    if slug_id(current) != target.get("slug_id"):
        return False
    return not any(config_changes(target_config, client.config_vars(app), managed).values())


def _merged_into(conn: Any, request: RequestRow, current: ApiObject) -> str | None:
    """The earlier request whose rollback made the current release, when there is one."""
    for other in ledger.list_requests(conn, request["app"], statuses=[RequestStatus.SUCCEEDED], limit=20):
        if other["id"] != request["id"] and (other["result"] or {}).get("release_id") == current["id"]:
            return other["id"]
    return None


def _run_database_step(conn: Any, request: RequestRow) -> dict[str, Any]:
    """The plan's database step (safety checkpoint, then restore or down migrations); a summary."""
    from backout.rollback.database.step import run_db_step

    step = request["plan"]["db_step"]
    done = run_db_step(load(), request["id"], step, Progress(prefix=f"backout {request['id']}"), conn=conn)
    return {key: done.get(key) for key in ("restore_point", "safety_checkpoint_id", "mode", "undone") if key in done}


def _run_files_step(request: RequestRow) -> dict[str, Any]:
    """The plan's files step (a safety checkpoint of the files, then the restore); a summary."""
    from backout.rollback.files_step import run_files_step  # S3 loads only for a files step

    done = run_files_step(load(), request["id"], request["plan"]["files_step"],
                          Progress(prefix=f"backout {request['id']}"))
    return {key: done.get(key) for key in ("restore_point", "safety_checkpoint_id", "summary") if key in done}


def _same_database_step(conn: Any, request_id: str | None, step: dict[str, Any]) -> bool:
    if request_id is None:
        return False
    other = (ledger.require_request(conn, request_id)["plan"] or {}).get("db_step") or {}
    return (other.get("kind"), (other.get("restore_point") or {}).get("id")) == (
        step.get("kind"), (step.get("restore_point") or {}).get("id"))


@contextmanager
def _app_lock(conn: Any, settings: Settings, request: RequestRow) -> Iterator[bool]:
    assert settings.ledger_url is not None
    with ledger.app_lock(settings.ledger_url, request["app"], wait=False) as held:
        if held:
            yield True
            return
    ledger.record_step(conn, request["id"], StepName.LOCK, StepStatus.STARTED,
                       {"reason": f"another rollback of {request['app']} is running; waiting for it"})
    with ledger.app_lock(settings.ledger_url, request["app"], timeout=LOCK_WAIT) as held:
        if held:
            ledger.record_step(conn, request["id"], StepName.LOCK, StepStatus.DONE, None)
        yield held


def _close_open_step(conn: Any, request_id: str, error: str) -> None:
    """Record as failed the step that was under way when an error cut the job short."""
    steps = ledger.steps(conn, request_id)
    if steps and steps[-1]["status"] == StepStatus.STARTED:
        ledger.record_step(conn, request_id, steps[-1]["step"], StepStatus.FAILED, {"error": error})


def _finish(conn: Any, settings: Settings, request: RequestRow, status: RequestStatus, result: dict[str, Any],
            error: str | None) -> dict[str, Any]:
    request_id, app = request["id"], request["app"]
    if error is not None:
        error = redact(error, settings.secrets())
    result = {**result, "status": status}
    ledger.update_request(conn, request_id, status=status, result=result, error=error, finished_at="now")
    target = request["plan"]["target"]["version"]
    who = request["requested_by"]
    if status == RequestStatus.SUCCEEDED and not result.get("rolled_back"):
        text = f"{app} already runs v{target}'s code and config; nothing rolled back (request {request_id} by {who})"
    elif status == RequestStatus.SUCCEEDED:
        text = f"Rolled {app} back to v{target} as release v{result['release_version']} (request {request_id} by {who})"
    else:
        text = f"Rollback of {app} to v{target} failed: {error} (request {request_id} by {who})"
    log.log(logging.INFO if status == RequestStatus.SUCCEEDED else logging.ERROR, text)
    notify(settings, f"rollback.{status}", text, {"request_id": request_id, "app": app, **result})
    return result
