"""Checkpoints abandoned by a killed process: found, marked, and their leftovers removed.

A release phase killed mid-`pg_dump` (kill -9, a dyno stopped) leaves its checkpoint 'running'
and a temporary archive behind; nothing of the process is left to finish either. The process
taking a checkpoint holds the checkpoint's advisory lock in the ledger until it gives it a final
status, and PostgreSQL drops the lock when the process dies; so a 'running' checkpoint whose lock
is free was abandoned. The release hook and the worker call `clean_abandoned_checkpoints` when
they start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable


from backout import ledger
from backout.backups import pg_dump
from backout.ledger.records import CheckpointRow, CheckpointStatus, LedgerConnection
from backout.settings import Settings

log = logging.getLogger(__name__)


def clean_abandoned_checkpoints(settings: Settings, conn: LedgerConnection, who: str,
                                say: Callable[[str], None] | None = None) -> list[CheckpointRow]:
    """Mark every abandoned checkpoint of the ledger on `conn` 'abandoned', with why, and remove
    what its backup left behind; returns the rows marked. `who` says who found them."""
    found = []
    for checkpoint in ledger.running_checkpoints(conn):
        if ledger.taker_alive(conn, checkpoint["id"]):
            continue
        removed = discard_partial_backup(settings, checkpoint)
        why = (f"abandoned: the process taking it stopped before it finished (killed, or its dyno was "
               f"stopped); found by {who}")
        if removed:
            why += f", which removed {', '.join(removed)}"
        row = ledger.update_checkpoint(conn, checkpoint["id"], status=CheckpointStatus.ABANDONED, error=why)
        (say or log.warning)(f"checkpoint {checkpoint['id']} of {checkpoint['app']} v{checkpoint['release_version']} "
                             f"was {why}")
        found.append(row)
    return found


def discard_partial_backup(settings: Settings, checkpoint: CheckpointRow) -> list[str]:
    """Remove what the checkpoint's backup left half made; the names of what was removed. (Only
    `pg_dump` leaves anything: a temporary archive in this machine's BACKOUT_BACKUP_DIR.)"""
    removed = []
    if checkpoint["backup_strategy"] == "pg_dump":
        for path in pg_dump.partial_files(Path(settings.backup_dir), checkpoint["id"]):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
