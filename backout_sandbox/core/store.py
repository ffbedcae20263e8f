"""State in one JSON document on disk, rewritten atomically after every change; the ids and times
of the records in it.

The file can hold secrets (database passwords, webhook secrets, tokens), so it is readable by its
owner only.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from backout_sandbox.core.errors import StartError


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> str:
    """The current UTC time as Heroku and GitHub write it: 2012-01-01T12:00:00Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JsonStore:
    """The state document and the lock that guards it. Hold the lock briefly: never while a
    subprocess runs or an HTTP call is made.

    `fresh()` is the state of a new sandbox; its `format` key is the file format, and a file of any
    other format is refused. `what` names the sandbox in messages ("sandbox", "forge")."""

    def __init__(self, path: Path, fresh: Callable[[], dict[str, Any]], what: str) -> None:
        self.path = path
        self.what = what
        self.lock = threading.RLock()
        self.data = self._load(fresh)

    def _load(self, fresh: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        new = fresh()
        if not self.path.exists() or not self.path.stat().st_size:
            return new
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise StartError(f"{self.what} state file {self.path} cannot be read ({exc}); move it away to start "
                             f"a fresh {self.what}") from None
        if not isinstance(data, dict) or data.get("format") != new["format"]:
            raise StartError(f"{self.what} state file {self.path} is not a backout {self.what} state "
                             f"(format {new['format']}); give another --state file")
        return data

    @contextmanager
    def change(self) -> Iterator[dict[str, Any]]:
        """The state, locked; written to disk when the block ends without an exception.
        Check everything before changing anything, so that a refused request leaves no trace."""
        with self.lock:
            yield self.data
            self.save()

    def save(self) -> None:
        """Write the state to a temporary file and rename it over the old one, so a sandbox killed
        mid-write leaves the previous state whole. No fsync: the sandbox must survive its own
        crash, not a power cut, and every API call that changes something saves."""
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(self.data, out, sort_keys=True)
            os.replace(tmp, self.path)
