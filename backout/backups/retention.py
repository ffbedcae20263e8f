"""BACKOUT_KEEP: pruning the archives that no kept checkpoint needs, local and in storage.

A checkpoint is kept when it is among the newest `count` deploy checkpoints or younger than `age`
(either keeps it), and always when it is the newest checkpoint verified healthy (the target of
`--to previous`). A safety checkpoint is kept while it is younger than the policy's horizon: the
age, or the oldest deploy checkpoint the count keeps. Rolling back to a kept checkpoint's release
restores the archive of its restore point (the checkpoint taken when the next release was deployed
over it, or a safety checkpoint taken while it ran), so those archives are kept too. Only `pg_dump`
archives are pruned (Heroku keeps its own backups by its own rules); each prune is recorded on the
checkpoint (`pruned_at`, `pruned`), and a plan refuses to restore a pruned archive.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable


from backout import ledger
from backout.errors import BackoutError
from backout.ledger.records import CheckpointKind, CheckpointRow, CheckpointStatus, LedgerConnection
from backout.output import human_bytes
from backout.settings import Settings
from backout.storage.config import Keep
from backout.timestamps import parse_time

Progress = Callable[[str], None]


def restore_point_of(target: CheckpointRow, checkpoints: list[CheckpointRow]) -> CheckpointRow | None:
    """The checkpoint whose archive a rollback to `target`'s release restores (newest first list),
    chosen as a rollback plan chooses it (`rollback.database.step.restore_point`)."""
    from backout.rollback.database.step import left_by

    version = target.get("release_version")
    if version is None:
        return None
    later = [cp for cp in checkpoints if cp["status"] == CheckpointStatus.COMPLETE and cp["created_at"] > target["created_at"]
             and left_by(cp, version)]
    return later[-1] if later else target


def to_prune(checkpoints: list[CheckpointRow], keep: Keep, now: datetime | None = None) -> list[tuple[CheckpointRow, str]]:
    """The checkpoints (newest first in, oldest first out) whose archives the policy lets go, each with why."""
    if not keep.active:
        return []
    now = now or datetime.now(timezone.utc)
    complete = [cp for cp in checkpoints if cp["status"] == CheckpointStatus.COMPLETE]
    deploys = [cp for cp in complete if cp["kind"] == CheckpointKind.DEPLOY]
    kept: dict[str, CheckpointRow] = {}
    horizon = now
    if keep.count is not None:
        for cp in deploys[: keep.count]:
            kept[cp["id"]] = cp
        if deploys[: keep.count]:
            horizon = min(horizon, parse_time(deploys[: keep.count][-1]["created_at"]))
    if keep.age is not None:
        cutoff = now - timedelta(seconds=keep.age)
        horizon = min(horizon, cutoff)
        for cp in complete:
            if parse_time(cp["created_at"]) >= cutoff:
                kept[cp["id"]] = cp
    for cp in complete:
        if cp["kind"] == CheckpointKind.SAFETY and parse_time(cp["created_at"]) >= horizon:
            kept[cp["id"]] = cp
    healthy = next((cp for cp in deploys if cp.get("verified_healthy_at")), None)
    if healthy is not None:
        kept[healthy["id"]] = healthy
    needed = set(kept)
    for cp in list(kept.values()):
        point = restore_point_of(cp, complete)
        if point is not None:
            needed.add(point["id"])
    policy = keep.describe()
    return [(cp, f"BACKOUT_KEEP keeps {policy}; no kept checkpoint needs its archive")
            for cp in reversed(checkpoints) if _prunable(cp) and cp["id"] not in needed]


def _prunable(cp: CheckpointRow) -> bool:
    backup = cp.get("backup") or {}
    return cp["backup_strategy"] == "pg_dump" and not cp.get("pruned_at") and bool(backup.get("path") or backup.get("key"))


def prune(settings: Settings, conn: LedgerConnection, app: str, progress: Progress) -> list[dict[str, Any]]:
    """Delete the archives BACKOUT_KEEP lets go, each recorded on its checkpoint; what was pruned.

    A local archive is deleted only where it is (the machine that wrote it); one in storage from
    anywhere. A failure to delete one is reported and the rest go on."""
    keep = settings.storage.keep
    if not keep.active:
        return []
    pruned = []
    for cp, why in to_prune(ledger.list_checkpoints(conn, app), keep):
        backup = cp.get("backup") or {}
        try:
            if backup.get("storage") == "s3":
                from backout.storage import archives  # boto3: only for an archive in storage
                from backout.storage.client import make_client

                archives.delete(make_client(settings.storage), backup)
                where = backup.get("url")
            else:
                path = Path(backup["path"])
                if not path.is_file():
                    continue  # on another machine: pruned there, by its own runs
                path.unlink()
                where = str(path)
        except (BackoutError, OSError) as exc:
            progress(f"retention: could not prune {cp['id']}'s archive: {exc}")
            continue
        record = {"reason": why, "archive": where, "size": backup.get("size")}
        ledger.update_checkpoint(conn, cp["id"], pruned_at="now", pruned=record)
        progress(f"retention: pruned {cp['id']}'s archive {where} ({human_bytes(backup.get('size') or 0)}): {why}")
        pruned.append({"checkpoint_id": cp["id"], **record})
    return pruned
