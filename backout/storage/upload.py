"""A multipart upload written like a file: bounded memory whatever the size, aborted on failure.

Bytes written are cut into parts (8 MiB, doubling every 1,000 parts so that S3's 10,000-part limit
is never reached below 8 TB), each sent with its Content-MD5 by a small pool of threads; at most
`workers` parts are in flight and one is being filled (in place: a full part is sent as it is, not
copied), so memory stays at (workers + 1) parts.
`complete()` finishes the upload and checks the object's size; any failure, or leaving the `with`
block by an exception, aborts it, so no half-written object ever appears under the key.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backout.errors import BackoutError
from backout.storage.client import failure

PART_SIZE = 8 << 20
PARTS_PER_DOUBLING = 1000
# Two parts in flight keep up with what a checkpoint compresses (about 40 MB/s of zstd on two cores;
# one S3 connection takes 50 MB/s and more), and four held 30 MB more at the peak for no speed
# (bench/storage_checkpoint_bench.py).
WORKERS = 2


def part_size(number: int, base: int = PART_SIZE) -> int:
    """The size of part `number` (1-based): it doubles every PARTS_PER_DOUBLING parts."""
    return base << ((number - 1) // PARTS_PER_DOUBLING)


class MultipartUpload:
    """`with MultipartUpload(...) as up: up.write(...); up.complete()`."""

    def __init__(self, client: Any, bucket: str, key: str, *, sse: str = "AES256", content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None, workers: int = WORKERS, base_part: int = PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.sse = sse
        self.content_type = content_type
        self.metadata = metadata or {}
        self.base_part = base_part
        self.digest = hashlib.sha256()
        self.size = 0
        self.upload_id: str | None = None
        self._part: bytearray | None = None  # the part being filled
        self._filled = 0
        self._number = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backout-upload")
        self._workers = workers
        self._pending: deque[Future] = deque()
        self._parts: list[dict[str, Any]] = []
        self._done = False

    def __enter__(self) -> "MultipartUpload":
        extra: dict[str, Any] = {"ContentType": self.content_type, "Metadata": self.metadata}
        if self.sse != "none":
            extra["ServerSideEncryption"] = self.sse
        try:
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **extra)
        except Exception as exc:
            self._pool.shutdown(wait=False)
            raise failure(exc, f"cannot start the upload of s3://{self.bucket}/{self.key}") from None
        self.upload_id = answer["UploadId"]
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if not self._done:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        view = memoryview(data).cast("B")
        while view:
            if self._part is None:
                self._part, self._filled = bytearray(part_size(self._number + 1, self.base_part)), 0
            take = min(len(view), len(self._part) - self._filled)
            self._part[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == len(self._part):
                self._send(self._part)
                self._part = None
        return len(data)

    def flush(self) -> None:
        pass

    def complete(self) -> dict[str, Any]:
        """Send the last part, complete the upload, check the object; {"etag", "size", "sha256", "parts"}."""
        if self._part is not None or not self._number:
            self._send(self._part[:self._filled] if self._part is not None else bytearray())
            self._part = None
        while self._pending:
            self._parts.append(self._result(self._pending.popleft()))
        where = f"s3://{self.bucket}/{self.key}"
        try:
            answer = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])})
        except Exception as exc:
            raise failure(exc, f"cannot complete the upload of {where}") from None
        self._done = True
        self._pool.shutdown(wait=True)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            raise failure(exc, f"cannot read back {where} after uploading it") from None
        if head["ContentLength"] != self.size:
            raise BackoutError(f"{where} holds {head['ContentLength']} bytes after the upload, but {self.size} were sent")
        return {"etag": head.get("ETag", "").strip('"'), "size": self.size, "sha256": self.digest.hexdigest(),
                "parts": self._number, "version_id": answer.get("VersionId"),
                "encryption": head.get("ServerSideEncryption")}

    def abort(self) -> None:
        """Stop: cancel what has not been sent and abort the upload (its parts are discarded)."""
        self._done = True
        for pending in self._pending:
            pending.cancel()
        self._pool.shutdown(wait=True)
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # noqa: BLE001 - the next run's sweep aborts what is left (see archives.sweep)
                pass

    def _send(self, part: bytearray) -> None:
        self._number += 1
        if len(self._pending) >= self._workers:
            self._parts.append(self._result(self._pending.popleft()))
        self._pending.append(self._pool.submit(self._upload_part, self._number, part))

    def _upload_part(self, number: int, data: bytearray) -> dict[str, Any]:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - S3's integrity check
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                         PartNumber=number, Body=data, ContentMD5=md5)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _result(self, future: Future) -> dict[str, Any]:
        try:
            return future.result()
        except Exception as exc:
            raise failure(exc, f"uploading s3://{self.bucket}/{self.key} failed") from None
