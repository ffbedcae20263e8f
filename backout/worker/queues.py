"""backout's queues, and enqueueing a job exactly once under an id derived from its ledger row.

Rollbacks and routine work (health checks) have separate queues, and the worker listens to the
rollback queue first, so a rollback never waits behind routine jobs.

Each ledger has queues of its own (`backout-rollback@<ledger id>`): on Heroku one Redis add-on is
often attached to several apps, each with its own ledger, and a worker must take only the jobs of
its own ledger, never bounce another app's rollback as "not in the ledger".
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError

from backout.defaults import JOB_RESULT_TTL, ROLLBACK_JOB_TIMEOUT
from backout.defaults import ROLLBACK_QUEUE as ROLLBACK
from backout.defaults import ROUTINE_QUEUE as ROUTINE
from backout.worker.allowlist import AllowlistedJob, resolve
from backout.worker.serializer import SERIALIZER, check_arguments

log = logging.getLogger(__name__)

# Listening order is priority order.
QUEUE_NAMES = (ROLLBACK, ROUTINE)
_LEDGER_SEPARATOR = "@"

ROLLBACK_JOB = "backout.jobs.rollback.run_rollback"
# The job that carries out a ledger request of each kind (the worker re-enqueues lost ones).
REQUEST_JOBS = {"heroku": ROLLBACK_JOB, "package": "backout.jobs.package_rollback.run_package_rollback"}


def queue_names(ledger_id: str) -> tuple[str, str]:
    """The rollback and routine queues of the ledger `ledger_id`, in listening order."""
    return (f"{ROLLBACK}{_LEDGER_SEPARATOR}{ledger_id}", f"{ROUTINE}{_LEDGER_SEPARATOR}{ledger_id}")


def ledger_queues(conn: Any) -> tuple[str, str]:
    """The queues of the ledger on the connection `conn`."""
    from backout import ledger

    return queue_names(ledger.ledger_id(conn))


def queue(name: str, connection: Redis) -> Queue:
    """A backout queue on `connection`, with the JSON serializer and the allowlisted job class."""
    if name.partition(_LEDGER_SEPARATOR)[0] not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; backout's queues are {', '.join(QUEUE_NAMES)}")
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=AllowlistedJob)


def request_job_id(request_id: str) -> str:
    """The RQ job id of a ledger request: the same request always maps to the same job."""
    return f"rollback-{request_id}"


def enqueue_once(
    connection: Redis,
    queue_name: str,
    func_name: str,
    args: Sequence[Any],
    job_id: str,
    timeout: int = ROLLBACK_JOB_TIMEOUT,
    secrets: Sequence[str] = (),
) -> bool:
    """Enqueue `func_name(*args)` as job `job_id` unless a job with that id exists already.

    Returns True when this call enqueued it. The check and the push are one atomic step in Redis
    (RQ's unique enqueue), so two callers racing queue it once.
    """
    resolve(func_name)  # refuse here, not in the worker, what the worker would refuse
    check_arguments(args, secrets)
    try:
        queue(queue_name, connection).enqueue(
            func_name, *args, job_id=job_id, unique=True, job_timeout=timeout,
            result_ttl=JOB_RESULT_TTL, failure_ttl=JOB_RESULT_TTL,
        )
    except DuplicateJobError:
        log.debug("job %s is already in Redis; not enqueued again", job_id)
        return False
    return True
