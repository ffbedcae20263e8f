"""Crafted jobs pushed straight into backout's queues by someone who can write to its Redis: a pickle,
functions outside backout's jobs, callbacks and RQ webhooks. A real `backout worker` refuses each
without running it, without calling a callback and without any outbound request: a loopback HTTP
listener, which every webhook, the notification URL and the Sentry DSN point at, receives nothing.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from backout import ledger
from backout.worker import queues
from tests.faults.conftest import Trials
from tests.support import child_env, start_worker

pytestmark = pytest.mark.integration


class Listener:
    """An HTTP server on a free loopback port that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                seen.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _record

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _crafted(r: redis.Redis, queue_name: str, listener: Listener, marker: Path, i: int) -> list[Job]:
    hooks = [Webhook(f"{listener.url}/hook-{i}", "failed", method="POST"),
             Webhook(f"{listener.url}/hook-{i}-ok", "finished")]
    json_queue = Queue(queue_name, connection=r, serializer=JSONSerializer)
    pickle_queue = Queue(queue_name, connection=r)  # RQ's default serializer: pickle
    return [
        json_queue.enqueue("os.system", f"touch {marker}-system", webhooks=hooks),
        json_queue.enqueue(queues.ROLLBACK_JOB, "rb_NOPE", on_failure=Callback("os.system"),
                           on_success=Callback("os.system"), on_stopped=Callback("os.system"), webhooks=hooks),
        # backout's own job, but carrying webhooks: backout never attaches any
        json_queue.enqueue(queues.ROLLBACK_JOB, "rb_NOPE", webhooks=hooks),
        pickle_queue.enqueue("os.system", f"touch {marker}-pickle", webhooks=hooks),
        json_queue.enqueue("subprocess.run", ["touch", f"{marker}-run"], webhooks=hooks),
    ]


def test_crafted_jobs_run_nothing_and_reach_nobody(database: str, redis_url: str, tmp_path: Path,
                                                    listener: Listener, trials: Trials) -> None:
    r = redis.Redis.from_url(redis_url)
    with ledger.connect(database) as conn:
        rollback_queue = queues.queue_names(ledger.ledger_id(conn))[0]
    env = child_env({"DATABASE_URL": database, "REDIS_URL": redis_url, "HEROKU_API_KEY": "t0ken-crafted",
                     "BACKOUT_NOTIFY_URL": f"{listener.url}/notify",
                     "SENTRY_DSN": f"http://publickey@{listener.url.removeprefix('http://')}/1"})

    def trial(i: int) -> None:
        marker = tmp_path / f"ran-{i}"
        jobs = _crafted(r, rollback_queue, listener, marker, i)
        worker = start_worker(env, tmp_path / f"worker-{i}.log", "--burst")
        assert worker.wait(120) == 0, (tmp_path / f"worker-{i}.log").read_text()
        log = (tmp_path / f"worker-{i}.log").read_text()
        assert not list(tmp_path.glob(f"ran-{i}*")), "a crafted job ran"
        assert listener.requests == [], f"outbound requests: {listener.requests}\n{log}"
        for job in jobs:
            status = r.hget(f"rq:job:{job.id}", "status")
            assert status == JobStatus.FAILED.value.encode(), (job.id, status, log)
        assert log.count("refused") >= len(jobs), log

    trials.run(trial, default=1)
