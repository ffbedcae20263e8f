"""The worker job of a package rollback: `run_package_rollback(request_id)`.

The request (written by `enqueue_package_rollback`) holds the plan and the options; secrets come
from the worker's own environment. A run does only the steps not done yet. While the bad release
waits for a maintainer to yank it on PyPI, the job schedules its own re-check.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from rq import get_current_job

from backout import ledger
from backout import settings as settings_module
from backout.defaults import JOB_RESULT_TTL
from backout.errors import BadInput
from backout.ledger.records import RequestStatus
from backout.package_rollback.enqueue import JOB
from backout.package_rollback.run import check_confirm, run_request
from backout.worker import queues

log = logging.getLogger(__name__)

RECHECK_EVERY = timedelta(hours=1)
# Three days of hourly re-checks; after that `backout package-rollback --recheck` does it by hand.
RECHECKS = 72


def run_package_rollback(request_id: str) -> dict[str, Any]:
    settings = settings_module.load()
    settings.require("BACKOUT_DATABASE_URL", "GITHUB_TOKEN")
    assert settings.ledger_url is not None
    conn = ledger.connect(settings.ledger_url)
    try:
        request = ledger.get_request(conn, request_id)
        if request is None or request["kind"] != "package" or not request.get("plan"):
            raise BadInput(f"{request_id} is not a planned package rollback request in the ledger")
        try:
            check_confirm(request["plan"], (request.get("params") or {}).get("confirm"))
        except BadInput as exc:
            ledger.update_request(conn, request_id, status=RequestStatus.REFUSED, error=str(exc), finished_at="now")
            return {"status": RequestStatus.REFUSED, "error": str(exc)}
        recheck = request["status"] == RequestStatus.SUCCEEDED
        result = run_request(settings, conn, request, recheck=recheck)
        if result["yank"] == "pending":
            _schedule_recheck(request_id)
        return result
    finally:
        conn.close()


def _schedule_recheck(request_id: str) -> None:
    job = get_current_job()
    if job is None:
        return
    count = int(job.meta.get("recheck", 0)) + 1
    if count > RECHECKS:
        log.info("request %s: the yank is still pending after %d re-checks; stopping", request_id, RECHECKS)
        return
    queue = queues.queue(job.origin, job.connection)  # its own ledger's queue
    later = queue.enqueue_in(RECHECK_EVERY, JOB, request_id, job_id=f"{queues.request_job_id(request_id)}-recheck-{count}",
                             meta={"recheck": count}, result_ttl=JOB_RESULT_TTL, failure_ttl=JOB_RESULT_TTL)
    log.info("request %s: PyPI re-check %d scheduled as job %s", request_id, count, later.id)
