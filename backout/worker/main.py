"""`backout worker [--burst]`: the RQ worker that runs backout's jobs.

- Listens to its ledger's `backout-rollback@<ledger id>` before its `backout-routine@<ledger id>`, so
  a rollback never waits behind routine work and apps sharing a Redis keep to their own jobs.
- JSON serializer everywhere and the allowlisted job class: only `backout.jobs.*` functions run.
- Its scheduler is on (delayed and periodic jobs, such as the health watch, are enqueued on time).
- Heroku's shutdown: on SIGTERM the dyno gets about 30 s before SIGKILL. The work horse ignores
  SIGTERM and the worker stops taking jobs (RQ's warm shutdown), so a short job ends normally; a
  job still running after IMMINENT_SHUTDOWN seconds gets `ShutDownImminentException`, records that
  it was interrupted and hands its request back to the queue, and whatever is killed anyway is
  found by the ledger sweep (`recovery.requeue_lost`) and run again, once, by the next worker.
- The sweep runs when the worker starts and every MAINTENANCE_INTERVAL seconds, with RQ's own
  registry cleaning (abandoned jobs), and so does the scheduling of restore drills
  (BACKOUT_DRILL_EVERY; off by default).
- With SENTRY_DSN: job failures, killed work horses and abandoned jobs are reported.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import sentry_sdk
from redis import Redis
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.worker import BaseWorker, HerokuWorker, SimpleWorker

from backout import ledger, redis_conn, sentry
from backout.backups.abandoned import clean_abandoned_checkpoints
from backout.drill import schedule as schedule_drills
from backout.redact import redact
from backout.settings import Settings
from backout.worker.allowlist import AllowlistedJob, refusal
from backout.worker.queues import ledger_queues
from backout.worker.recovery import requeue_lost
from backout.worker.serializer import SERIALIZER

log = logging.getLogger(__name__)

# Seconds between sweeps of the ledger for lost requests (and RQ registry cleaning).
MAINTENANCE_INTERVAL = 30
# How often a busy worker refreshes its job's heartbeat; the sweep judges liveness by it.
JOB_MONITORING_INTERVAL = 5
# Heroku sends SIGKILL about 30 s after SIGTERM; a job still running this long after SIGTERM is
# interrupted so that it can record where it stopped before the kill.
IMMINENT_SHUTDOWN = 20


class _BackoutWorkerMixin:
    """What both worker classes add to RQ: the settings, and the ledger sweep with maintenance."""

    settings: Settings

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job)
        if reason is None:
            super().execute_job(job, queue)  # type: ignore[misc]
            return
        # Refused before any of RQ's job handling: it fails here with no callback, webhook,
        # exception handler (Sentry) or dependent job, and nothing leaves this process: logged
        # as a warning, since sentry-sdk sends error records as events.
        log.warning("job %s from queue %s: %s", job.id, queue.name, reason)
        with self.connection.pipeline() as pipeline:  # type: ignore[attr-defined]
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            job._handle_failure(f"JobRefused: {reason}", pipeline=pipeline, worker_name=self.name)  # type: ignore[attr-defined]
            pipeline.execute()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        try:
            requeued = requeue_lost(self.settings, self.connection)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a ledger outage must not stop the worker
            log.error("could not sweep the ledger for lost requests: %s", redact(str(exc), self.settings.secrets()))
            return
        if requeued:
            log.warning("re-enqueued %d lost rollback request(s): %s", len(requeued), ", ".join(requeued))
        try:
            drills = schedule_drills(self.settings, self.connection)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a drill that cannot be scheduled must not stop the worker
            log.error("could not schedule restore drills: %s", redact(str(exc), self.settings.secrets()))
            return
        if drills:
            log.info("scheduled restore drill(s): %s", ", ".join(drills))


class BackoutWorker(_BackoutWorkerMixin, HerokuWorker):
    """The production worker: a forked work horse per job, with Heroku's signal handling."""

    imminent_shutdown_delay = IMMINENT_SHUTDOWN


class BackoutSimpleWorker(_BackoutWorkerMixin, SimpleWorker):
    """Runs jobs in its own process (no fork): for tests and the benchmark."""


def build_worker(connection: Redis, settings: Settings, simple: bool = False, name: str | None = None) -> BaseWorker:
    """A worker on the queues of the settings' ledger, rollback queue first."""
    settings.require("BACKOUT_DATABASE_URL")
    assert settings.ledger_url is not None
    with ledger.connect(settings.ledger_url) as conn:
        names = ledger_queues(conn)
    cls = BackoutSimpleWorker if simple else BackoutWorker
    worker = cls(
        list(names),
        name=name,
        connection=connection,
        serializer=SERIALIZER,
        job_class=AllowlistedJob,
        maintenance_interval=MAINTENANCE_INTERVAL,
        # The idle loop wakes this often, so the sweep runs on time even when no job arrives.
        worker_ttl=MAINTENANCE_INTERVAL + 15,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        exception_handlers=[_report_abandoned],
        work_horse_killed_handler=_report_killed_horse,
    )
    worker.settings = settings
    return worker


def run(settings: Settings, burst: bool = False) -> int:
    """Run the worker (and, unless `burst`, the health monitor beside it) until shutdown."""
    settings.require("REDIS_URL", "BACKOUT_DATABASE_URL", "HEROKU_API_KEY")
    if sentry.init(settings):
        log.info("reporting job failures to Sentry")
    connection = redis_conn.from_settings(settings)
    worker = build_worker(connection, settings)
    assert settings.ledger_url is not None
    with ledger.connect(settings.ledger_url) as conn:
        clean_abandoned_checkpoints(settings, conn, f"worker {worker.name} starting")
    # The health monitor watches releases beside the RQ loop; a burst run only drains the queues.
    from backout.health.monitor import start_monitor

    monitor = None if burst else start_monitor(settings)
    try:
        worker.work(burst=burst, with_scheduler=True,
                    logging_level=os.environ.get("BACKOUT_LOG_LEVEL", "INFO").upper())
    finally:
        if monitor is not None:
            monitor.stop()
    return 0


def _report_abandoned(job: Any, exc_type: type, exc_value: BaseException, traceback: Any) -> bool:
    # RQ calls the worker's exception handlers for failed jobs (the RQ integration reports those)
    # and, when it cleans the started-job registry, for jobs whose worker vanished.
    if exc_type is AbandonedJobError:
        message = f"job {job.id} on {job.origin} was abandoned: its worker stopped without finishing it"
        log.error(message)
        sentry_sdk.capture_message(message, level="error")
    return True


def _report_killed_horse(job: Any, pid: int, status: int, rusage: Any) -> None:
    signal_number = os.WTERMSIG(status) if status and os.WIFSIGNALED(status) else None
    how = f"by signal {signal_number}" if signal_number else f"with status {status}"
    message = f"the work horse running job {job.id} ({job.func_name}) was killed {how}"
    log.error(message)

    sentry_sdk.capture_message(message, level="error")
