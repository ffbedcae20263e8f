"""Expiring signed URLs, like the S3 URLs Heroku hands out for slug blobs, release output and backups.

Whoever holds such a URL may use it without the API token, until it expires; anyone else gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timezone
from typing import Mapping
from urllib.parse import urlencode


class Signer:
    def __init__(self, key: str, base_url: str) -> None:
        self._key = key.encode()
        self.base_url = base_url.rstrip("/")

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, path: str, ttl: float) -> tuple[str, str]:
        """A URL for `path` valid for `ttl` seconds, and its expiry time (ISO 8601, UTC)."""
        expires = int(time.time() + ttl)
        query = urlencode({"expires": expires, "signature": self._signature(path, expires)})
        at = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.base_url}{path}?{query}", at

    def valid(self, path: str, query: Mapping[str, list[str]]) -> bool:
        try:
            expires = int(query.get("expires", [""])[0])
        except ValueError:
            return False
        signature = query.get("signature", [""])[0]
        return expires >= time.time() and hmac.compare_digest(signature, self._signature(path, expires))
