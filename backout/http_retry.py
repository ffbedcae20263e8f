"""Calling an HTTP API with requests: a timeout on every call and one retry policy.

429 and 5xx answers are retried with capped exponential backoff and full jitter, honouring
`Retry-After`. A call that may have taken effect on the server (a non-idempotent method that got a
5xx, or lost its connection after sending) is repeated only when the caller says that is safe:
`retry_post=True`, or a `before_retry` check that looks first. The Heroku, GitHub and PyPI clients
all go through `RetryingSession.request`.
"""

from __future__ import annotations

import email.utils
import logging
import random as random_module
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import requests
import urllib3.exceptions

from backout.redact import MASK, redact

log = logging.getLogger("backout.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. The delay before retry n (1-based) is uniform in
    [0, min(max_delay, base_delay * 2**(n-1))] ("full jitter"), unless the answer said Retry-After."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A server asking for a longer pause than this is not waited for: the answer is returned.
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be 1 or more")

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        return random() * min(self.max_delay, self.base_delay * 2 ** (retry - 1))

    @staticmethod
    def retryable_status(status: int) -> bool:
        # 501 Not Implemented will not change on a second try.
        return status == 429 or (500 <= status <= 599 and status != 501)


class BearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer <token>`; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            # requests would quote the bad header value, token included, in its own error.
            raise ValueError("the API token is empty or contains whitespace or control characters")
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return f"BearerAuth({MASK})"

    @property
    def secret(self) -> str:
        return self._token


class _NoAuth(requests.auth.AuthBase):
    """Explicitly no credentials: stops requests from falling back to ~/.netrc."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def retry_after_seconds(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now() if now else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection failed before any byte of the request went out."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class RetryingSession:
    """A requests session that retries what can safely be retried.

    `sleep` and `random` are injectable so tests record delays instead of waiting.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        auth: BearerAuth | None = None,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random_module.random,
        session: requests.Session | None = None,
    ) -> None:
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.random = random
        self._auth = auth
        self._session = session or requests.Session()
        self._session.headers.update(headers or {})

    def __repr__(self) -> str:
        return f"RetryingSession(timeout={self.timeout}, max_attempts={self.policy.max_attempts})"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        authenticated: bool = True,
        retry_post: bool = False,
        before_retry: Callable[[], bool] | None = None,
    ) -> requests.Response:
        """Send the request, retrying per the policy; return the last response (any status).

        Connection errors that outlast the retries are raised (requests exceptions).
        For a non-idempotent method (POST, PATCH), a 5xx or a connection lost after sending may
        mean the work was done: it is retried only with `retry_post=True`, or when
        `before_retry()` returns True (it is asked before each such retry, and should look
        whether the first attempt took effect). A 429, or a connection that was never made, is
        always retried: the server did nothing.
        """
        method = method.upper()
        safe_to_repeat = method in IDEMPOTENT_METHODS or retry_post
        auth = (self._auth or _NoAuth()) if authenticated else _NoAuth()
        secrets = [self._auth.secret] if self._auth else []
        attempt = 0
        while True:
            attempt += 1
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                response = self._session.request(
                    method, url, params=params, json=json, data=data, headers=headers,
                    timeout=timeout or self.timeout, auth=auth,
                )
            except _TRANSIENT as exc:
                if isinstance(exc, requests.exceptions.SSLError):
                    raise
                may_have_taken_effect = not _never_sent(exc)
                if attempt >= self.policy.max_attempts or not self._may_repeat(
                    may_have_taken_effect, safe_to_repeat, before_retry
                ):
                    raise
                failure = type(exc).__name__
                delay = self.policy.backoff(attempt, self.random)
            else:
                status = response.status_code
                if not self.policy.retryable_status(status) or attempt >= self.policy.max_attempts:
                    return response
                # A 429 was refused before any work; a 5xx may have been half done.
                if not self._may_repeat(status != 429, safe_to_repeat, before_retry):
                    return response
                failure = str(status)
                delay = self.policy.backoff(attempt, self.random)
                told = retry_after_seconds(response.headers.get("Retry-After"))
                if told is not None:
                    if told > self.policy.max_retry_after:
                        return response
                    delay = told
                response.close()
            log.warning(
                "%s %s: %s; retry %d of %d in %.1fs",
                method, redact(url, secrets), failure, attempt, self.policy.max_attempts - 1, delay,
            )
            self.sleep(delay)

    @staticmethod
    def _may_repeat(
        may_have_taken_effect: bool, safe_to_repeat: bool, before_retry: Callable[[], bool] | None
    ) -> bool:
        if not may_have_taken_effect or safe_to_repeat:
            return True
        return before_retry is not None and before_retry()
