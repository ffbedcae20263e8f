"""A tiny real HTTP server on 127.0.0.1 for unit tests of HTTP clients, instead of mocks.

The test gives a handler, a plain function from `Request` to `Reply`; the server runs it for each
request on a thread, records every request, and answers over a real socket:

    with StubServer(lambda req: Reply(200, {"ok": True})) as server:
        requests.get(server.url + "/x")
        assert server.requests[0].path == "/x"
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: CaseInsensitiveDict
    body: bytes

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
    """A threaded HTTP/1.1 server on a free loopback port, running `handler` for each request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[str] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the body waits for a delayed ACK.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=CaseInsensitiveDict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                )
                stub.requests.append(request)
                try:
                    reply = stub.handler(request)
                except Exception:  # the test should see it, not just a 500
                    stub.errors.append(traceback.format_exc())
                    reply = Reply(500, "stub handler raised; see StubServer.errors")
                if reply.disconnect:
                    self.close_connection = True
                    return
                body, headers = reply.encoded()
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
