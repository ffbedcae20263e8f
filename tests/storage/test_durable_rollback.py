"""Issue 14's acceptance test, end to end: a sandbox app whose release phase (on a dyno: DYNO is
set) checkpoints its database to the loopback S3 endpoint and records its versioned uploads, then
`backout rollback --db restore --files restore --confirm APP --wait` carried out by a worker with
another working directory and another BACKOUT_BACKUP_DIR, which never saw the release phase's disk
(no archive is ever written to any disk). Rows and files come back as at the checkpoint, and every
version of every file is still there. And the configurations that would record a checkpoint that
cannot be restored fail the release with the fix named."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from backout import ledger
from tests.hooks.support import A1, B2
from tests.rollback.test_db_rollback_sandbox import make_app, sql, state  # noqa: F401 - `make_app` is the fixture
from tests.support import S3, start_worker

pytestmark = pytest.mark.integration


def files(uploads: S3, prefix: str = "notes/") -> dict[str, bytes]:
    return {key: uploads.client.get_object(Bucket=uploads.bucket, Key=key)["Body"].read()
            for key in uploads.keys(prefix)}


def versions(uploads: S3) -> set[tuple[str, str]]:
    pages = uploads.client.get_paginator("list_object_versions").paginate(Bucket=uploads.bucket)
    return {(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions") or []}


def test_rows_and_files_restored_from_storage_by_a_worker_that_never_saw_the_release_disk(
        make_app: Any, s3: S3, s3_server: Any, tmp_path: Path) -> None:
    uploads = S3(s3_server, versioned=True)
    app = make_app("notes", "pg_dump")
    storage = {**s3.env("checkpoints"), "BACKOUT_FILES": f"s3://{uploads.bucket}/notes/"}
    app.heroku.client.update_config_vars("notes", storage)
    worker_disk, worker_cwd = tmp_path / "worker-disk", tmp_path / "worker-cwd"
    worker_cwd.mkdir()
    app.env.update(storage, BACKOUT_BACKUP_DIR=str(worker_disk))

    v4 = app.deploy([A1], "aaaa1111")
    sql(app.db, "INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 300) g")
    for i in range(20):
        uploads.client.put_object(Bucket=uploads.bucket, Key=f"notes/{i}.txt", Body=f"attachment {i}".encode())
    uploads.client.put_object(Bucket=uploads.bucket, Key="elsewhere/keep.txt", Body=b"not under the prefix")
    time.sleep(1.1)  # S3 stamps versions to the second: the checkpoint's second is after these writes
    rows_then, files_then = state(app.db), files(uploads)
    v5 = app.deploy([A1, B2], "bbbb2222")  # its checkpoint holds the database and files as v4 left them
    assert "backup: uploaded and checked" in v5["output"], v5["output"]
    assert "files: s3://" in v5["output"] and "20 objects, versioned" in v5["output"], v5["output"]
    time.sleep(1.1)

    sql(app.db, "INSERT INTO users (name, email) SELECT 'late ' || g, g || '@x.org' FROM generate_series(1, 50) g",
        "DELETE FROM users WHERE id <= 10")
    for i in range(5):
        uploads.client.put_object(Bucket=uploads.bucket, Key=f"notes/{i}.txt", Body=b"overwritten by v5")
    for i in range(5, 8):
        uploads.client.delete_object(Bucket=uploads.bucket, Key=f"notes/{i}.txt")
    for i in range(20, 22):
        uploads.client.put_object(Bucket=uploads.bucket, Key=f"notes/{i}.txt", Body=b"made by v5")
    uploads.client.put_object(Bucket=uploads.bucket, Key="elsewhere/keep.txt", Body=b"changed, not ours")
    before_rollback = versions(uploads)

    checkpoint = next(cp for cp in app.checkpoints() if cp["release"]["version"] == v5["version"])
    backup = checkpoint["backup"]
    assert backup["storage"] == "s3" and backup["bucket"] == s3.bucket and backup["encryption"] == "AES256"
    assert backup["key"] == f"checkpoints/notes/{checkpoint['id']}.dump.zst" and backup["key"] in s3.keys()
    assert len(backup["sha256"]) == 64 and backup["size"] > 0 and s3.uploads() == []
    assert not list(tmp_path.rglob("*.dump.zst")), "an archive was written to a disk"

    dry = app.backout("rollback", "--app", "notes", "--to", f"v{v4['version']}", "--db", "restore",
                      "--files", "restore", "--confirm", "notes", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["plan"]
    step = plan["files_step"]
    assert plan["steps"][:3] == ["safety_checkpoint", "db_restore", "files_restore"] and step["restore_point"]["id"] == checkpoint["id"]
    (where,) = step["locations"]
    assert (where["restore"]["count"], where["undelete"]["count"], where["delete"]["count"]) == (5, 3, 2)
    assert where["restore"]["bytes"] == sum(len(files_then[f"notes/{i}.txt"]) for i in range(5))
    assert where["delete"]["bytes"] == 2 * len(b"made by v5") and where["unchanged"] == 12
    assert "5 changed since" in step["summary"] and versions(uploads) == before_rollback

    refused = app.backout("rollback", "--app", "notes", "--to", f"v{v4['version']}", "--files", "restore")
    assert refused.returncode == 2 and "add --confirm notes" in refused.stderr

    app.worker = start_worker(app.env, tmp_path / "worker.log", cwd=worker_cwd)
    done = app.backout("rollback", "--app", "notes", "--to", f"v{v4['version']}", "--db", "restore",
                       "--files", "restore", "--confirm", "notes", "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr, app.worker_log())
    assert "files_restore: done" in done.stderr
    assert state(app.db) == rows_then
    assert files(uploads) == files_then
    assert files(uploads, "elsewhere/") == {"elsewhere/keep.txt": b"changed, not ours"}
    assert before_rollback <= versions(uploads), "a version was destroyed"
    assert not list(tmp_path.rglob("*.dump.zst")) and not list(worker_disk.rglob("*"))

    with ledger.connect(app.db) as conn:
        (request,) = [r for r in ledger.list_requests(conn, "notes") if not r["dry_run"]]
        steps = {s["step"]: s for s in ledger.steps(conn, request["id"]) if s["status"] == "done"}
    safety = steps["files_restore"]["detail"]["safety_checkpoint_id"]
    assert safety == steps["db_restore"]["detail"]["safety_checkpoint_id"]
    listed = {cp["id"]: cp for cp in app.checkpoints()}
    assert listed[safety]["kind"] == "safety" and listed[safety]["backup"]["storage"] == "s3"
    assert listed[safety]["files"]["locations"][0]["objects"] == 19


def test_configurations_that_could_not_be_restored_fail_the_release(heroku: Any, s3: S3) -> None:
    # pg_dump on a dyno without object storage: the release fails before anything is recorded.
    db = heroku.app("shop-disk", BACKOUT_BACKUP="pg_dump")
    release = heroku.deploy("shop-disk", [A1], "aaaa1111")
    assert release["status"] == "failed"
    assert "BACKOUT_BACKUP=pg_dump on dyno release.1 would write the archive to the dyno's disk" in release["output"]
    assert "set BACKOUT_STORAGE_URL=s3://BUCKET/PREFIX" in release["output"]
    with ledger.connect(db) as conn:
        assert ledger.list_checkpoints(conn, "shop-disk") == []

    # Unset, the strategy is the one that works on a dyno: Heroku's backups without storage ...
    db = heroku.app("shop-default")
    release = heroku.deploy("shop-default", [A1], "aaaa1111")
    assert release["status"] == "succeeded", release["output"]
    with ledger.connect(db) as conn:
        (cp,) = ledger.list_checkpoints(conn, "shop-default")
    assert cp["backup_strategy"] == "heroku" and cp["status"] == "complete"

    # ... and pg_dump to storage with it.
    db = heroku.app("shop-stored", **s3.env())
    release = heroku.deploy("shop-stored", [A1], "aaaa1111")
    assert release["status"] == "succeeded", release["output"]
    with ledger.connect(db) as conn:
        (cp,) = ledger.list_checkpoints(conn, "shop-stored")
    assert cp["backup_strategy"] == "pg_dump" and cp["backup"]["storage"] == "s3"

    # A point-in-time mark on an Essential plan, which Heroku cannot roll back: refused at deploy time.
    heroku.app("shop-pitr-essential", BACKOUT_BACKUP="pitr")
    release = heroku.deploy("shop-pitr-essential", [A1], "aaaa1111")
    assert release["status"] == "failed"
    assert "is on heroku-postgresql:essential-0 (standard, premium, private and shield plans can)" in release["output"]
