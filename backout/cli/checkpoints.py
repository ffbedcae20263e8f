"""`backout checkpoints --app A [--json]`: an app's checkpoints, newest first.

The JSON document is stable: {"app": A, "checkpoints": [describe(row), ...]} with the keys of
`describe` (with `files`: the uploads recorded, `drill`: the last restore drill, `pruned`: when
BACKOUT_KEEP deleted the archive; `verdict` is null for a safety checkpoint (and one taken by an older
backout), else {"verdict", "text", "reason", "deciding", "dangers", "down_drops"} (backout.verdict)).
Down-script bodies and Heroku's temporary backup links stay in the ledger.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backout import ledger
from backout.cli.arguments import add_app, add_json
from backout.ledger.records import CheckpointKind, CheckpointRow, CheckpointStatus
from backout.output import dump_json, human_bytes, table
from backout.settings import Settings

# Kept out of the listing: a signed link to the data (valid for about an hour when made).
_PRIVATE_BACKUP_KEYS = ("backup_url",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_app(p)
    add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("BACKOUT_DATABASE_URL")
    assert settings.ledger_url is not None
    with ledger.connect(settings.ledger_url) as conn:
        rows = ledger.list_checkpoints(conn, args.app)
    if args.json:
        dump_json({"app": args.app, "checkpoints": [describe(row) for row in rows]})
        return 0
    if not rows:
        print(f"no checkpoints for {args.app}", file=sys.stderr)
        return 0
    print(render(rows))
    return 0


def describe(row: CheckpointRow) -> dict[str, Any]:
    """One checkpoint as the JSON listing shows it."""
    backup = {k: v for k, v in (row.get("backup") or {}).items() if k not in _PRIVATE_BACKUP_KEYS}
    down = row.get("down_scripts") or []
    return {
        "id": row["id"],
        "app": row["app"],
        "kind": row["kind"],
        "status": row["status"],
        "release": {
            "version": row["release_version"],
            "id": row["release_id"],
            "previous_version": row["previous_release_version"],
            "slug_id": row["slug_id"],
            "commit": row["slug_commit"],
        },
        "created_at": row["created_at"],
        "completed_at": row["completed_at"],
        "verified_healthy_at": row["verified_healthy_at"],
        "wal_lsn": row["wal_lsn"],
        "config_fingerprint": row["config_fingerprint"],
        "database": row.get("database"),
        "backup": {"strategy": row["backup_strategy"], **backup},
        "migrations": {
            "tool": row["migration_tool"],
            "before": row.get("migrations_before"),
            "after": row.get("migrations_after"),
            "pending": [d.get("id") for d in down],
            "irreversible": row.get("irreversible") or [],
        },
        "reversible": row["reversible"],
        "verdict": _verdict(row),
        "request_id": row.get("request_id"),
        "error": row.get("error"),
        "files": row.get("files"),
        "drill": {"at": row.get("drilled_at"), **(row.get("drill") or {})} if row.get("drill") else None,
        "pruned": {"at": row.get("pruned_at"), **(row.get("pruned") or {})} if row.get("pruned_at") else None,
    }


def _verdict(row: CheckpointRow) -> dict[str, Any] | None:
    """The release's compatibility verdict without its per-migration detail (kept in the ledger)."""
    verdict = row.get("verdict")
    if not verdict:
        return None
    return {k: verdict.get(k) for k in ("verdict", "text", "reason", "deciding", "dangers", "down_drops")}


def render(rows: list[CheckpointRow]) -> str:
    """The plain-text table, newest first."""
    return table(
        ["ID", "RELEASE", "TIME (UTC)", "BACKUP", "SIZE", "MIGRATIONS", "REVERSIBLE", "VERDICT", "DRILLED", "STATUS"],
        [[row["id"], _release(row), _time(row["created_at"]), _backup(row), _size(row),
          _migrations(row), _reversible(row), (row.get("verdict") or {}).get("text", "-"), _drilled(row), _status(row)]
         for row in rows],
    )


def _release(row: CheckpointRow) -> str:
    version = f"v{row['release_version']}" if row["release_version"] is not None else "-"
    return version if row["kind"] == CheckpointKind.DEPLOY else f"{version} ({row['kind']})"


def _time(value: str | None) -> str:
    return (value or "-").replace("T", " ")[:19]


def _backup(row: CheckpointRow) -> str:
    where = " (s3)" if (row.get("backup") or {}).get("storage") == "s3" else ""
    return f"{row['backup_strategy']}{where}" + (" pruned" if row.get("pruned_at") else "")


def _drilled(row: CheckpointRow) -> str:
    drill = row.get("drill")
    if not drill:
        return "-"
    if not drill.get("ok"):
        return f"failed {_time(row.get('drilled_at'))[:10]}"
    return f"{_time(row.get('drilled_at'))[:16]} ({drill.get('seconds', 0):.1f}s)"


def _size(row: CheckpointRow) -> str:
    size = (row.get("backup") or {}).get("size")
    return human_bytes(size) if isinstance(size, (int, float)) else "-"


def _migrations(row: CheckpointRow) -> str:
    before = row.get("migrations_before") or []
    after = row.get("migrations_after")
    start = before[-1] if before else "(none)"
    if row.get("migrations_before") is None:
        return "-"
    if after is None or after == before:
        return start
    return f"{start} -> {after[-1] if after else '(none)'}"


def _reversible(row: CheckpointRow) -> str:
    irreversible = row.get("irreversible") or []
    return "yes" if not irreversible else f"no ({', '.join(irreversible)})"


def _status(row: CheckpointRow) -> Any:
    if row["status"] not in (CheckpointStatus.FAILED, CheckpointStatus.ABANDONED):
        return row["status"]
    return f"{row['status']}: {_short(row.get('error'))}"


def _short(text: str | None, width: int = 60) -> str:
    text = (text or "").splitlines()[0] if text else ""
    return text if len(text) <= width else text[: width - 3] + "..."
