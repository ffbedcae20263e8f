"""The real Heroku CLI (npm `heroku`, pinned by scripts/install-heroku-cli) against the sandbox.

The README walkthrough (tests/test_readme_walkthrough.py) runs about half of its commands: pg:info,
config:set, config:get, ps, ps:scale, releases, releases:info, releases:output, logs and
logs --tail. This runs the rest: apps:create, addons:create (the plan as the CLI sends it, an
object), apps, apps:info, addons, config, restart and rollback, and logs with a filter."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import SandboxApi

pytestmark = pytest.mark.integration


class HerokuCli:
    def __init__(self, box: Any, bin_dir: Path, home: Path) -> None:
        home.mkdir(exist_ok=True)
        self.env = {name: os.environ[name] for name in ("LANG", "LC_ALL", "TMPDIR", "USER") if name in os.environ}
        self.env.update(HOME=str(home), PATH=os.pathsep.join([str(bin_dir), os.environ["PATH"]]),
                        HEROKU_HOST=box.url, HEROKU_DATA_HOST="127.0.0.1", HEROKU_API_KEY=box.token)

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["heroku", *args], env=self.env, text=True, capture_output=True, timeout=180)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout + done.stderr


@pytest.mark.timeout(600)  # the Heroku CLI takes 2-3 s of CPU a command
def test_the_heroku_cli_creates_restarts_and_rolls_back(sandbox: Any, heroku_bin: Path, tmp_path: Path) -> None:
    heroku = HerokuCli(sandbox, heroku_bin, tmp_path / "home")
    assert "Creating sbx-heroku-cli... done" in heroku("apps:create", "sbx-heroku-cli")
    created = heroku("addons:create", "heroku-postgresql:essential-0", "-a", "sbx-heroku-cli")
    assert "Creating heroku-postgresql:essential-0 on sbx-heroku-cli... free" in created, created
    assert re.search(r"Created postgresql-\S+ as DATABASE_URL", created), created
    api = SandboxApi(sandbox)
    api.ok("PATCH", "/apps/sbx-heroku-cli/config-vars", json={"GREETING": "hello"})
    apps = heroku("apps")
    assert "=== sandbox@backout.invalid Apps" in apps and "sbx-heroku-cli" in apps, apps
    info = heroku("apps:info", "-a", "sbx-heroku-cli")
    assert "=== sbx-heroku-cli" in info and re.search(r"^Addons:\s+heroku-postgresql:essential-0$", info, re.M), info
    assert "heroku-postgresql (postgresql-" in heroku("addons", "-a", "sbx-heroku-cli")
    assert re.search(r"^GREETING:\s+hello$", heroku("config", "-a", "sbx-heroku-cli"), re.M)
    for code in ("one", "two"):  # v4 and v5
        api.deploy("sbx-heroku-cli", {}, {"release": f"echo migrating {code}", "worker": "exec sleep 600"})
    api.ok("PATCH", "/apps/sbx-heroku-cli/formation", json={"updates": [{"type": "worker", "quantity": 1}]})
    assert "Restarting all dynos on sbx-heroku-cli... done" in heroku("restart", "-a", "sbx-heroku-cli")
    rolled = heroku("rollback", "v4", "-a", "sbx-heroku-cli")
    assert "Rolling back sbx-heroku-cli to v4... done, v6" in rolled, rolled
    releases = api.ok("GET", "/apps/sbx-heroku-cli/releases")
    assert (releases[-1]["description"], releases[-1]["status"]) == ("Rollback to v4", "succeeded")
    logs = heroku("logs", "-a", "sbx-heroku-cli", "--source", "app", "-n", "20")
    assert "app[api]: Rollback to v4 by user sandbox@backout.invalid" in logs, logs
    assert "heroku[" not in logs and "app[release.1]: migrating one" in logs, logs
