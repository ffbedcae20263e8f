"""Enqueueing a package rollback from a script: plan it, write the ledger request, queue the job.

    from backout.package_rollback import enqueue_package_rollback
    request_id = enqueue_package_rollback("acme/widgets", "1.2.3", confirm="acme/widgets", reason="...")

Bad input is refused here, before anything is written (the plan is computed now and stored with
the request). The job id is derived from the request id, so enqueueing twice queues one job.
"""

from __future__ import annotations

from rq.job import JobStatus

from backout import ledger, redis_conn
from backout import settings as settings_module
from backout.ledger.records import RequestStatus
from backout.package_rollback.plan import Options
from backout.package_rollback.run import check_confirm, plan_request, start
from backout.settings import Settings
from backout.worker import queues

JOB = "backout.jobs.package_rollback.run_package_rollback"
_OVER = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def enqueue_package_rollback(
    repo: str,
    bad: str,
    *,
    confirm: str,
    good: str | None = None,
    reason: str = "",
    tag_prefix: str | None = None,
    version_file: str | None = None,
    changelog: str | None = None,
    checkout: str | None = None,
    pypi_project: str | None = None,
    requested_by: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Queue a package rollback on the ledger's rollback queue and return its ledger request id.

    `confirm` must be the repository (`OWNER/NAME`): the job deletes its bad tag and release.
    Rerunning for the same repository and bad version continues that request.
    """
    settings = settings or settings_module.load()
    settings.require("GITHUB_TOKEN", "BACKOUT_DATABASE_URL", "REDIS_URL")
    assert settings.ledger_url is not None and settings.redis_url is not None
    options = Options(repo=repo, bad=bad, good=good, tag_prefix=tag_prefix, version_file=version_file,
                      changelog=changelog, checkout=checkout, pypi_project=pypi_project, reason=reason)
    conn = ledger.connect(settings.ledger_url)
    try:
        planned = plan_request(settings, options, conn)
        check_confirm(planned.plan, confirm)
        request = start(settings, conn, planned, options, requested_by, extra={"confirm": confirm})
        job_id = queues.request_job_id(request["id"])
        redis = redis_conn.connect(settings.redis_url)
        try:
            # A finished or failed run of this request leaves its job in Redis for a week; a rerun
            # replaces it, and the job then does only the steps that are not done.
            rollback_queue = queues.ledger_queues(conn)[0]
            earlier = queues.queue(rollback_queue, redis).fetch_job(job_id)
            if earlier is not None and earlier.get_status(refresh=True) in _OVER:
                earlier.delete()
            queues.enqueue_once(redis, rollback_queue, JOB, [request["id"]], job_id, secrets=settings.secrets())
        finally:
            redis.close()
        if request["status"] in (RequestStatus.FAILED, RequestStatus.SUCCEEDED):
            ledger.update_request(conn, request["id"], status=RequestStatus.QUEUED, job_id=job_id)
        else:
            ledger.update_request(conn, request["id"], job_id=job_id)
        return request["id"]
    finally:
        conn.close()
