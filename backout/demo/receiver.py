"""A stand-in for the team's chat: receives BACKOUT_NOTIFY_URL posts on loopback, so the demo can show
what people were told, and when."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Message:
    at: float  # time.time() when it arrived
    event: str
    text: str
    detail: dict[str, Any]


class Receiver:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="demo notifications", daemon=True)
        self._thread.start()

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def events(self) -> list[str]:
        return [m.event for m in self.received()]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    document = json.loads(body)
                    message = Message(time.time(), str(document["event"]), str(document["text"]),
                                      document.get("detail") or {})
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.messages.append(message)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
