"""HTTP probes of an app's health endpoint.

A probe has one of three outcomes: `pass`; `fail`, a wrong answer (a status outside the accepted
range, a body without the expected text or JSON field, a refused redirect); or `error`, no answer at
all (DNS, refused connection, timeout, TLS, a dropped connection). The policy counts failures and
errors apart: a wrong answer is the app speaking, an error may be the network between us.

Probes go through one urllib3 pool shared by every thread, so a watched app's keep-alive connection
is reused from one probe to the next: the monitor probes a thousand targets every ten seconds, and a
new TCP (or TLS) connection per probe would cost more than the probe itself. urllib3 is what requests
is built on; requests' per-call overhead alone is about three times urllib3's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from backout import __version__, defaults
from backout.redact import mask_url, redact, secrets_from_env
from backout.release_version import parse_release_version
from backout.settings import HealthSettings



class Outcome(StrEnum):
    """What one probe saw (see the module docstring)."""

    PASS = "pass"
    FAIL = "fail"  # a wrong answer
    ERROR = "error"  # no answer


PASS, FAIL, ERROR = Outcome.PASS, Outcome.FAIL, Outcome.ERROR
MAX_REDIRECTS = 5
BODY_LIMIT = 256 * 1024
# Connection pools kept, one per host probed: every app a worker watches, with room to spare.
MAX_HOSTS = 2048
_REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))


@dataclass(frozen=True)
class ProbeSpec:
    """What a probe sends and what it accepts."""

    expect: tuple[tuple[int, int], ...] = defaults.HEALTH_EXPECT
    body: str | None = None
    json: tuple[str, str] | None = None
    timeout: float = defaults.HEALTH_TIMEOUT
    follow_redirects: bool = True
    release_header: str | None = None
    release_field: str | None = None

    @classmethod
    def from_settings(cls, health: HealthSettings) -> "ProbeSpec":
        return cls(
            expect=health.expect, body=health.body, json=health.json, timeout=health.timeout,
            follow_redirects=health.redirects == "follow", release_header=health.release_header,
            release_field=health.release_field,
        )

    def accepts(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.expect)

    def expected_statuses(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.expect)


@dataclass(frozen=True)
class ProbeResult:
    url: str
    outcome: Outcome
    reason: str
    status: int | None = None
    # The release the app says answered (from the release header or JSON field), None if not said.
    release: int | str | None = None
    elapsed: float = 0.0
    at: float = 0.0  # wall-clock time the probe started

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed"] = round(self.elapsed, 4)
        return out


class Prober:
    """Makes probes; safe to call from many threads at once (they share one connection pool)."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        try:
            import certifi

            ca = {"ca_certs": certifi.where()}
        except ImportError:  # pragma: no cover - certifi comes with requests
            ca = {}
        self._pool = urllib3.PoolManager(
            num_pools=MAX_HOSTS, maxsize=2, block=False, retries=False,
            headers={"User-Agent": f"backout-health/{__version__}", "Accept": "*/*"}, **ca,
        )

    def close(self) -> None:
        self._pool.clear()

    def probe(self, url: str) -> ProbeResult:
        """One probe of `url`, judged against the spec. Never raises for network trouble."""
        started_wall, started = time.time(), time.monotonic()
        # A result is shown, stored and sent on: it carries the URL with its credentials masked.
        shown = mask_url(url)
        try:
            status, headers, body = self._get(url)
        except _Unreachable as exc:
            return ProbeResult(shown, ERROR, redact(str(exc), secrets_from_env({"URL": url})),
                               elapsed=time.monotonic() - started, at=started_wall)
        outcome, reason, release = self.judge(status, headers, body)
        return ProbeResult(shown, outcome, reason, status, release, time.monotonic() - started, started_wall)

    def judge(self, status: int, headers: Any, body: bytes) -> tuple[Outcome, str, int | str | None]:
        """(outcome, reason, release) of an answer."""
        spec = self.spec
        document: Any = _NOT_PARSED
        release: int | str | None = None
        if spec.release_header:
            release = _release_value(headers.get(spec.release_header))
        if release is None and spec.release_field:
            document = _parse_json(body)
            release = _release_value(_field(document, spec.release_field))

        if status in _REDIRECT_STATUSES and "location" in {k.lower() for k in headers}:
            target = headers.get("Location", "")
            if spec.follow_redirects:
                return FAIL, f"more than {MAX_REDIRECTS} redirects (last to {target})", release
            return FAIL, f"redirected to {target}; redirects are refused (BACKOUT_HEALTH_REDIRECTS=refuse)", release
        if not spec.accepts(status):
            return FAIL, f"status {status}, expected {spec.expected_statuses()}", release
        if spec.body is not None and spec.body not in body.decode("utf-8", "replace"):
            return FAIL, f"status {status} but the body does not contain {spec.body!r}", release
        if spec.json is not None:
            path, expected = spec.json
            if document is _NOT_PARSED:
                document = _parse_json(body)
            if document is _NOT_JSON:
                return FAIL, f"status {status} but the body is not JSON (expected {path}={expected})", release
            value = _field(document, path)
            if value is _MISSING:
                return FAIL, f"status {status} but the JSON has no field {path} (expected {path}={expected})", release
            if _render(value) != expected:
                return FAIL, f"JSON field {path} is {_render(value)!r}, expected {expected!r}", release
        return PASS, f"status {status}", release

    def _get(self, url: str) -> tuple[int, Any, bytes]:
        timeout = urllib3.Timeout(connect=self.spec.timeout, read=self.spec.timeout)
        redirect = self.spec.follow_redirects
        retries = urllib3.Retry(total=MAX_REDIRECTS, connect=0, read=0, status=0, other=0,
                                redirect=MAX_REDIRECTS, raise_on_redirect=False) if redirect else False
        # A kept-alive connection the app closed just now fails on first use; one retry on a fresh
        # connection tells that apart from an app that really drops connections.
        for attempt in (1, 2):
            try:
                response = self._pool.request("GET", url, timeout=timeout, retries=retries,
                                              redirect=redirect, preload_content=False)
            except (HTTPError, OSError, ValueError) as exc:
                reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
                if isinstance(reason, ProtocolError) and attempt == 1:
                    continue
                raise _Unreachable(_describe(reason, self.spec.timeout)) from None
            try:
                body = response.read(BODY_LIMIT, decode_content=True)
                if len(body) >= BODY_LIMIT:
                    response.close()  # the rest is not needed; the connection cannot be reused
                else:
                    response.read()
            except ReadTimeoutError:
                response.close()
                raise _Unreachable(f"timed out after {self.spec.timeout:g}s reading the answer") from None
            except (ProtocolError, HTTPError, OSError) as exc:
                response.close()
                raise _Unreachable(f"connection dropped while reading: {_cause(exc)}") from None
            finally:
                response.release_conn()
            return response.status, response.headers, body
        raise AssertionError("unreachable")  # pragma: no cover


class _Unreachable(Exception):
    """No answer was had; the message says why."""


_NOT_PARSED = object()
_NOT_JSON = object()
_MISSING = object()


def _describe(reason: BaseException, timeout: float) -> str:
    # Order matters: urllib3's NewConnectionError is a subclass of ConnectTimeoutError.
    if isinstance(reason, NameResolutionError):
        host = getattr(reason.conn, "host", None) if hasattr(reason, "conn") else None
        return f"DNS lookup of {host} failed" if host else "DNS lookup failed: " + _cause(reason)
    if isinstance(reason, NewConnectionError):
        text = str(reason).lower()
        if "refused" in text:
            return "connection refused"
        if "timed out" not in text:
            return "cannot connect: " + _cause(reason)
    if isinstance(reason, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)) or "timed out" in str(reason):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, SSLError):
        return "TLS error: " + _cause(reason)
    if isinstance(reason, ProtocolError):
        return "connection dropped: " + _cause(reason)
    return "cannot probe: " + _cause(reason)


def _cause(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 prefixes the connection object's repr; the part after the last colon says why.
    for marker in ("Failed to establish a new connection:", "Failed to resolve "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip().strip("()'\"") or type(exc).__name__


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _field(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _render(value: Any) -> str:
    """A JSON value as the text a setting holds: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _release_value(value: Any) -> int | str | None:
    """`v42`, `42` or 42 as the version number 42; any other non-empty value as text."""
    if value is None or value is _MISSING or value is _NOT_JSON or value == "":
        return None
    version = parse_release_version(value)
    return version if version is not None else str(value).strip()
