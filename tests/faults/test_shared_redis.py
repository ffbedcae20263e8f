"""Two apps with their own ledgers on one Redis database (one Redis add-on attached to several apps,
as Heroku allows): each app's worker takes only its own ledger's jobs, so rollbacks of both apps
requested at once each run once, at once, by the right worker; none is bounced as "not in the
ledger" and picked up minutes later by a sweep."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from backout import enqueue_rollback, ledger
from backout import settings as settings_module
from backout.heroku import HerokuClient
from tests.faults.conftest import Trials
from tests.support import child_env, deploy_slug, start_worker, stop_workers, wait_for

pytestmark = pytest.mark.integration

APPS = ("shop-east", "shop-west")


@pytest.fixture
def two_apps(sandbox: Any, make_database: Callable[[], str], redis_url: str,
             tmp_path: Path) -> Iterator[dict[str, dict]]:
    client = HerokuClient(sandbox.token, sandbox.url, sandbox.url)
    apps: dict[str, dict] = {}
    workers: list[subprocess.Popen] = []
    for name in APPS:
        client.create_app(name)
        for code in ("a", "b"):  # v2, v3
            done = deploy_slug(client, name, {"release": "true"}, {"VERSION": code}, commit=f"{name}-{code}",
                               timeout=30, poll=0.05)
            assert done["status"] == "succeeded", done
        env = {"DATABASE_URL": make_database(), "REDIS_URL": redis_url, "BACKOUT_HEALTH_INTERVAL": "0.5",
               "BACKOUT_LOG_LEVEL": "INFO", **sandbox.env}
        log = tmp_path / f"worker-{name}.log"
        workers.append(start_worker(child_env(env), log))
        apps[name] = {"env": env, "settings": settings_module.load(env), "log": log}
    yield apps
    stop_workers(workers)


def test_apps_sharing_a_redis_keep_to_their_own_jobs(two_apps: dict[str, dict], trials: Trials) -> None:
    def trial(i: int) -> None:
        target = "v2" if i % 2 == 0 else "v3"
        asked = {name: enqueue_rollback(name, target, settings=app["settings"]) for name, app in two_apps.items()}
        for name, request_id in asked.items():
            app = two_apps[name]
            with ledger.connect(app["settings"].ledger_url) as conn:
                request = wait_for(lambda: (r := ledger.get_request(conn, request_id))["status"]
                                   in ("succeeded", "failed") and r, timeout=60, what=f"the rollback of {name}")
                steps = [(s["step"], s["status"]) for s in ledger.steps(conn, request_id)]
            log = app["log"].read_text()
            assert request["status"] == "succeeded", (request, steps, log[-3000:])
            assert request["attempts"] == 1 and ("requeue", "done") not in steps, (request, steps)
            other = next(o for o in two_apps if o != name)
            assert request_id not in two_apps[other]["log"].read_text(), f"{other}'s worker touched {request_id}"

    trials.run(trial, default=2)
