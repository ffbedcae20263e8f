"""What a sandbox app gets and gives: a request, a response, and an error that is its own answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class Readable(Protocol):
    """Where a request's body is read from (the connection)."""

    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    """Where a request's body can be copied to (a file)."""

    def write(self, data: bytes, /) -> int: ...


# What the core refuses: no route for the path, none for the method, a body that is not JSON or not
# an object.
RefusalKind = Literal["no_route", "method_not_allowed", "not_json", "not_object"]


class HttpError(Exception):
    """An error answer: raise it anywhere in a handler and the app answers with `response()`.
    Each API gives it its own body (Heroku's `{"id", "message"}`, GitHub's `{"message", ...}`)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body.get("message", "") if isinstance(body, dict) else str(body))
        self.status = status
        self.headers = dict(headers or {})
        self._body = body

    def body(self) -> Any:
        return self._body

    def response(self) -> Response:
        return Response(self.status, self.body(), dict(self.headers))


class Refused(Exception):
    """A request the core itself turns down: no route, a body that is not JSON or not an object.
    Each API answers it in its own words and shape (see `kind`)."""

    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Request:
    method: str
    path: str  # decoded: /apps/my app
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    stream: Readable | None = None
    length: int = 0
    raw_path: str = ""  # as sent: /apps/my%20app (routes match it, so an encoded slash stays in its segment)
    base_url: str = ""  # the server's own root: http://127.0.0.1:5011
    client: tuple[str, int] = ("", 0)  # the peer's address and port
    token: str | None = None  # the API token the request was authenticated with
    _body: bytes | None = None

    @classmethod
    def parse(cls, method: str, target: str, headers: Mapping[str, str], stream: Readable | None = None,
              length: int = 0, base_url: str = "", client: tuple[str, int] = ("", 0)) -> Request:
        parts = urlsplit(target)
        return cls(method, unquote(parts.path), parse_qs(parts.query, keep_blank_values=True), headers, stream,
                   length, raw_path=parts.path, base_url=base_url, client=client)

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def body(self) -> bytes:
        if self._body is None:
            self._body = self.stream.read(self.length) if self.stream and self.length else b""
        return self._body

    def drain(self) -> None:
        """Read what nobody read of the body, so that the connection's next request starts clean."""
        if self._body is None:
            self.copy_body_to(_Discard())

    def json(self) -> Any:
        """The JSON body (None when empty); Refused when it is not JSON."""
        raw = self.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Refused("not_json", "Request body is not valid JSON.") from None

    def json_object(self) -> dict[str, Any]:
        """The JSON object in the body ({} when empty); Refused when it is anything else."""
        body = self.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise Refused("not_object", "Request body must be a JSON object.")
        return body

    def copy_body_to(self, out: Writable, chunk: int = 1 << 20) -> int:
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
    body: Any = None  # JSON-able, bytes sent as they are, or None for no body
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None  # sent chunked when set (unless headers give a Content-Length)
    drop: bool = False  # close the connection without answering, as a crashed server does

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        self.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode()


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)
