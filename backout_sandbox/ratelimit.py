"""Heroku's per-token request budget: 4500 requests, refilled gradually over an hour."""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    """A token bucket per API token. `limit` requests at most; `limit / window` come back each second."""

    def __init__(self, limit: int = 4500, window: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("the rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.refill = limit / window
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # token -> (tokens, at)

    def _level(self, token: str) -> float:
        tokens, at = self._buckets.get(token, (float(self.limit), self.clock()))
        now = self.clock()
        tokens = min(float(self.limit), tokens + (now - at) * self.refill)
        self._buckets[token] = (tokens, now)
        return tokens

    def spend(self, token: str) -> tuple[bool, int]:
        """Spend one request for `token`: (allowed, remaining afterwards)."""
        with self._lock:
            tokens = self._level(token)
            if tokens < 1:
                return False, 0
            self._buckets[token] = (tokens - 1, self._buckets[token][1])
            return True, int(tokens - 1)

    def remaining(self, token: str) -> int:
        with self._lock:
            return int(self._level(token))
