"""BACKOUT_KEEP: which archives are pruned (the policy), and pruning itself against a real ledger and
the loopback S3 endpoint: recorded on the checkpoint, and a plan then refuses to restore it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backout import ledger
from backout import settings as settings_module
from backout.backups import pg_dump, retention
from backout.errors import BackoutError, ConfigError
from backout.rollback.database import restore
from backout.storage.config import Keep, parse_keep
from tests.support import S3

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def cp(n: int, *, kind: str = "deploy", age_days: float = 0, previous: int | None = None, healthy: bool = False,
       status: str = "complete") -> dict:
    return {"id": f"cp_{n:02d}", "kind": kind, "status": status, "release_version": n,
            "previous_release_version": n - 1 if previous is None else previous,
            "created_at": (NOW - timedelta(days=age_days)).isoformat(), "backup_strategy": "pg_dump",
            "backup": {"key": f"k{n}", "storage": "s3"}, "verified_healthy_at": NOW.isoformat() if healthy else None,
            "pruned_at": None}


def pruned(checkpoints: list[dict], keep: Keep) -> list[str]:
    return [c["id"] for c, _ in retention.to_prune(checkpoints, keep, now=NOW)]


def test_keep_parses_a_count_an_age_or_both() -> None:
    assert parse_keep("20") == Keep(20, None) and parse_keep("30d") == Keep(None, 30 * 86400)
    assert parse_keep("5, 2w") == Keep(5, 14 * 86400) and parse_keep("12h") == Keep(None, 43200)
    for bad in ("0", "ten", "5,6", "3d,4d", "-1"):
        with pytest.raises(ConfigError, match="BACKOUT_KEEP is .*expected a count, an age, or both"):
            settings_module.load({"BACKOUT_KEEP": bad})


def test_the_policy_keeps_what_a_rollback_to_a_kept_release_needs() -> None:
    # Newest first: v10 is being deployed over v9; each deploy checkpoint holds its predecessor's database.
    history = [cp(n, age_days=10 - n) for n in range(10, 0, -1)]
    # Keeping 3 releases keeps v10, v9, v8 and the archives they need: v9's rollback restores v10's
    # checkpoint, v8's v9's; so v7 and older go (v7 holds v6's database, which nothing kept needs).
    assert pruned(history, Keep(count=3)) == ["cp_01", "cp_02", "cp_03", "cp_04", "cp_05", "cp_06", "cp_07"]
    # An age keeps what is younger; either rule keeps a checkpoint.
    assert pruned(history, Keep(age=4.5 * 86400)) == ["cp_01", "cp_02", "cp_03", "cp_04", "cp_05"]
    assert pruned(history, Keep(count=2, age=4.5 * 86400)) == pruned(history, Keep(age=4.5 * 86400))
    assert pruned(history, Keep()) == []


def test_never_the_newest_healthy_checkpoint_nor_a_young_safety_checkpoint() -> None:
    history = [cp(n, age_days=10 - n, healthy=(n == 3)) for n in range(10, 0, -1)]
    # v3 was the last release verified healthy: kept, and v4's checkpoint, which holds v3's database.
    assert pruned(history, Keep(count=2)) == ["cp_01", "cp_02", "cp_05", "cp_06", "cp_07", "cp_08"]
    safety = cp(20, kind="safety", age_days=0.5, previous=None)
    safety["release_version"] = 7
    old_safety = {**cp(21, kind="safety", age_days=9.5), "release_version": 1}
    history = sorted(history + [safety, old_safety], key=lambda c: c["created_at"], reverse=True)
    assert "cp_20" not in pruned(history, Keep(count=2)) and "cp_21" in pruned(history, Keep(count=2))
    # Failed checkpoints' archives are no kept checkpoint's restore point; pruned ones are not pruned again.
    history[0]["pruned_at"] = NOW.isoformat()
    assert history[0]["id"] not in pruned(history, Keep(count=1))


def test_pruning_deletes_from_storage_records_it_and_plans_refuse_it(database: str, s3: S3, tmp_path: Path) -> None:
    settings = settings_module.load({"DATABASE_URL": database, "BACKOUT_KEEP": "2", **s3.env()})
    lines: list[str] = []
    with ledger.connect(database) as conn:
        made = []
        for version in (1, 2, 3):
            row = ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=version, release_id=None,
                                           slug_id=None, slug_commit=None, previous_release_version=version - 1,
                                           backup_strategy="pg_dump", migration_tool="none")
            backup = pg_dump.dump_to_storage(database, settings.storage, "shop", row["id"])
            made.append(ledger.update_checkpoint(conn, row["id"], backup={"strategy": "pg_dump", **backup},
                                                 status="complete", completed_at="now"))
        local = tmp_path / "local.dump.zst"
        local.write_bytes(b"an archive on this machine")
        ledger.update_checkpoint(conn, made[0]["id"], backup={**made[0]["backup"], "storage": None, "path": str(local)})
        # v1's row now names a local file (its object stays, unnamed): pruned where it is.
        done = retention.prune(settings, conn, "shop", lines.append)
        assert [p["checkpoint_id"] for p in done] == [made[0]["id"]]  # v3 and v2 are kept; v1 holds only v0's database
        assert not local.exists() and sorted(s3.keys()) == sorted(c["backup"]["key"] for c in made)
        first = ledger.get_checkpoint(conn, made[0]["id"])
        assert first["pruned_at"] and "BACKOUT_KEEP keeps the newest 2" in first["pruned"]["reason"]
        assert any("retention: pruned" in line for line in lines)
        with pytest.raises(BackoutError, match=f"checkpoint {first['id']}'s archive was pruned at"):
            restore.archive_of(first, settings)
        # In storage, prunes delete the object: a fourth checkpoint lets v2's go.
        row = ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=4, release_id=None, slug_id=None,
                                       slug_commit=None, previous_release_version=3, backup_strategy="pg_dump",
                                       migration_tool="none")
        backup = pg_dump.dump_to_storage(database, settings.storage, "shop", row["id"])
        ledger.update_checkpoint(conn, row["id"], backup={"strategy": "pg_dump", **backup}, status="complete",
                                 completed_at="now")
        assert [p["checkpoint_id"] for p in retention.prune(settings, conn, "shop", lines.append)] == [made[1]["id"]]
        assert made[1]["backup"]["key"] not in s3.keys() and made[2]["backup"]["key"] in s3.keys()
        # An archive deleted behind backout's back: refused at plan time, naming it.
        s3.client.delete_object(Bucket=s3.bucket, Key=made[2]["backup"]["key"])
        with pytest.raises(BackoutError, match=f"cannot restore checkpoint {made[2]['id']}: the archive s3://.* is no "
                                               "longer in storage"):
            restore.archive_of(ledger.get_checkpoint(conn, made[2]["id"]), settings)
