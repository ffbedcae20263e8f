"""The release phase under fire: killed (kill -9, with its pg_dump) in the middle of its dump, and
run twice at once for the same release.

A killed release phase leaves a temporary archive and a 'running' checkpoint; the next release
phase, or a worker starting, marks the checkpoint abandoned with why and removes the archive. Two
release phases of one release make one checkpoint: the second waits for the first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from backout import ledger
from tests.faults.conftest import Trials
from tests.hooks.support import hook_env
from tests.support import child_env, wait_for

pytestmark = pytest.mark.integration


def _hook(env: dict[str, str], log: Path, *command: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "backout", "release", "--", *command], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _checkpoints(url: str, version: int) -> list[dict]:
    with ledger.connect(url) as conn:
        return [cp for cp in ledger.list_checkpoints(conn, "shop") if cp["release_version"] == version]


def test_a_release_phase_killed_mid_dump_is_cleaned_up_by_the_next(database: str, redis_url: str, tmp_path: Path,
                                                                    trials: Trials) -> None:
    backups = tmp_path / "backups"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id serial PRIMARY KEY, name text)")

    def trial(i: int) -> None:
        version = 10 + 2 * i
        env = hook_env(database, tmp_path, HEROKU_RELEASE_VERSION=f"v{version}")
        # A lock on a table holds pg_dump mid-dump, with its temporary archive open, until released.
        with psycopg.connect(database) as blocker:
            blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            hook = _hook(env, tmp_path / f"hook-{i}.log", "true")
            try:
                wait_for(lambda: list(backups.glob(".*.tmp")), timeout=30, what="the temporary archive")
            finally:
                os.killpg(hook.pid, signal.SIGKILL)
                hook.wait()
        [left] = _checkpoints(database, version)
        assert left["status"] == "running" and list(backups.glob(".*.tmp"))

        if i % 2 == 0:  # the next release phase finds it
            after = hook_env(database, tmp_path, HEROKU_RELEASE_VERSION=f"v{version + 1}")
            done = subprocess.run([sys.executable, "-m", "backout", "release", "--", "true"], env=after,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        else:  # a worker starting finds it
            worker_env = child_env({"DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "t0ken",
                                    "BACKOUT_BACKUP_DIR": str(backups)})
            done = subprocess.run([sys.executable, "-m", "backout", "worker", "--burst"], env=worker_env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        [marked] = _checkpoints(database, version)
        assert marked["status"] == "abandoned", marked
        assert "abandoned: the process taking it stopped" in marked["error"]
        assert list(backups.glob(".*.tmp")) == []

    trials.run(trial, default=2)


def test_two_release_phases_of_one_release_make_one_checkpoint(database: str, tmp_path: Path,
                                                                trials: Trials) -> None:
    def trial(i: int) -> None:
        version = 100 + i
        env = hook_env(database, tmp_path, HEROKU_RELEASE_VERSION=f"v{version}")
        hooks = [_hook(env, tmp_path / f"twin-{i}-{n}.log", "sleep", "0.5") for n in range(2)]
        for n, hook in enumerate(hooks):
            assert hook.wait(120) == 0, (tmp_path / f"twin-{i}-{n}.log").read_text()
        made = _checkpoints(database, version)
        assert len(made) == 1 and made[0]["status"] == "complete", made
        logs = [(tmp_path / f"twin-{i}-{n}.log").read_text() for n in range(2)]
        assert sum("already has checkpoint" in log for log in logs) == 1, logs

    trials.run(trial, default=2)
