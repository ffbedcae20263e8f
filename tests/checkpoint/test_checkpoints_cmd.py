"""`backout checkpoints --app A [--json]` against a real ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backout import ledger

pytestmark = pytest.mark.integration


def run(url: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "HEROKU_")) and k != "DATABASE_URL"}
    if url:
        env["BACKOUT_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "backout", "checkpoints", *args], env=env,
                          capture_output=True, text=True, timeout=60)


VERDICT = {"verdict": "down-needed", "text": "down needed", "reason": "the previous code needs the schema back",
           "deciding": [{"migration": "20240102_add_email", "class": "contract", "reason": "drops column User.name"}],
           "dangers": [], "down_drops": [], "migrations": [{"id": "20240102_add_email", "statements": []}]}


def _seed(url: str) -> dict[str, dict]:
    saved = {"tool": "prisma", "id": "20240102_add_email", "name": "add_email", "down": "ALTER TABLE ...",
             "transactional": True, "reversible": True, "files": {}}
    with ledger.connect(url) as conn:
        def make(version: int, kind: str = "deploy", **fields) -> dict:
            cp = ledger.create_checkpoint(
                conn, app="shop", kind=kind, release_version=version, release_id=f"rel-{version}",
                slug_id="slug-1", slug_commit="abc123", previous_release_version=version - 1,
                backup_strategy=fields.pop("strategy", "pg_dump"), migration_tool="prisma",
            )
            return ledger.update_checkpoint(conn, cp["id"], **fields) if fields else cp

        first = make(10, status="complete", completed_at="now", wal_lsn="0/16B3740",
                     backup={"strategy": "pg_dump", "path": "/b/cp.dump.zst", "size": 1_234_567, "sha256": "ab"},
                     migrations_before=["20240101_init"], migrations_after=["20240101_init", "20240102_add_email"],
                     down_scripts=[saved], irreversible=[], config_fingerprint="f" * 64, verdict=VERDICT)
        second = make(11, status="failed", strategy="heroku", error="pg_dump failed (exit status 1): disk\nfull",
                      backup={"strategy": "heroku", "transfer_num": 7, "backup_url": "https://s3.example/x?sig=1"},
                      migrations_before=["20240101_init", "20240102_add_email"],
                      down_scripts=[{**saved, "id": "20240103_drop", "down": None, "reversible": False}],
                      irreversible=["20240103_drop"])
        third = make(12, kind="safety", strategy="pitr")
        ledger.create_checkpoint(conn, app="other", kind="deploy", release_version=1, release_id=None,
                                 slug_id=None, slug_commit=None, previous_release_version=None,
                                 backup_strategy="none", migration_tool="none")
    return {"first": first, "second": second, "third": third}


def test_table_lists_newest_first_with_every_column(database):
    made = _seed(database)
    done = run(database, "--app", "shop")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "RELEASE", "TIME", "(UTC)", "BACKUP", "SIZE", "MIGRATIONS", "REVERSIBLE", "VERDICT", "DRILLED",
                                 "STATUS"]
    rows = lines[2:]
    assert [r.split()[0] for r in rows] == [made["third"]["id"], made["second"]["id"], made["first"]["id"]]
    assert "v12 (safety)" in rows[0] and "pitr" in rows[0] and "running" in rows[0]
    assert "heroku" in rows[1] and "no (20240103_drop)" in rows[1] and "failed: pg_dump failed (exit status 1): disk" in rows[1]
    assert "down needed" in rows[2] and "down needed" not in rows[0] + rows[1]
    assert "1.2 MB" in rows[2] and "20240101_init -> 20240102_add_email" in rows[2] and "yes" in rows[2]
    assert "complete" in rows[2] and rows[2].split()[2] == made["first"]["created_at"][:10]
    assert "other" not in done.stdout


def test_json_is_stable_and_keeps_private_links_out(database):
    made = _seed(database)
    done = run(database, "--app", "shop", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["app"] == "shop"
    first, second, third = document["checkpoints"][2], document["checkpoints"][1], document["checkpoints"][0]
    assert set(first) == {"id", "app", "kind", "status", "release", "created_at", "completed_at",
                          "verified_healthy_at", "wal_lsn", "config_fingerprint", "database", "backup",
                          "migrations", "reversible", "verdict", "request_id", "error", "files", "drill", "pruned"}
    assert first["id"] == made["first"]["id"] and first["status"] == "complete" and first["kind"] == "deploy"
    assert first["release"] == {"version": 10, "id": "rel-10", "previous_version": 9, "slug_id": "slug-1",
                                "commit": "abc123"}
    assert first["backup"] == {"strategy": "pg_dump", "path": "/b/cp.dump.zst", "size": 1234567, "sha256": "ab"}
    assert first["migrations"] == {"tool": "prisma", "before": ["20240101_init"],
                                   "after": ["20240101_init", "20240102_add_email"],
                                   "pending": ["20240102_add_email"], "irreversible": []}
    assert first["reversible"] is True and first["wal_lsn"] == "0/16B3740"
    assert second["reversible"] is False and second["migrations"]["irreversible"] == ["20240103_drop"]
    assert second["backup"] == {"strategy": "heroku", "transfer_num": 7}  # the signed link stays in the ledger
    assert second["error"].startswith("pg_dump failed")
    assert third["kind"] == "safety" and third["backup"] == {"strategy": "pitr"}
    # The verdict without its per-migration detail, which stays in the ledger.
    assert first["verdict"] == {k: v for k, v in VERDICT.items() if k != "migrations"}
    assert second["verdict"] is None and third["verdict"] is None
    # Sorted keys and two-space indent: the same ledger prints the same bytes.
    assert done.stdout == run(database, "--app", "shop", "--json").stdout


def test_an_app_without_checkpoints(database):
    _seed(database)
    done = run(database, "--app", "nothing-here")
    assert done.returncode == 0 and done.stdout == "" and "no checkpoints for nothing-here" in done.stderr
    assert json.loads(run(database, "--app", "nothing-here", "--json").stdout) == {"app": "nothing-here",
                                                                                 "checkpoints": []}


def test_no_ledger_configured():
    done = run(None, "--app", "shop")
    assert done.returncode == 2
    assert "DATABASE_URL or BACKOUT_DATABASE_URL is not set" in done.stderr
