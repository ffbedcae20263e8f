"""Each app's front door: a loopback port that stays the same across releases, like Heroku's router.

Web dynos get a new `PORT` every time they start, so the app's `web_url`
(`http://127.0.0.1:<router port>/`) points at this small proxy instead. It forwards each request
to a web dyno that is up (round robin) and answers 503 in Heroku's way when there is none: H10
"App crashed" when the web dynos have crashed, H14 "No web processes running" when none run.
"""

from __future__ import annotations

import http.client
import itertools
from http.server import BaseHTTPRequestHandler
from typing import Callable

from backout_sandbox.core.errors import StartError
from backout_sandbox.core.server import LoopbackServer
from backout_sandbox.processes import AppLog

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
TIMEOUT = 30.0  # Heroku's router gives a request 30 s (H12 after that)

ERROR_PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Application Error</title></head>
<body><h1>Application error</h1>
<p>An error occurred in the application and your page could not be served.</p></body></html>
"""


class AppRouter:
    def __init__(self, app_name: str, backends: Callable[[], list[int]], crashed: Callable[[], bool],
                 log: AppLog, port: int = 0) -> None:
        self.app_name = app_name
        self._backends = backends
        self._crashed = crashed
        self._log = log
        self._turn = itertools.count()
        try:
            self._server = LoopbackServer(self._handler_class(), port, name=f"router {app_name}")
        except StartError:
            # The port this app had before a restart is taken now: take another one.
            self._server = LoopbackServer(self._handler_class(), 0, name=f"router {app_name}")
        self.port = self._server.port

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _pick(self) -> int | None:
        ports = self._backends()
        return ports[next(self._turn) % len(ports)] if ports else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                port = router._pick()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if port is None:
                    code, desc = ("H10", "App crashed") if router._crashed() else ("H14", "No web processes running")
                    return self._error(code, desc)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = self.headers.get("Host", f"127.0.0.1:{router.port}")
                headers["X-Forwarded-For"] = self.client_address[0]
                headers["X-Forwarded-Proto"] = "http"
                headers["X-Forwarded-Port"] = str(router.port)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    payload = answer.read()
                except TimeoutError:
                    return self._error("H12", "Request timeout")
                except OSError:
                    return self._error("H13", "Connection closed without response")
                finally:
                    conn.close()
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                router._log.write("heroku[router]", f'at=info method={self.command} path="{self.path}" '
                                  f"status={answer.status} bytes={len(payload)}")

            def _error(self, code: str, desc: str) -> None:
                router._log.write("heroku[router]", f'at=error code={code} desc="{desc}" method={self.command} '
                                  f'path="{self.path}" status=503')
                self.send_response(503)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(ERROR_PAGE)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(ERROR_PAGE)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

        return Handler
