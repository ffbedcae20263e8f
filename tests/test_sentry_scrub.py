"""Nothing secret reaches Sentry: messages, breadcrumbs and frame variables are scrubbed.

SENTRY_DSN points at a real loopback HTTP server that receives the envelopes; the test reads
every byte that was sent.
"""

from __future__ import annotations

import gzip
import logging
from typing import Iterator

import pytest
import redis
import sentry_sdk

from backout import ledger, sentry
from backout import settings as settings_module
from backout.worker import queues
from backout.worker.main import build_worker
from tests.stub_http import Reply, StubServer
from tests.support import ledger_queue_names

TOKEN = "hk-scrub-0f1e2d3c4b5a69788796a5b4"
PASSWORD = "Pw-scrub-7c6b5a493827"


@pytest.fixture
def envelopes(monkeypatch: pytest.MonkeyPatch, database: str, redis_url: str) -> Iterator[tuple[StubServer, settings_module.Settings]]:
    server = StubServer(lambda req: Reply(200, {}))
    # trust authentication ignores the password, so the real database is reachable with it.
    database_url = database.replace("postgres@", f"postgres:{PASSWORD}@")
    env = {
        "HEROKU_API_KEY": TOKEN,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SENTRY_DSN": f"http://publickey@127.0.0.1:{server.port}/42",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_module.load(env)
    try:
        assert sentry.init(settings)
        yield server, settings
    finally:
        sentry_sdk.get_client().close()
        server.close()


def _sent(server: StubServer) -> str:
    sentry_sdk.flush(5)
    bodies = [gzip.decompress(r.body) if r.headers.get("Content-Encoding") == "gzip" else r.body for r in server.requests]
    return b"\n".join(bodies).decode("utf-8", "replace")


def _connect(database_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}  # noqa: F841 - a frame variable Sentry sends
    raise RuntimeError(f"could not connect to {database_url} as {token}")


@pytest.mark.integration
def test_secrets_never_reach_the_event(envelopes) -> None:
    server, settings = envelopes
    log = logging.getLogger("backout.test_sentry")
    log.info("connecting to %s", settings.database_url)          # a breadcrumb
    log.warning("token %s", TOKEN)                              # another
    try:
        _connect(settings.database_url, TOKEN)
    except RuntimeError:
        sentry_sdk.capture_exception()
    log.error("connection failed with password %s", PASSWORD)    # an event from logging
    sentry.capture_message(settings, f"rollback failed for postgres://u:{PASSWORD}@db/x with {TOKEN}")

    sent = _sent(server)
    assert "RuntimeError" in sent and "could not connect to" in sent        # the events did arrive
    assert '"database_url"' in sent and '"headers"' in sent                 # with frame variables
    assert "connecting to" in sent and "rollback failed for" in sent         # breadcrumbs, message
    assert "********" in sent
    assert TOKEN not in sent
    assert PASSWORD not in sent


@pytest.mark.integration
def test_a_failed_job_is_reported_scrubbed(envelopes) -> None:
    server, settings = envelopes
    conn = redis.Redis.from_url(settings.redis_url)
    # A rollback job whose request holds a plan it cannot read fails in the worker (a bug).
    with ledger.connect(settings.ledger_url) as ledger_conn:
        request = ledger.create_request(ledger_conn, app="shop", target="v3", db="none", dry_run=False,
                                        requested_by="test", plan={"target": "v3"})
    queues.enqueue_once(conn, ledger_queue_names(settings.ledger_url)[0], queues.ROLLBACK_JOB, [request["id"]],
                        queues.request_job_id(request["id"]))
    build_worker(conn, settings, simple=True).work(burst=True)
    sent = _sent(server)
    assert "TypeError" in sent and request["id"] in sent
    assert '"rq-job"' in sent
    assert TOKEN not in sent
    assert PASSWORD not in sent


@pytest.mark.integration
def test_an_abandoned_job_is_reported(envelopes) -> None:
    server, settings = envelopes
    conn = redis.Redis.from_url(settings.redis_url)
    rollback_queue = ledger_queue_names(settings.ledger_url)[0]
    queues.enqueue_once(conn, rollback_queue, queues.ROLLBACK_JOB, ["rb_GONE"], "rollback-rb_GONE")
    q = queues.queue(rollback_queue, conn)
    q.remove("rollback-rb_GONE")
    # A worker took the job and vanished: its entry in the started registry expired long ago.
    conn.zadd(q.started_job_registry.key, {"rollback-rb_GONE:lost-execution": 1})
    build_worker(conn, settings, simple=True).clean_registries()
    sent = _sent(server)
    assert f"job rollback-rb_GONE on {rollback_queue} was abandoned" in sent
    assert q.fetch_job("rollback-rb_GONE").get_status() == "failed"
