"""Backup strategies, one module each, chosen by name (`BACKOUT_BACKUP`).

Every strategy module has `take(ctx: BackupContext) -> dict`: it makes the backup and returns the
JSON-friendly description the checkpoint records, or raises BackoutError with the reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from backout.errors import BadInput
from backout.settings import BACKUP_STRATEGIES


@dataclass(frozen=True)
class BackupContext:
    """What a strategy may need; each uses only its part."""

    checkpoint_id: str
    app: str
    database_url: str = field(repr=False)
    backup_dir: Path = Path(".backout/backups")
    progress: Callable[[str], None] = lambda message: None
    conn: Any = None  # an open psycopg connection to the app's database
    heroku: Any = None  # a HerokuClient, when HEROKU_API_KEY is set
    addon_id: str | None = None  # the app's DATABASE add-on, when already looked up


def strategy(name: str) -> ModuleType:
    """The module of the strategy called `name`."""
    if name not in BACKUP_STRATEGIES:
        raise BadInput(f"unknown backup strategy {name!r}; BACKOUT_BACKUP must be one of "
                       + ", ".join(BACKUP_STRATEGIES))
    return importlib.import_module(f"{__name__}.{name}")


def take(name: str, ctx: BackupContext) -> dict:
    """Make a backup with the named strategy and return its description."""
    return strategy(name).take(ctx)
