"""Requests, responses, Heroku-style errors, a path router, and Range pagination."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, unquote


class ApiError(Exception):
    """An error answer in Heroku's shape: `{"id": ..., "message": ...}` with an HTTP status."""

    def __init__(self, status: int, error_id: str, message: str, headers: Mapping[str, str] | None = None,
                 resource: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.id = error_id
        self.message = message
        self.headers = dict(headers or {})
        self.resource = resource

    def body(self) -> dict[str, str]:
        body = {"id": self.id, "message": self.message}
        if self.resource:
            body["resource"] = self.resource
        return body


def not_found(what: str) -> ApiError:
    """Heroku's 404: `{"resource": "app", "id": "not_found", "message": "Couldn't find that app."}`."""
    return ApiError(404, "not_found", f"Couldn't find that {what}.", resource=what.replace(" ", "-").replace("add-on", "addon"))


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    stream: BinaryIO | None = None
    length: int = 0
    token: str | None = None  # the API token the request was authenticated with
    _body: bytes | None = None

    @classmethod
    def parse_target(cls, target: str) -> tuple[str, dict[str, list[str]]]:
        path, _, query = target.partition("?")
        return unquote(path), parse_qs(query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def listed(self, header: str) -> frozenset[str]:
        """The comma-separated words of a header, such as Heroku's `Accept-Inclusion: addon:plan,config_vars`."""
        return frozenset(w.strip() for w in (self.headers.get(header) or "").split(",") if w.strip())

    def body(self) -> bytes:
        if self._body is None:
            self._body = self.stream.read(self.length) if self.stream and self.length else b""
        return self._body

    def drain(self) -> None:
        """Read what nobody read of the body, so that the connection's next request starts clean."""
        if self._body is None:
            self.copy_body_to(_Discard())

    def json(self) -> Any:
        """The JSON body (None when empty); 400 when it is not JSON."""
        raw = self.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "bad_request", "Request body is not valid JSON.") from None

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise invalid("Request body must be a JSON object.")
        return body

    def copy_body_to(self, out: BinaryIO, chunk: int = 1 << 20) -> int:
        """Stream the body to a file without holding it in memory; returns the byte count."""
        left = self.length
        while left > 0 and self.stream is not None:
            data = self.stream.read(min(chunk, left))
            if not data:
                break
            out.write(data)
            left -= len(data)
        self._body = b""
        return self.length - left


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None  # sent chunked when set

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        self.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode()


Handler = Callable[..., Response]


@dataclass
class Route:
    method: str
    pattern: str  # /apps/{app}/releases/{release}
    handler: Handler
    schema_href: str | None = None  # the official schema link this route implements
    public: bool = False  # no token: signed URLs, like S3's
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.pattern)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        self.regex = re.compile(f"^{regex}$")


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, schema_href: str | None = None,
            public: bool = False) -> None:
        self.routes.append(Route(method, pattern, handler, schema_href, public))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in self.routes:
            found = route.regex.match(path)
            if found:
                if route.method == method:
                    return route, found.groupdict()
                allowed = True
        if allowed:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
        raise ApiError(404, "not_found", "The requested API endpoint was not found. Are you using the right HTTP verb "
                       "(i.e. `GET` vs. `POST`), and did you specify your intended version with the `Accept` header?")


# --- Range pagination --------------------------------------------------------------------------
# Heroku pages lists with `Range: version ..; order=desc, max=10`; a partial answer is 206 with
# `Next-Range: version ]42..; order=desc, max=10` naming where the next page starts.

DEFAULT_MAX = 200
LIMIT_MAX = 1000
_RANGE = re.compile(r"^\s*(?P<field>\w+)\s+(?P<open>[\[\]]?)(?P<start>[^.;\s]*)\.\.(?P<end>[^;\s]*)\s*(?:;(?P<opts>.*))?$")


@dataclass
class Range:
    field: str
    start: str | None = None
    exclusive: bool = False
    end: str | None = None
    order: str = "asc"
    max: int = DEFAULT_MAX


def parse_range(header: str | None, fields: Sequence[str]) -> Range:
    if not header:
        return Range(fields[0])
    found = _RANGE.match(header)
    if not found:
        raise ApiError(400, "bad_request", f"Range header {header!r} is malformed; expected e.g. "
                       f"`{fields[0]} ..; order=desc, max=10`.")
    if found["field"] not in fields:
        raise ApiError(400, "bad_request", f"Range by {found['field']!r} is not supported here; "
                       f"use one of: {', '.join(fields)}.")
    result = Range(found["field"], found["start"] or None, found["open"] == "]", found["end"] or None)
    for option in (found["opts"] or "").split(","):
        key, _, value = option.strip().partition("=")
        if not key:
            continue
        if key == "order" and value in ("asc", "desc"):
            result.order = value
        elif key == "max" and value.isdigit() and int(value) >= 1:
            result.max = min(int(value), LIMIT_MAX)
        else:
            raise ApiError(400, "bad_request", f"Range option {option.strip()!r} is invalid; "
                           "use order=asc|desc and max=1..1000.")
    return result


def paginate(items: Sequence[dict[str, Any]], header: str | None, fields: Sequence[str]) -> Response:
    """The page of `items` the Range header asks for: 200 when it is the rest, else 206 with Next-Range."""
    wanted = parse_range(header, fields)
    kind = type(items[0][wanted.field]) if items else str

    def value(text: str) -> Any:
        if kind is int:
            if not text.lstrip("v").isdigit():
                raise ApiError(400, "bad_request", f"Range value {text!r} is not a {wanted.field}.")
            return int(text.lstrip("v"))
        return text

    descending = wanted.order == "desc"
    ordered = sorted(items, key=lambda item: item[wanted.field], reverse=descending)
    if wanted.start is not None:
        start = value(wanted.start)
        if descending:
            ordered = [i for i in ordered if i[wanted.field] < start or (i[wanted.field] == start and not wanted.exclusive)]
        else:
            ordered = [i for i in ordered if i[wanted.field] > start or (i[wanted.field] == start and not wanted.exclusive)]
    if wanted.end is not None:
        end = value(wanted.end)
        ordered = [i for i in ordered if (i[wanted.field] >= end if descending else i[wanted.field] <= end)]
    page = ordered[: wanted.max]
    headers = {"Accept-Ranges": ", ".join(fields)}
    if page:
        headers["Content-Range"] = f"{wanted.field} {page[0][wanted.field]}..{page[-1][wanted.field]}"
    if len(ordered) > wanted.max:
        headers["Next-Range"] = f"{wanted.field} ]{page[-1][wanted.field]}..; order={wanted.order}, max={wanted.max}"
        return Response(206, page, headers)
    return Response(200, page, headers)


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)
