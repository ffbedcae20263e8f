"""Hostile input to every subcommand and setting: no traceback, the right exit code (2 for bad
input, 1 for a service that cannot be reached), and nothing changed when the input is refused:
no ledger row, no release.

Commands run in this process (`backout.cli.main`), so hundreds of inputs take seconds; the cases
the fault report named run as real processes too.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from backout import cli, ledger
from backout import settings as settings_module
from tests.faults.conftest import Trials

pytestmark = pytest.mark.integration

# Values no setting of backout's takes, and a few that only some do.
HOSTILE = ["٣", "v٣", "²", "9" * 20, "-1", "0", "abc", "http://", "postgres://", "redis://host:6379/abc",
           "redis://h:6379/99999", "mysql://root:pw@h/x", "x" * 3000, "\u202e", " ", "v0", "1e400", "nan",
           "200-99", "a=", "=b", "http://[::1", "file:///etc/passwd", "unix://", "-"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A ledger with one checkpoint, and an environment in which `backout release` deploys."""
    for name in list(os.environ):
        if name.startswith(("BACKOUT_", "HEROKU_", "REDIS_", "GITHUB_", "SENTRY_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    base = {"DATABASE_URL": database, "HEROKU_APP_NAME": "shop", "HEROKU_RELEASE_VERSION": "v7",
            "BACKOUT_BACKUP": "none", "BACKOUT_BACKUP_DIR": str(tmp_path / "backups")}
    with ledger.connect(database) as conn:
        conn.execute("SELECT 1")
    yield {"env": base, "database": database, "tmp": tmp_path, "monkeypatch": monkeypatch}


def _ledger_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'backout' ORDER BY 1").fetchall()]
        return {t: conn.execute(f'SELECT count(*) FROM backout."{t}"').fetchone()[0] for t in tables}


def _run(world: dict, argv: list[str], env: dict[str, str], capfd: pytest.CaptureFixture) -> tuple[int, str]:
    """`backout ARGV` in this process with exactly `env` (over the host's PATH and HOME)."""
    monkeypatch = world["monkeypatch"]
    with monkeypatch.context() as m:
        for name in settings_module.setting_names():
            m.delenv(name, raising=False)
        for name, value in env.items():
            m.setenv(name, value)
        handler = signal.getsignal(signal.SIGTERM)
        try:
            try:
                status = cli.main(argv)
            except SystemExit as exc:  # argparse
                status = exc.code if isinstance(exc.code, int) else 2
        finally:
            signal.signal(signal.SIGTERM, handler)
    out, err = capfd.readouterr()
    return status, out + err


def _error_lines(output: str) -> list[str]:
    """The lines that say why a command stopped: not progress ("backout [  0.1s] ...") or log lines."""
    return [line for line in output.splitlines() if line.startswith("backout") and not line.startswith("backout [")]


def _refused_cleanly(world: dict, argv: list[str], env: dict[str, str], capfd: pytest.CaptureFixture,
                     expect: int | None = 2) -> str:
    before = _ledger_rows(world["database"])
    status, output = _run(world, argv, env, capfd)
    case = f"backout {' '.join(argv)} with {sorted(set(env.items()) - set(world['env'].items()))}"
    assert "Traceback" not in output, f"{case}:\n{output}"
    assert status in (0, 1, 2), f"{case} exited {status}:\n{output}"
    if expect is not None:
        assert status == expect, f"{case} exited {status}, not {expect}:\n{output}"
    if status == 2:
        assert _ledger_rows(world["database"]) == before, f"{case} exited 2 but changed the ledger"
        assert len(_error_lines(output)) == 1, f"{case}: not one line:\n{output}"
    return output


# --- what the fault report found ------------------------------------------------------------------


def test_the_reported_bad_inputs_are_refused_in_one_line(world: dict, capfd: pytest.CaptureFixture) -> None:
    env = world["env"]
    release = ["release", "--", "true"]
    out = _refused_cleanly(world, release, {**env, "HEROKU_RELEASE_VERSION": "٣"}, capfd)
    assert "HEROKU_RELEASE_VERSION" in out
    out = _refused_cleanly(world, release, {**env, "HEROKU_RELEASE_VERSION": "9" * 20}, capfd)
    assert "HEROKU_RELEASE_VERSION" in out
    for db in ("abc", "99999"):
        out = _refused_cleanly(world, release, {**env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}"}, capfd)
        assert "REDIS_URL" in out and "0-15" in out
    for port in ("99999", "-1", "٣"):
        out = _refused_cleanly(world, ["sandbox", "--port", port], env, capfd)
        assert "--port" in out and "TCP port" in out
    out = _refused_cleanly(world, release, {**env, "BACKOUT_MIGRATIONS": "alembic",
                                            "BACKOUT_MIGRATIONS_PATH": "/nonexistent/alembic.ini"}, capfd)
    assert "BACKOUT_MIGRATIONS_PATH" in out


def test_an_unreachable_api_is_one_line_and_exit_1(world: dict, capfd: pytest.CaptureFixture) -> None:
    env = {**world["env"], "GITHUB_TOKEN": "ghp_fuzzfuzzfuzz",
           "BACKOUT_GITHUB_API_URL": f"http://127.0.0.1:{_closed_port()}"}
    out = _refused_cleanly(world, ["package-rollback", "--repo", "acme/widgets", "--bad", "1.2.3", "--dry-run"],
                           env, capfd, expect=1)
    assert len(_error_lines(out)) == 1 and "ghp_fuzzfuzzfuzz" not in out


def test_the_reported_cases_as_real_processes(world: dict) -> None:
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **world["env"]}
    cases = [(["release", "--", "true"], {"HEROKU_RELEASE_VERSION": "٣"}, 2),
             (["sandbox", "--port", "99999"], {}, 2)]
    for argv, extra, expect in cases:
        done = subprocess.run([sys.executable, "-m", "backout", *argv], env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == expect and "Traceback" not in done.stderr, (argv, extra, done.stderr)
        assert len(_error_lines(done.stderr)) == 1, done.stderr


# --- the fuzz -------------------------------------------------------------------------------------


def _argument_cases(rng: random.Random) -> list[list[str]]:
    bad = rng.choice(HOSTILE)
    return [
        ["rollback", "--app", "shop", "--to", bad],
        ["rollback", "--app", bad, "--to", "v3"],
        ["rollback", "--app", "shop", "--to", "v3", "--db", bad],
        ["rollback", "--app", "shop"],
        ["checkpoints", "--app", bad],
        ["status", "--app", bad],
        ["health", "--app", bad],
        # Only ports that cannot be listened on: a good one would start the sandbox for good.
        ["sandbox", "--port", rng.choice([v for v in HOSTILE if not (v.isascii() and v.isdigit() and int(v) <= 65535)])],
        ["package-rollback", "--repo", bad, "--bad", "1.2.3", "--dry-run"],
        ["package-rollback", "--repo", "acme/widgets", "--bad", bad, "--dry-run"],
        ["worker", "--" + bad.strip() if bad.strip() else "--x"],
        [rng.choice(["release", "status", "rollback", "demo"]), "--no-such-flag"],
        [bad],
    ]


def test_fuzz_every_subcommand_and_setting(world: dict, capfd: pytest.CaptureFixture, trials: Trials) -> None:
    names = [n for n in settings_module.setting_names() if n != "DATABASE_URL"]

    def trial(i: int) -> None:
        rng = random.Random(i)
        env = world["env"]
        for argv in _argument_cases(rng):
            # Without a Heroku token nothing reaches an API: what matters is how input is refused.
            _refused_cleanly(world, argv, env, capfd, expect=None)
        for name in rng.sample(names, 12) + ["HEROKU_RELEASE_VERSION", "REDIS_URL"]:
            value = rng.choice(HOSTILE)
            _refused_cleanly(world, ["release", "--", "true"], {**env, name: value}, capfd, expect=None)

    trials.run(trial, default=2)


def test_refused_rollbacks_change_no_release(world: dict, sandbox, capfd: pytest.CaptureFixture) -> None:
    from backout.heroku import HerokuClient
    from tests.support import deploy_slug

    client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
    client.create_app("shop")
    for code in ("a", "b"):
        deploy_slug(client, "shop", {"release": "true"}, {"VERSION": code}, commit=code * 8, timeout=30, poll=0.05)
    before = [(r["id"], r["version"], r["status"]) for r in client.list_releases("shop")]
    env = {**world["env"], **sandbox.env}
    for argv in (["rollback", "--app", "shop", "--to", "v٣"], ["rollback", "--app", "shop", "--to", "9" * 20],
                 ["rollback", "--app", "shop", "--to", "v99"], ["rollback", "--app", "shop", "--to", "v2", "--db", "down"],
                 ["rollback", "--app", "no-such-app", "--to", "v2"]):
        _refused_cleanly(world, argv, env, capfd)
    assert [(r["id"], r["version"], r["status"]) for r in client.list_releases("shop")] == before
