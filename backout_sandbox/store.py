"""The sandbox's state: one JSON document on disk, rewritten atomically after every change.

Everything a restarted sandbox needs lives here: apps, slugs, releases, formation, add-ons and
their databases, attachments, webhooks and transfers. Running processes do not: dynos are started
again from this state. The file holds add-on database passwords and webhook secrets, so it is
readable by its owner only.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from backout.errors import BadInput

FORMAT = 1


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> str:
    """The current UTC time as Heroku writes it: 2012-01-01T12:00:00Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_state() -> dict[str, Any]:
    return {
        "format": FORMAT,
        # Signs blob, output-stream and backup URLs, so that they keep working after a restart.
        "signing_key": secrets.token_hex(32),
        "apps": {},
        "slugs": {},
        "releases": {},  # app id -> releases in version order
        "formation": {},  # app id -> process type -> formation entry
        "addons": {},
        "attachments": {},
        "webhooks": {},
        "transfers": {},
        "transfer_nums": {},  # app id -> last transfer number
        "pitr": {"root": None},
    }


class Store:
    """The state document and the lock that guards it. Hold the lock briefly: never while a
    subprocess runs or an HTTP call is made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.data = self._load()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return empty_state()
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(
                f"sandbox state file {self.path} cannot be read ({exc}); move it away to start a fresh sandbox"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadInput(
                f"sandbox state file {self.path} is not a backout sandbox state (format {FORMAT}); "
                "give another --state file"
            )
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
