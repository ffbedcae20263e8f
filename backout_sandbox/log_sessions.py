"""Log sessions: what `heroku logs` and `heroku logs --tail` read.

As on Heroku, a client creates a session (`POST /apps/{app}/log-sessions` with `lines`, `tail`,
`source` and `dyno`) and gets a `logplex_url` to read without the API token. The URL answers with
server-sent events, one `data:` line per log line (the Heroku CLI reads it with an EventSource):
the last `lines` lines that pass the filters, then, for a tail, every new line until the client
goes away. Each event's `id` is the offset in the app's log after its line, so a client that
reconnects with `Last-Event-ID` resumes where it was. A session's URL expires like Logplex's; a
tail that reconnects after that gets 403, which the CLI reports as a timed-out stream.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from backout_sandbox import resources
from backout_sandbox.routing import ApiError, invalid
from backout_sandbox.signed_urls import Signer
from backout_sandbox.core.store import new_id, now

DEFAULT_LINES = 100
MAX_LINES = 1500  # Logplex's limit
SESSION_TTL = 300.0
KEEP_ALIVE = 10.0  # seconds between comments on an idle tail, so that a gone client is noticed
POLL = 0.1
# 2024-01-01T12:00:00.000000+00:00 app[web.1]: listening
_LINE = re.compile(r"^\S+ (?P<source>[\w-]+)\[(?P<dyno>[^\]]+)\]:")


@dataclass(frozen=True)
class Session:
    app: str
    lines: int
    tail: bool
    source: str | None
    dyno: str | None

    def wants(self, line: str) -> bool:
        found = _LINE.match(line)
        if found is None:
            return self.source is None and self.dyno is None
        if self.source is not None and found["source"] != self.source:
            return False
        dyno = found["dyno"]
        return self.dyno is None or self.dyno in (dyno, dyno.split(".")[0])


class LogSessions:
    def __init__(self, signer: Signer, logs_dir: Path, stopping: threading.Event) -> None:
        self.signer = signer
        self.logs_dir = logs_dir
        self.stopping = stopping
        self._sessions: dict[str, tuple[Session, float]] = {}  # id -> session, when its URL expires
        self._guard = threading.Lock()

    def create(self, app_name: str, body: dict[str, Any]) -> dict[str, Any]:
        lines = body.get("lines", DEFAULT_LINES)
        if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
            raise invalid(f"lines must be a whole number from 1 to {MAX_LINES}.")
        tail = body.get("tail", False)
        if not isinstance(tail, bool):
            raise invalid("tail must be true or false.")
        filters = {}
        # The CLI sends `dyno` (a dyno or a process type); the schema names `dyno_name` and `type`.
        for key in ("source", "dyno", "dyno_name", "type"):
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise invalid(f"{key} must be a non-empty string.")
            filters[key] = value
        session_id = new_id()
        session = Session(app_name, lines, tail, filters["source"],
                          filters["dyno_name"] or filters["dyno"] or filters["type"])
        with self._guard:
            current = time.time()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > current}
            self._sessions[session_id] = (session, current + SESSION_TTL)
        url, _ = self.signer.url(f"/sandbox/log-sessions/{session_id}", SESSION_TTL)
        return resources.log_session(session_id, url, now())

    def stream(self, session_id: str, last_event_id: str | None) -> Iterator[bytes]:
        with self._guard:
            found = self._sessions.get(session_id)
        if found is None:
            raise ApiError(404, "not_found", "Couldn't find that log session.")
        session = found[0]
        return self._events(session, self.logs_dir / f"{session.app}.log", last_event_id)

    def _events(self, session: Session, path: Path, last_event_id: str | None) -> Iterator[bytes]:
        offset = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        if offset is None:
            recent: deque[tuple[int, str]] = deque(maxlen=session.lines)
            offset = 0
            if path.exists():
                with open(path, "rb") as log:
                    for raw in log:
                        offset += len(raw)
                        line = raw.decode("utf-8", "replace").rstrip("\n")
                        if session.wants(line):
                            recent.append((offset, line))
            for end, line in recent:
                yield _event(end, line)
        if not session.tail:
            return
        idle = time.monotonic()
        while not self.stopping.is_set():
            fresh = _read_from(path, offset)
            for raw in fresh:
                offset += len(raw)
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if session.wants(line):
                    idle = time.monotonic()
                    yield _event(offset, line)
            if time.monotonic() - idle > KEEP_ALIVE:
                idle = time.monotonic()
                yield b": keep-alive\n\n"
            time.sleep(POLL)


def _read_from(path: Path, offset: int) -> list[bytes]:
    """The whole lines written to the log after `offset` (a line still being written waits)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            lines = log.readlines()
    except FileNotFoundError:
        return []
    return lines if not lines or lines[-1].endswith(b"\n") else lines[:-1]


def _event(offset: int, line: str) -> bytes:
    return f"id: {offset}\ndata: {line}\n\n".encode()
