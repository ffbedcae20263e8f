"""Fault injection: scripted answers, slow answers, and release phases that fail.

Tests use it to see that clients survive what Heroku does on a bad day. A rule matches requests
by method and a regular expression on the path, and applies to the next `times` of them:

    sandbox.faults.script(429, times=3, path=r"/releases", retry_after=1)
    sandbox.faults.script(503, times=2)
    sandbox.faults.script(503, path=r"/releases$", method="POST", after=True)  # done, yet answered 503
    sandbox.faults.slow(2.5, path=r"^/apps/[^/]+$")
    sandbox.faults.fail_release("myapp")

The same rules can be posted as JSON to `POST /sandbox/faults` (see `Faults.apply_json`).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from backout_sandbox.routing import ApiError

_MESSAGES = {
    429: ("rate_limit", "Your account reached the API rate limit\nPlease wait a few minutes before making new requests"),
    500: ("internal_server_error", "Internal server error."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "API is temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


@dataclass
class Rule:
    id: int
    times: int
    method: str | None = None
    path: str | None = None
    status: int | None = None  # None: answer normally (after the delay)
    delay: float = 0.0
    retry_after: float | None = None
    error_id: str | None = None
    message: str | None = None
    after: bool = False  # answer with the error only after the request has done its work
    hits: int = 0
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return self._regex is None or bool(self._regex.search(path))

    def error(self) -> ApiError:
        assert self.status is not None
        error_id, message = _MESSAGES.get(self.status, ("error", f"Injected error {self.status}."))
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = f"{self.retry_after:g}"
        return ApiError(self.status, self.error_id or error_id, self.message or message, headers)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "times_left": self.times, "hits": self.hits, "method": self.method,
                "path": self.path, "status": self.status, "delay": self.delay, "retry_after": self.retry_after,
                "after": self.after}


class Faults:
    """The injected faults of one sandbox. Thread-safe; rules are used up in the order added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._release_failures: dict[str, int] = {}
        self._spent: dict[int, int] = {}  # hits of rules already used up
        self._next_id = 1

    def script(self, status: int, *, times: int = 1, method: str | None = None, path: str | None = None,
               retry_after: float | None = None, delay: float = 0.0, error_id: str | None = None,
               message: str | None = None, after: bool = False) -> int:
        """Answer the next `times` matching requests with `status` (429, 500, 503, ...) in Heroku's
        error shape, after `delay` seconds. With `after`, the request is carried out first and only
        its answer is lost, as when a gateway times out on a request that went through. Returns the
        rule's id."""
        if not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an error status (400-599)")
        return self._add(times=times, method=method, path=path, status=status, delay=delay,
                         retry_after=retry_after, error_id=error_id, message=message, after=after)

    def slow(self, seconds: float, *, times: int = 1, method: str | None = None, path: str | None = None) -> int:
        """Delay the next `times` matching requests by `seconds`, then answer them normally."""
        return self._add(times=times, method=method, path=path, delay=seconds)

    def fail_release(self, app: str, times: int = 1) -> None:
        """Fail the release phase of the app's next `times` releases (by app name or id); the release
        is then `failed` and the app stays on its current release."""
        if times < 1:
            raise ValueError("times must be 1 or more")
        with self._lock:
            self._release_failures[app] = self._release_failures.get(app, 0) + times

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._release_failures.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.describe() for rule in self._rules]

    def hits(self, rule_id: int) -> int:
        with self._lock:
            for rule in self._rules:
                if rule.id == rule_id:
                    return rule.hits
            return self._spent.get(rule_id, 0)

    def _add(self, *, times: int, method: str | None, path: str | None, **kwargs: Any) -> int:
        if times < 1:
            raise ValueError("times must be 1 or more")
        if kwargs.get("delay", 0) < 0:
            raise ValueError("delay must be 0 or more seconds")
        regex = re.compile(path) if path else None
        with self._lock:
            rule = Rule(id=self._next_id, times=times, method=method, path=path, _regex=regex, **kwargs)
            self._next_id += 1
            self._rules.append(rule)
            return rule.id

    def take(self, method: str, path: str) -> Rule | None:
        """The first rule matching this request, counted as used once."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                        self._spent[rule.id] = rule.hits
                    return rule
        return None

    def take_release_failure(self, *names: str) -> bool:
        """Whether the next release of the app (known by any of `names`) must fail; counts it as used."""
        with self._lock:
            for name in names:
                if self._release_failures.get(name, 0) > 0:
                    self._release_failures[name] -= 1
                    if not self._release_failures[name]:
                        del self._release_failures[name]
                    return True
        return False

    def apply_json(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add rules from a JSON body: `{"status": 503, "times": 2, "method": "GET", "path": "...",
        "retry_after": 1, "delay": 0.5, "after": false}`, `{"delay": 2}` for a slow answer, or
        `{"fail_release": {"app": "myapp", "times": 1}}`. Raises ValueError naming the problem."""
        if "fail_release" in body:
            spec = body["fail_release"]
            if not isinstance(spec, dict) or not isinstance(spec.get("app"), str):
                raise ValueError('fail_release must be {"app": "<name or id>", "times": N}')
            self.fail_release(spec["app"], int(spec.get("times", 1)))
            return {"fail_release": spec}
        known = {"status", "times", "method", "path", "retry_after", "delay", "id", "message", "after"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        common: dict[str, Any] = {"times": int(body.get("times", 1)), "method": body.get("method"),
                                  "path": body.get("path")}
        if "status" in body:
            rule_id = self.script(int(body["status"]), retry_after=body.get("retry_after"),
                                  delay=float(body.get("delay", 0)), error_id=body.get("id"),
                                  message=body.get("message"), after=bool(body.get("after", False)), **common)
        elif "delay" in body:
            rule_id = self.slow(float(body["delay"]), **common)
        else:
            raise ValueError("a fault needs a status (an error answer) or a delay (a slow answer)")
        return {"id": rule_id}
