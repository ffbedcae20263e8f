"""Queue latency benchmark: time from enqueueing a rollback job to the job starting, on an idle worker.

Starts a private redis-server and a throwaway ledger database, runs a real `backout worker`
(forking work horses, scheduler on) as a subprocess, then enqueues --samples rollback jobs one at a
time, each after the previous one has finished and the worker is idle again (blocked waiting on
its queues). A job's start is the `started_at` that RQ records in the work horse just before it
calls the job function; the enqueue time is taken just before `enqueue_once` is called, so the
latency includes the enqueue itself, the worker's wake-up, the fetch and the fork.

The jobs are real `backout.jobs.rollback.run_rollback` jobs for dry-run requests in the ledger,
which the job finds already finished and returns from at once, so nothing reaches Heroku.
Target: median at most 50 ms.

    .venv/bin/python bench/queue_latency_bench.py [--samples 200] [--idle 0.05]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
from rq.job import JobStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout import ledger
from backout.output import table
from backout.worker import queues
from tests.support import (  # noqa: E402
    create_database,
    database_url,
    drop_database,
    start_redis_server,
)

TARGET_MEDIAN = 0.050


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--idle", type=float, default=0.05, help="seconds the worker sits idle before each enqueue")
    args = parser.parse_args()

    name = create_database("backout_bench_queue")
    ledger_url = database_url(name)
    redis_proc, redis_server = start_redis_server()
    redis_url = redis_server + "/0"
    worker = None
    try:
        env = {**os.environ, "DATABASE_URL": ledger_url, "REDIS_URL": redis_url,
               "HEROKU_API_KEY": "bench-token-never-used", "BACKOUT_LOG_LEVEL": "WARNING"}
        env.pop("SENTRY_DSN", None)
        env.pop("BACKOUT_NOTIFY_URL", None)
        conn = ledger.connect(ledger_url)
        requests_ = []
        for _ in range(args.samples + 5):
            request = ledger.create_request(conn, app="bench-app", target="v1", db="none", dry_run=True,
                                            requested_by="bench", plan={})
            ledger.update_request(conn, request["id"], status="succeeded", result={"dry_run": True})
            requests_.append(request["id"])
        r = redis.Redis.from_url(redis_url)
        worker = subprocess.Popen([sys.executable, "-m", "backout", "worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_worker(r, worker)

        latencies = []
        rollback_queue = queues.ledger_queues(conn)[0]
        for i, request_id in enumerate(requests_):
            time.sleep(args.idle)
            job_id = queues.request_job_id(request_id)
            enqueued = datetime.now(timezone.utc)
            queues.enqueue_once(r, rollback_queue, queues.ROLLBACK_JOB, [request_id], job_id)
            job = _wait_finished(r, job_id, rollback_queue)
            if i >= 5:  # the first jobs warm up imports in the worker
                latencies.append((job.started_at.replace(tzinfo=timezone.utc) - enqueued).total_seconds())
        conn.close()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        redis_proc.terminate()
        redis_proc.wait(10)
        drop_database(name)

    latencies.sort()
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"samples: {len(latencies)} jobs, each enqueued after {args.idle * 1000:.0f} ms of idle; "
          "worker: `backout worker` (forking work horse, scheduler on)")
    print(table(
        ["enqueue -> job start", "ms", "target ms", "ratio to target"],
        [["median", f"{median * 1000:.1f}", f"{TARGET_MEDIAN * 1000:.0f}", f"{median / TARGET_MEDIAN:.2f}x"],
         ["p99", f"{p99 * 1000:.1f}", "", ""],
         ["min", f"{latencies[0] * 1000:.1f}", "", ""],
         ["max", f"{latencies[-1] * 1000:.1f}", "", ""]],
    ))
    return 0 if median <= TARGET_MEDIAN else 1


def _wait_for_worker(r: redis.Redis, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not r.smembers("rq:workers"):
        if worker.poll() is not None:
            raise SystemExit("the worker exited:\n" + worker.stderr.read().decode())
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not register within 30 s")
        time.sleep(0.05)
    time.sleep(1.0)  # let its first maintenance pass (registry cleaning, ledger sweep) finish


def _wait_finished(r: redis.Redis, job_id: str, job_queue: str):
    q = queues.queue(job_queue, r)
    deadline = time.monotonic() + 30
    while True:
        job = q.fetch_job(job_id)
        if job is not None and job.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED):
            if job.get_status(refresh=False) == JobStatus.FAILED:
                raise SystemExit(f"job {job_id} failed: {job.latest_result().exc_string}")
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish within 30 s")
        time.sleep(0.002)


if __name__ == "__main__":
    sys.exit(main())
