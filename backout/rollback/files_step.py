"""The files step of a rollback (`--files restore`): planning it and carrying it out.

The files go back to the time recorded by the same checkpoint the database step restores (the
restore point: the database as the target release left it), so rows and files match. The plan
lists, per recorded location, how many objects are restored, undeleted and hidden by a delete
marker, and their bytes (`backout.files.restore.plan`). Before anything is rewritten a safety
checkpoint records the files as they are (the database step's, when it took one that recorded
them; else one with no database copy), so the file rollback can be rolled back with
`--to <safety checkpoint> --files restore`. Nothing is destroyed either way: restores write new
versions and delete markers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypedDict


from backout import checkpoint as checkpoints
from backout import ledger
from backout.errors import BackoutError, PlanRefused
from backout.files import restore as files_restore
from backout.heroku import HerokuClient
from backout.ledger.records import (
    CheckpointKind,
    CheckpointRow,
    CheckpointStatus,
    LedgerConnection,
    RequestRow,
    StepName,
    StepStatus,
)
from backout.redact import redact
from backout.rollback.database.step import CheckpointSummary, restore_point, summary
from backout.settings import Settings
from backout.storage.client import make_client

Progress = Callable[[str], None]

FILES_CHOICES = ("none", "restore")
KIND = StepName.FILES_RESTORE


class FilesStep(TypedDict):
    """The files step of a rollback plan (`Plan["files_step"]`), JSON-friendly."""

    kind: str  # StepName.FILES_RESTORE
    files: str  # restore
    restore_point: CheckpointSummary
    restore_point_reason: str
    locations: list[dict[str, Any]]  # per bucket: its url, the time it goes back to, what changes
    summary: str
    safety: str


def plan_files_step(settings: Settings, ledger_conn: LedgerConnection, app: str, target_checkpoint: CheckpointRow | None,
                    files: str, *, target_version: int | None, current_version: int | None) -> FilesStep | None:
    """The files step of a plan (None for `--files none`); PlanRefused when it cannot be done."""
    if files == "none":
        return None
    if files not in FILES_CHOICES:
        raise PlanRefused(f"--files {files!r} is not one of {', '.join(FILES_CHOICES)}")
    point, why = restore_point(ledger_conn, app, target_checkpoint, target_version, current_version)
    planned = files_restore.plan(make_client(settings.storage), point.get("files") or {}, point["id"])
    return {"kind": KIND, "files": files, "restore_point": summary(point), "restore_point_reason": why,
            "locations": planned["locations"], "summary": planned["summary"],
            "safety": "a safety checkpoint records the files as they are before any is rewritten"}


def run_files_step(settings: Settings, request_id: str, files_step: FilesStep, progress: Progress) -> dict[str, Any]:
    """Carry out a planned files step for a request; the result, also recorded as its ledger step.
    Running it again restores what is still different only."""
    conn = ledger.connect(settings.ledger_url or "")
    try:
        request = ledger.require_request(conn, request_id)
        done = next((s for s in reversed(ledger.steps(conn, request_id))
                     if s["step"] == KIND and s["status"] == StepStatus.DONE), None)
        if done is not None:
            progress(f"{KIND}: already done by an earlier run of request {request_id}")
            return {**(done["detail"] or {}), "resumed": True}
        point = ledger.get_checkpoint(conn, files_step["restore_point"]["id"])
        if point is None or not (point.get("files") or {}).get("locations"):
            raise PlanRefused(f"checkpoint {files_step['restore_point']['id']} no longer records files")
        safety = _safety_checkpoint(settings, conn, request, point, progress)
        ledger.record_step(conn, request_id, KIND, StepStatus.STARTED,
                           {"restore_point": point["id"], "safety_checkpoint_id": safety["id"]})
        try:
            result = files_restore.restore(make_client(settings.storage), point["files"], progress)
        except BackoutError as exc:
            detail = {"reason": redact(str(exc), settings.secrets()), "safety_checkpoint_id": safety["id"],
                      **getattr(exc, "result", {})}
            ledger.record_step(conn, request_id, KIND, StepStatus.FAILED, detail)
            raise
        result.update(restore_point=point["id"], safety_checkpoint_id=safety["id"])
        ledger.record_step(conn, request_id, KIND, StepStatus.DONE, result)
        progress(f"{KIND}: {result['summary']}; undo it with backout rollback --app {request['app']} "
                 f"--to {safety['id']} --files restore --confirm {request['app']}")
        return result
    finally:
        conn.close()


def _safety_checkpoint(settings: Settings, conn: LedgerConnection, request: RequestRow, point: CheckpointRow,
                       progress: Progress) -> CheckpointRow:
    """A complete safety checkpoint of this request that recorded the files now; taken if none did."""
    for cp in ledger.list_checkpoints(conn, request["app"], limit=50):
        if (cp["kind"] == CheckpointKind.SAFETY and cp["request_id"] == request["id"]
                and cp["status"] == CheckpointStatus.COMPLETE
                and (cp.get("files") or {}).get("locations")):
            return cp
    storage = dataclasses.replace(settings.storage, files=tuple(
        files_restore.location_of(item) for item in point["files"]["locations"]))
    # The database is the database step's business: this checkpoint records the files only.
    local = dataclasses.replace(settings, backup="none", storage=storage, app_name=request["app"])
    with HerokuClient.from_settings(settings) as client:
        current = client.current_release(request["app"])
        release = checkpoints.release_from_info(current)
        return checkpoints.take(local, conn, release, kind=CheckpointKind.SAFETY, heroku=client, progress=progress,
                                request_id=request["id"])
