"""What a checkpoint records of the app's uploads: per location, the S3 server's time, the object
count and bytes, and whether a rollback to it can be promised (versioning on, versions kept).

The time is the S3 server's own (the Date of its answer), since object versions are stamped by
its clock, not the dyno's.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Callable

from backout.defaults import DAY
from backout.errors import BackoutError
from backout.storage.client import S3_ERRORS, code_of, failure
from backout.storage.config import Location, StorageSettings

Progress = Callable[[str], None]

ENABLE_VERSIONING = "aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled"


def record(storage: StorageSettings, client: Any, progress: Progress) -> dict[str, Any]:
    """{"locations": [...], "warnings": [...]} for every BACKOUT_FILES location; BackoutError when a
    bucket is not versioned and BACKOUT_FILES_REQUIRED is not false."""
    locations, warnings = [], []
    for where in storage.files:
        when, status = versioning(client, where)
        if status != "Enabled":
            problem = (f"bucket {where.bucket} (BACKOUT_FILES) has versioning {status or 'never enabled'}, so a "
                       f"checkpoint cannot promise its files; enable it: {ENABLE_VERSIONING.format(bucket=where.bucket)}")
            if storage.files_required:
                raise BackoutError(problem + " (or set BACKOUT_FILES_REQUIRED=false to checkpoint without files)")
            warnings.append(problem)
            progress(f"files: warning: {problem}")
            continue
        days = noncurrent_expiry_days(client, where)
        if days is not None and (storage.keep.age is None or days * DAY < storage.keep.age):
            kept = f"BACKOUT_KEEP keeps {storage.keep.describe()}" if storage.keep.active else "checkpoints are kept until pruned"
            warning = (f"a lifecycle rule of bucket {where.bucket} deletes noncurrent versions under {where.url} after "
                       f"{days} days, but {kept}: files cannot be rolled back to checkpoints older than {days} days")
            warnings.append(warning)
            progress(f"files: warning: {warning}")
        objects, size = count(client, where)
        progress(f"files: {where.url}: {objects} objects, versioned, as of {when.isoformat()}")
        locations.append({"url": where.url, "bucket": where.bucket, "prefix": where.prefix,
                          "time": when.isoformat(), "objects": objects, "bytes": size,
                          "noncurrent_expiry_days": days})
    return {"locations": locations, "warnings": warnings}


def versioning(client: Any, where: Location) -> tuple[datetime, str | None]:
    """The S3 server's time now and the bucket's versioning status (None: never enabled)."""
    try:
        answer = client.get_bucket_versioning(Bucket=where.bucket)
    except S3_ERRORS as exc:
        raise failure(exc, f"cannot read the versioning of bucket {where.bucket} (BACKOUT_FILES)") from None
    return server_time(answer), answer.get("Status")


def server_time(answer: dict[str, Any]) -> datetime:
    """The Date header of an S3 answer (the server's clock), else this machine's clock."""
    date = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).astimezone(timezone.utc) if date else datetime.now(timezone.utc)
    except (TypeError, ValueError):
        return datetime.now(timezone.utc)


def noncurrent_expiry_days(client: Any, where: Location) -> int | None:
    """The fewest days after which an enabled lifecycle rule covering the prefix deletes noncurrent versions."""
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=where.bucket).get("Rules") or []
    except S3_ERRORS as exc:
        if code_of(exc) == "NoSuchLifecycleConfiguration":
            return None
        raise failure(exc, f"cannot read the lifecycle rules of bucket {where.bucket}") from None
    days = [rule["NoncurrentVersionExpiration"]["NoncurrentDays"] for rule in rules
            if rule.get("Status") == "Enabled" and (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
            and _covers(_rule_prefix(rule), where.prefix)]
    return min(days) if days else None


def count(client: Any, where: Location) -> tuple[int, int]:
    """How many objects are under the location now, and their bytes."""
    objects = size = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=where.prefix):
            for item in page.get("Contents") or []:
                objects += 1
                size += int(item.get("Size") or 0)
    except S3_ERRORS as exc:
        raise failure(exc, f"cannot list {where.url}") from None
    return objects, size


def _rule_prefix(rule: dict[str, Any]) -> str:
    found = rule.get("Filter") or {}
    return str(found.get("Prefix") or (found.get("And") or {}).get("Prefix") or rule.get("Prefix") or "")


def _covers(rule_prefix: str, prefix: str) -> bool:
    # A rule applies to some of the location's objects when either prefix starts the other.
    return prefix.startswith(rule_prefix) or rule_prefix.startswith(prefix)
