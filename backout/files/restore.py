"""Putting a checkpoint's files back: the plan (counts and bytes per action) and the restore.

Per object under each recorded location, comparing what it is now with what it was at the
checkpoint's time (`timeline`):
- `restore`: changed since; the old version is copied over the key as its new current version.
- `undelete`: deleted since; the old version is copied back the same way.
- `delete`: created since; a delete marker is put on the key (no version id: nothing is destroyed).
An object whose current version has the old one's ETag and size has the old content already and is
left alone, so a restore cut short and run again does the rest only.

Listing and copying overlap: actions go to a thread pool as the listing finds them, with a bounded
queue, so a prefix of any size restores in constant memory.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

from backout.defaults import DAY
from backout.errors import BackoutError, PlanRefused
from backout.output import human_bytes
from backout.storage.client import S3_ERRORS, failure
from backout.storage.config import Location
from backout.files.record import noncurrent_expiry_days, versioning
from backout.files.timeline import History, histories
from backout.timestamps import parse_time

Progress = Callable[[str], None]

ACTIONS = ("restore", "undelete", "delete")
WORKERS = 16
PROGRESS_EVERY = 5.0
EXAMPLES = 5
# CopyObject copies up to 5 GiB in one request; larger objects are copied in parts.
SINGLE_COPY_LIMIT = 5 << 30


def action_for(history: History) -> str | None:
    """What a restore does to one key (None: it is as it was)."""
    now, then = history.current, history.then
    if then is None or then.deleted:
        return None if now.deleted else "delete"
    if now.deleted:
        return "undelete"
    if now.version_id == then.version_id or (now.etag is not None and now.etag == then.etag and now.size == then.size):
        return None
    return "restore"


def plan(client: Any, files: dict[str, Any], checkpoint_id: str) -> dict[str, Any]:
    """What restoring the files recorded by a checkpoint would do; PlanRefused when it cannot."""
    locations = (files or {}).get("locations") or []
    if not locations:
        raise PlanRefused(f"checkpoint {checkpoint_id} recorded no files (BACKOUT_FILES was not set, or no bucket "
                          "was versioned when it was taken); roll back without --files restore")
    planned = []
    for item in locations:
        where, at = location_of(item), parse_time(item["time"])
        _check_versions_kept(client, where, at, checkpoint_id)
        tally = _Tally()
        for history in histories(client, where, at):
            tally.add(history, action_for(history))
        planned.append({"url": where.url, "time": item["time"], **tally.to_json()})
    return {"locations": planned, "summary": summary(planned)}


def restore(client: Any, files: dict[str, Any], progress: Progress, workers: int = WORKERS) -> dict[str, Any]:
    """Restore every recorded location; {"safety_time", "locations": [...]}. Raises BackoutError
    (after finishing the rest) when some objects could not be restored."""
    done = []
    safety: str | None = None
    for item in files.get("locations") or []:
        where, at = location_of(item), parse_time(item["time"])
        now, _ = versioning(client, where)
        safety = safety or now.isoformat()
        progress(f"files: restoring {where.url} to {item['time']} (the time just before this restore is {now.isoformat()})")
        done.append({"url": where.url, "time": item["time"], **_Restorer(client, where, progress, workers).run(at)})
    failed = sum(loc["failed"] for loc in done)
    result = {"safety_time": safety, "locations": done, "summary": summary(done)}
    if failed:
        first = next(loc["first_error"] for loc in done if loc["failed"])
        raise _PartlyRestored(f"{failed} objects could not be restored (first: {first}); the others were; "
                              "run the rollback again to retry them", result)
    return result


class _PartlyRestored(BackoutError):
    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def summary(locations: list[dict[str, Any]]) -> str:
    parts = []
    for action, verb in (("restore", "changed since, old version copied back"), ("undelete", "deleted since, copied back"),
                         ("delete", "created since, hidden by a delete marker")):
        count = sum(loc[action]["count"] for loc in locations)
        size = sum(loc[action]["bytes"] for loc in locations)
        parts.append(f"{count} {verb} ({human_bytes(size)})")
    unchanged = sum(loc["unchanged"] for loc in locations)
    return "; ".join(parts) + f"; {unchanged} unchanged"


def location_of(item: dict[str, Any]) -> Location:
    return Location(item["bucket"], item["prefix"])


def _check_versions_kept(client: Any, where: Location, at: datetime, checkpoint_id: str) -> None:
    days = noncurrent_expiry_days(client, where)
    if days is not None and (datetime.now(timezone.utc) - at).total_seconds() > days * DAY:
        raise PlanRefused(f"checkpoint {checkpoint_id}'s files under {where.url} are from {at.isoformat()}, but a lifecycle "
                          f"rule deletes noncurrent versions after {days} days: some may be gone; choose a newer checkpoint")


class _Tally:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, Any]] = {a: {"count": 0, "bytes": 0, "examples": []} for a in ACTIONS}
        self.unchanged = 0

    def add(self, history: History, action: str | None, size: int | None = None) -> None:
        if action is None:
            self.unchanged += 1
            return
        entry = self.counts[action]
        entry["count"] += 1
        entry["bytes"] += size if size is not None else _bytes(history, action)
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(history.key)

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, "unchanged": self.unchanged}


def _bytes(history: History, action: str) -> int:
    # Copies move the old version's bytes; a delete marker hides the current version's.
    if action == "delete":
        return history.current.size
    return history.then.size if history.then else 0


class _Restorer:
    """One location's restore: the listing feeds a thread pool through a bounded queue."""

    def __init__(self, client: Any, where: Location, progress: Progress, workers: int) -> None:
        self.client = client
        self.where = where
        self.progress = progress
        self.workers = workers
        self.tally = _Tally()
        self.lock = threading.Lock()
        self.failed = 0
        self.first_error: str | None = None
        self.finished = 0

    def run(self, at: datetime) -> dict[str, Any]:
        started = time.monotonic()
        slots = threading.BoundedSemaphore(self.workers * 4)
        next_report = time.monotonic() + PROGRESS_EVERY
        seen = 0
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backout-files") as pool:
            for history in histories(self.client, self.where, at):
                seen += 1
                action = action_for(history)
                if action is None:
                    self.tally.add(history, None)
                    continue
                slots.acquire()
                future = pool.submit(self._apply, history, action)
                future.add_done_callback(partial(self._done, history=history, action=action, slots=slots))
                if time.monotonic() >= next_report:
                    self._report(seen)
                    next_report = time.monotonic() + PROGRESS_EVERY
        seconds = time.monotonic() - started
        changed = sum(self.tally.counts[a]["count"] for a in ACTIONS)
        self.progress(f"files: {self.where.url}: {seen} objects checked, {changed} restored in {seconds:.1f}s"
                      + (f", {self.failed} failed" if self.failed else ""))
        return {**self.tally.to_json(), "objects": seen, "seconds": round(seconds, 3), "failed": self.failed,
                "first_error": self.first_error}

    def _report(self, seen: int) -> None:
        with self.lock:
            done = self.finished
        self.progress(f"files: {self.where.url}: {seen} objects checked, {done} changes made")

    def _apply(self, history: History, action: str) -> None:
        bucket, key = self.where.bucket, history.key
        if action == "delete":
            self.client.delete_object(Bucket=bucket, Key=key)
            return
        assert history.then is not None
        source = {"Bucket": bucket, "Key": key, "VersionId": history.then.version_id}
        if history.then.size <= SINGLE_COPY_LIMIT:
            self.client.copy_object(Bucket=bucket, Key=key, CopySource=source)
        else:
            self.client.copy(source, bucket, key)

    def _done(self, future: Future, *, history: History, action: str, slots: threading.BoundedSemaphore) -> None:
        slots.release()
        error = future.exception()
        with self.lock:
            if error is None:
                self.tally.add(history, action)
                self.finished += 1
                return
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(failure(error, f"{action} {history.key}") if isinstance(error, S3_ERRORS) else error)
