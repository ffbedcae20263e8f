"""What each object under a prefix was at a point in time, from a paginated ListObjectVersions.

S3 lists a prefix's versions and delete markers sorted by key, newest first within a key, in pages
of up to 1,000 entries; a key's history can run across pages, so a key is judged only once the
listing has moved past it. LastModified has a resolution of one second: an entry in the same second
as the point in time counts as before it. A version and a delete marker of one key in the same
second are ordered by which is the key's latest, else the version is taken as the newer (restoring
a file that was deleted in that second loses nothing; hiding one that existed would).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from backout.storage.client import S3_ERRORS, failure
from backout.storage.config import Location


@dataclass(frozen=True)
class Entry:
    key: str
    version_id: str
    last_modified: datetime
    is_latest: bool
    deleted: bool  # a delete marker
    size: int = 0
    etag: str | None = None


@dataclass(frozen=True)
class History:
    """One key: its current entry and the one that was current at the point in time (None: absent)."""

    key: str
    current: Entry
    then: Entry | None


def histories(client: Any, where: Location, at: datetime) -> Iterator[History]:
    """Every key under the location with what it is now and what it was at `at`."""
    group: list[Entry] = []
    for entry in _entries(client, where):
        if group and entry.key != group[0].key:
            yield _judge(group, at)
            group = []
        group.append(entry)
    if group:
        yield _judge(group, at)


def _entries(client: Any, where: Location) -> Iterator[Entry]:
    paginator = client.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=where.bucket, Prefix=where.prefix):
            found = [_entry(v, False) for v in page.get("Versions") or []]
            found += [_entry(m, True) for m in page.get("DeleteMarkers") or []]
            # A stable sort by key keeps S3's newest-first order within each kind.
            found.sort(key=lambda e: e.key)
            yield from found
    except S3_ERRORS as exc:
        raise failure(exc, f"cannot list the versions under {where.url}") from None


def _entry(item: dict[str, Any], deleted: bool) -> Entry:
    return Entry(key=item["Key"], version_id=item.get("VersionId") or "null", last_modified=item["LastModified"],
                 is_latest=bool(item.get("IsLatest")), deleted=deleted, size=int(item.get("Size") or 0),
                 etag=(item.get("ETag") or "").strip('"') or None)


def _judge(group: list[Entry], at: datetime) -> History:
    current = next((e for e in group if e.is_latest), None) or _newest(group)
    before = [e for e in group if e.last_modified <= at]
    return History(group[0].key, current, _newest(before) if before else None)


def _newest(entries: list[Entry]) -> Entry:
    """The newest of a key's entries: the latest one if among them, else by time, a version before a marker."""
    latest = next((e for e in entries if e.is_latest), None)
    if latest is not None:
        return latest
    version = next((e for e in entries if not e.deleted), None)
    marker = next((e for e in entries if e.deleted), None)
    if version is None or marker is None:
        return version or marker  # type: ignore[return-value]
    return marker if marker.last_modified > version.last_modified else version
