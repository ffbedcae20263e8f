"""Backup strategies, one module each, chosen by name (`BACKOUT_BACKUP`).

Every strategy module has `take(ctx: BackupContext) -> Backup`: it makes the backup and returns
the JSON-friendly description the checkpoint records, or raises BackoutError with the reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, TypedDict

from backout.errors import BadInput
from backout.storage.config import StorageSettings

if TYPE_CHECKING:
    from backout.backups.pg_dump import Dump
    from backout.settings import Settings

# The strategies BACKOUT_BACKUP may name, each a module of this package.
STRATEGIES = ("pg_dump", "heroku", "pitr", "none")


class Backup(TypedDict, total=False):
    """A backup as its checkpoint records it (the `backup` column), by strategy; the checkpoint
    adds `strategy`. Restores, drills and retention read it back."""

    strategy: str
    # pg_dump: an archive (custom format, zstd) on local disk (`path`) or in object storage (`url`).
    path: str
    storage: str  # "s3"
    url: str
    bucket: str
    key: str
    etag: str
    version_id: str | None
    encryption: str | None
    parts: int
    size: int | None  # bytes of the archive (heroku: of the backup)
    sha256: str
    format: str
    compression: str
    level: int
    dump_size: int  # bytes pg_dump wrote, before compression
    entries: int  # table-of-contents entries
    rows: dict[str, int] | None  # "schema.table" -> rows, what a restore verifies its copy against
    seconds: float
    database: str
    # heroku: a Heroku Postgres backup (a Data API transfer).
    transfer_id: str | None
    transfer_num: int
    backup_url: str | None
    backup_url_expires_at: str | None
    finished_at: str | None
    # heroku and pitr: the DATABASE add-on.
    addon_id: str
    addon_name: str | None
    # pitr: a point in time on the add-on's WAL timeline.
    time: str
    lsn: str
    plan: str


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
    storage: StorageSettings | None = None  # object storage for pg_dump archives (BACKOUT_STORAGE_URL)
    dump: "Dump | None" = None  # a pg_dump the release phase started early (pg_dump.start_early)


def strategy(name: str) -> ModuleType:
    """The module of the strategy called `name`."""
    if name not in STRATEGIES:
        raise BadInput(f"unknown backup strategy {name!r}; BACKOUT_BACKUP must be one of "
                       + ", ".join(STRATEGIES))
    return importlib.import_module(f"{__name__}.{name}")


def check_restorable(settings: Settings) -> None:
    """BadInput, naming the fix, when a checkpoint taken with these settings could never be
    restored: a `pg_dump` archive on a dyno's disk, which Heroku wipes when the dyno exits (the
    worker that restores runs on another dyno). A `pitr` mark is checked against the database's
    plan by the strategy itself, once it has the add-on."""
    if settings.backup == "pg_dump" and settings.dyno and settings.storage.archives is None:
        raise BadInput(
            f"BACKOUT_BACKUP=pg_dump on dyno {settings.dyno} would write the archive to the dyno's disk, which Heroku "
            "wipes when the dyno exits, so the checkpoint could never be restored; set BACKOUT_STORAGE_URL=s3://BUCKET/PREFIX "
            "(with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION), or use BACKOUT_BACKUP=heroku or pitr")


def take(name: str, ctx: BackupContext) -> Backup:
    """Make a backup with the named strategy and return its description."""
    return strategy(name).take(ctx)
