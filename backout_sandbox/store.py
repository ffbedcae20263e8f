"""The sandbox's state: one JSON document on disk (a `JsonStore`), rewritten atomically after every change.

Everything a restarted sandbox needs lives here: apps, slugs, releases, formation, add-ons and
their databases, attachments, webhooks and transfers. Running processes do not: dynos are started
again from this state. The file holds add-on database passwords and webhook secrets, so it is
readable by its owner only.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from backout_sandbox.core.store import JsonStore

FORMAT = 1


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


class Store(JsonStore):
    """The sandbox's state document and the lock that guards it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, empty_state, "sandbox")
