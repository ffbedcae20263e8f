"""A threaded HTTP/1.1 server on loopback that answers every request with an app: `Request` in,
`Response` out.

    server = HttpServer(app.handle, port=0, name="backout-forge-sandbox")
    server.start()   # serves on a daemon thread
    ... server.url ...
    server.stop()
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, cast

from backout_sandbox.core.errors import StartError
from backout_sandbox.core.messages import Request, Response

log = logging.getLogger(__name__)

App = Callable[[Request], Response]


class LoopbackServer:
    """A ThreadingHTTPServer on `host:port` (0: a free port) serving `handler` on a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, host: str = "127.0.0.1",
                 name: str = "sandbox", poll_interval: float = 0.2) -> None:
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port 0 for a free port "
                             "or stop what uses it") from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": poll_interval},
                                        name=f"{name} http", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port (a second call does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


class HttpServer(LoopbackServer):
    """A LoopbackServer whose every request is answered by `app`."""

    def __init__(self, app: App, port: int = 0, host: str = "127.0.0.1", name: str = "sandbox",
                 poll_interval: float = 0.2) -> None:
        super().__init__(_handler(app, name), port, host, name, poll_interval)


def _handler(app: App, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = name
        timeout = 60  # an idle keep-alive connection is closed after this

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes; without this, Nagle's algorithm and the client's
            # delayed ACK hold every answer back 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(f"{name}: " + format, *args)

        def _serve(self) -> None:
            host, port = cast("tuple[str, int]", self.server.server_address)[:2]
            # The headers are an email.message.Message: a case-insensitive mapping, only read here.
            req = Request.parse(self.command, self.path, cast("Mapping[str, str]", self.headers), self.rfile,
                                int(self.headers.get("Content-Length") or 0), f"http://{host}:{port}",
                                self.client_address[:2])
            response = app(req)
            if response.drop:
                self.close_connection = True
                return
            req.drain()
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            body = self.command != "HEAD"
            if response.stream is None:
                payload = response.payload()
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)
                return
            chunked = "Content-Length" not in response.headers
            for key, value in response.headers.items():
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not body:
                return
            for chunk in response.stream:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
