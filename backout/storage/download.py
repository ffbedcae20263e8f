"""Reading an object as a stream, with ranged GETs in parallel and in order: bounded memory.

A restore reads the archive once from start to end; S3 serves one connection at well under what a
machine can take in, so `workers` ranges are fetched at once, each pinned to the object's ETag
(`If-Match`): an object replaced while it is read fails the read instead of mixing two archives.
"""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backout.errors import BackoutError
from backout.storage.client import failure

RANGE = 8 << 20
WORKERS = 4


class RangedReader(io.RawIOBase):
    """A raw binary stream of one object (one version, when `version_id` is given)."""

    def __init__(self, client: Any, bucket: str, key: str, *, size: int, etag: str | None = None,
                 version_id: str | None = None, workers: int = WORKERS, span: int = RANGE) -> None:
        super().__init__()
        self.client = client
        self.bucket = bucket
        self.key = key
        self.size = size
        self.etag = etag
        self.version_id = version_id
        self.span = span
        self.name = f"s3://{bucket}/{key}"
        self._next = 0  # offset of the next range to ask for
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backout-download")
        self._ahead = workers + 1
        self._pending: deque[Future] = deque()
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "memoryview | bytearray") -> int:  # type: ignore[override]
        if not self._current:
            self._fill_queue()
            if not self._pending:
                return 0
            self._current = memoryview(self._take(self._pending.popleft()))
            self._fill_queue()
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            for pending in self._pending:
                pending.cancel()
            self._pool.shutdown(wait=True)
        super().close()

    def _fill_queue(self) -> None:
        while len(self._pending) < self._ahead and self._next < self.size:
            start, end = self._next, min(self._next + self.span, self.size) - 1
            self._next = end + 1
            self._pending.append(self._pool.submit(self._get, start, end))

    def _get(self, start: int, end: int) -> bytes:
        extra: dict[str, Any] = {}
        if self.etag:
            extra["IfMatch"] = f'"{self.etag}"'
        if self.version_id:
            extra["VersionId"] = self.version_id
        answer = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}", **extra)
        data = answer["Body"].read()
        if len(data) != end - start + 1:
            raise BackoutError(f"{self.name}: asked for bytes {start}-{end}, got {len(data)} bytes")
        return data

    def _take(self, future: Future) -> bytes:
        try:
            return future.result()
        except BackoutError:
            raise
        except Exception as exc:
            raise failure(exc, f"reading {self.name} failed") from None
