"""Who may read the page, and proof that a form was sent from it.

HTTP basic auth: any user name, `BACKOUT_WEB_PASSWORD` as the password, compared in constant time.
There is no unauthenticated mode: `backout web` refuses to start without a password, on a dyno
(where the page is on the public internet) and off one (where a forwarded port or a shared machine
makes it public just as easily).

Password guessing is slowed per client: after FAILURES_ALLOWED wrong passwords within
FAILURE_WINDOW seconds, that client gets 429 without its password being checked until the window
has passed. Behind Heroku's router the client is the last address of X-Forwarded-For (the router
appends the address it saw; earlier ones are whatever the client sent).

Forms that act (the rollback) carry a CSRF token: an HMAC, keyed by a key derived from the
password, over the user name, the app and the time it was issued. Every web dyno derives the same
key, so a form shown by one dyno is accepted by another; a token expires after CSRF_MAX_AGE.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
from collections import deque

from backout.errors import ConfigError

REALM = "backout"
MIN_PASSWORD = 12
CSRF_MAX_AGE = 1800.0
FAILURES_ALLOWED = 20
FAILURE_WINDOW = 60.0
PASSWORD_FORM = (f"a random string of {MIN_PASSWORD} characters or more "
                 "(heroku config:set BACKOUT_WEB_PASSWORD=$(openssl rand -base64 24))")
_USER = re.compile(r"[^A-Za-z0-9@._+-]")


def check_password(password: str | None) -> str:
    """The password, or ConfigError saying how to set one; the page never answers without it."""
    if not password:
        raise ConfigError("BACKOUT_WEB_PASSWORD", "is not set, and the page shows nothing without a password",
                          PASSWORD_FORM)
    if len(password) < MIN_PASSWORD:
        raise ConfigError("BACKOUT_WEB_PASSWORD", f"is shorter than {MIN_PASSWORD} characters", PASSWORD_FORM)
    return password


def basic_user(header: str | None, password: str) -> str | None:
    """The user name of an `Authorization: Basic ...` header that carries the password, else None."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, given = decoded.partition(":")
    if not sep or not hmac.compare_digest(given.encode(), password.encode()):
        return None
    return display_user(user)


class Throttle:
    """Wrong passwords per client, over the last FAILURE_WINDOW seconds."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW) -> None:
        self.allowed = allowed
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(client)
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if failures is None:
                return False
            if not failures:
                del self._failures[client]
            return len(failures) >= self.allowed

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 10_000:  # a flood from many addresses: forget the oldest half
                for stale in list(self._failures)[:5_000]:
                    del self._failures[stale]
            self._failures.setdefault(client, deque()).append(now)


def client_address(forwarded_for: str | None, peer: str) -> str:
    """Who is asking: the last X-Forwarded-For address (Heroku's router appends it), else the peer."""
    last = (forwarded_for or "").rsplit(",", 1)[-1].strip()
    return last or peer


def display_user(user: str) -> str:
    """The user name as the ledger records it for a web request: short, plain characters only."""
    return _USER.sub("", user)[:40] or "anonymous"


def csrf_key(password: str) -> bytes:
    return hmac.new(password.encode(), b"backout web csrf", hashlib.sha256).digest()


def csrf_token(key: bytes, user: str, app: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(key, user, app, issued)}"


def csrf_valid(key: bytes, token: str | None, user: str, app: str, now: float | None = None) -> bool:
    """Whether `token` was issued to this user for this app, less than CSRF_MAX_AGE ago."""
    issued_text, _, mac = (token or "").partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    return 0 <= age <= CSRF_MAX_AGE and hmac.compare_digest(mac, _mac(key, user, app, issued))


def _mac(key: bytes, user: str, app: str, issued: int) -> str:
    return hmac.new(key, f"{user}\n{app}\n{issued}".encode(), hashlib.sha256).hexdigest()
