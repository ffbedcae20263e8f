"""The tests' HTTP stub: a real HTTP server on 127.0.0.1 for tests of HTTP clients, instead of mocks.

The test gives a handler, a plain function from `Request` to `Reply`; the server runs it for each
request on a thread, records every request, and answers over a real socket (it is the sandbox's
own threaded server, `backout_sandbox.core.server`):

    with StubServer(lambda req: Reply(200, {"ok": True})) as server:
        requests.get(server.url + "/x")
        assert server.requests[0].path == "/x"
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from requests.structures import CaseInsensitiveDict

from backout_sandbox.core import messages
from backout_sandbox.core.server import HttpServer


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: CaseInsensitiveDict
    body: bytes
    client_port: int = 0  # the client's end of the connection: one per keep-alive connection

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """What the server answers. A dict or list body is sent as JSON; `disconnect` closes the
    connection without answering, as a crashed or cut-off server would."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    disconnect: bool = False

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, (dict, list)):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        return self.body or b"", headers


Handler = Callable[[Request], Reply]


def in_order(replies: Iterable[Reply]) -> Handler:
    """A handler that gives the replies one per request, then repeats the last one."""
    queue = list(replies)
    lock = threading.Lock()

    def handle(_: Request) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handle


class StubServer:
    """A threaded HTTP/1.1 server on a free loopback port, running `handler` for each request.
    It stops at once when closed (tests start many)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._server = HttpServer(self._answer, name="stub", poll_interval=0.02)
        self.port = self._server.port
        self.url = self._server.url
        self._server.start()

    def _answer(self, req: messages.Request) -> messages.Response:
        request = Request(req.method, req.raw_path, req.query, CaseInsensitiveDict(req.headers.items()), req.body(),
                          req.client[1])
        self.requests.append(request)
        try:
            reply = self.handler(request)
        except Exception:  # the test should see it, not just a 500
            self.errors.append(traceback.format_exc())
            reply = Reply(500, "stub handler raised; see StubServer.errors")
        body, headers = reply.encoded()
        return messages.Response(reply.status, body, headers, drop=reply.disconnect)

    def close(self) -> None:
        self._server.stop()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
