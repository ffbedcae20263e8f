"""The `none` backup strategy: the checkpoint records migrations and release only.

A rollback to such a checkpoint can undo code, config and migrations, but cannot restore data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backout.backups import Backup, BackupContext


def take(ctx: "BackupContext") -> "Backup":
    ctx.progress("backup: none (BACKOUT_BACKUP=none); the checkpoint holds no copy of the data")
    return {"strategy": "none"}
