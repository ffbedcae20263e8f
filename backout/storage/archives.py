"""Checkpoint archives in object storage (BACKOUT_STORAGE_URL).

Each archive is one object, `<prefix><app>/<checkpoint id>.dump.zst`, written by a multipart upload
straight from the dump (`upload`), read back with parallel ranged GETs (`StoredArchive`), checked
for presence and size when a rollback is planned (`check`), deleted by retention (`delete`), and
the uploads that a killed checkpoint left open are aborted by the next one (`sweep`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable

from backout.errors import BackoutError
from backout.storage.client import S3_ERRORS, failure, status_of
from backout.storage.config import Location
from backout.storage.download import RangedReader

SUFFIX = ".dump.zst"
CHUNK = 1 << 20


def archive_key(where: Location, app: str, checkpoint_id: str) -> str:
    return where.key(f"{app}/{checkpoint_id}{SUFFIX}")


def checkpoint_of(key: str) -> str | None:
    """The checkpoint id an archive key was made for."""
    name = key.rsplit("/", 1)[-1]
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None


@dataclass(frozen=True)
class StoredArchive:
    """A checkpoint's archive in storage, as its ledger row describes it."""

    client: Any
    bucket: str
    key: str
    size: int | None
    etag: str | None = None
    version_id: str | None = None

    @classmethod
    def of(cls, client: Any, backup: dict[str, Any]) -> "StoredArchive":
        version = backup.get("version_id")
        return cls(client, backup["bucket"], backup["key"], backup.get("size"), backup.get("etag"),
                   None if version in (None, "null") else version)

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def check(self) -> None:
        """BackoutError saying what is missing when the object is gone or not the size recorded."""
        extra = {"VersionId": self.version_id} if self.version_id else {}
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key, **extra)
        except S3_ERRORS as exc:
            if status_of(exc) == 404:
                raise BackoutError(f"the archive {self.name} is no longer in storage (deleted or expired)") from None
            raise failure(exc, f"cannot look up the archive {self.name}") from None
        if self.size is not None and head["ContentLength"] != self.size:
            raise BackoutError(f"the archive {self.name} is {head['ContentLength']} bytes, but {self.size} were written: "
                               "it was replaced or cut short since")

    def open(self) -> BinaryIO:
        """The archive's compressed bytes, as a buffered stream."""
        if self.size is None:
            raise BackoutError(f"the checkpoint records no size for {self.name}")
        return io.BufferedReader(RangedReader(self.client, self.bucket, self.key, size=self.size, etag=self.etag,
                                              version_id=self.version_id), CHUNK)


def delete(client: Any, backup: dict[str, Any]) -> None:
    """Delete an archive (its recorded version, so a versioned bucket frees the space too)."""
    version = backup.get("version_id")
    extra = {} if version in (None, "null") else {"VersionId": version}
    try:
        client.delete_object(Bucket=backup["bucket"], Key=backup["key"], **extra)
    except S3_ERRORS as exc:
        if status_of(exc) != 404:
            raise failure(exc, f"cannot delete s3://{backup['bucket']}/{backup['key']}") from None


def sweep(client: Any, where: Location, app: str, writing: Callable[[str], bool]) -> list[str]:
    """Abort the multipart uploads under the app's prefix that no checkpoint is writing any more
    (`writing(checkpoint_id)` is false: see `ledger`'s view of running checkpoints). Returns the
    keys aborted."""
    aborted = []
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=where.bucket, Prefix=where.key(f"{app}/"))
        uploads: Iterable[dict[str, Any]] = (u for page in pages for u in page.get("Uploads") or [])
        for upload in uploads:
            checkpoint_id = checkpoint_of(upload["Key"])
            if checkpoint_id is not None and writing(checkpoint_id):
                continue
            client.abort_multipart_upload(Bucket=where.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted.append(upload["Key"])
    except S3_ERRORS as exc:
        raise failure(exc, f"cannot list the unfinished uploads under {where.url}") from None
    return aborted
