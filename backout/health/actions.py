"""What the monitor does when the policy has spoken: record, verify, roll back or tell a person.

These run with a ledger connection (and the Platform API when configured); the monitor calls them
from its one ledger thread, in order, so the health events of a watch tell its story in sequence.
Every verdict and decision is a health event with its reason. Event kinds:

    watch_started, watch_skipped, watch_ended   the watch itself
    grace, counted, recovered, stale            probe rounds that were not a plain pass
    failed, verified                            the verdict on the release
    rollback_requested, dry_run, suppressed     the decision on a failed release
    rollback_error                              a request that could not be made yet (tried again)
    rollback_finished, rollback_failed          how the auto-rollback ended
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any


from backout import ledger
from backout.errors import BackoutError, HerokuAPIError, PlanRefused
from backout.health.policy import AUTO, Action, Decision, EventKind, Facts, Policy, RoundVerdict, Step, decide
from backout.health.watches import WatchPhase, WatchRecord, WatchRegistry, new_record
from backout.ledger.records import HealthEventRow, LedgerConnection, RequestStatus
from backout.notify import notify
from backout.redact import redact
from backout.release_version import rollback_target
from backout.settings import Settings
from backout.timestamps import epoch

log = logging.getLogger(__name__)

REQUESTED_BY = "health-monitor"


def record(conn: LedgerConnection, watch: WatchRecord, kind: EventKind, reason: str,
           verdict: RoundVerdict | None = None, detail: dict[str, Any] | None = None) -> HealthEventRow:
    return ledger.record_health_event(conn, app=watch["app"], release_version=watch["release_version"], kind=kind,
                                      verdict=verdict, reason=reason, detail=detail)


def gather_facts(conn: LedgerConnection, client: Any, app: str, version: int, now: float,
                 watch: WatchRecord | None = None) -> Facts:
    """What the guards need to know, from the ledger and (when a client is given) the Platform API."""
    back_to = watch.get("rollback_of") if watch is not None else None
    if back_to is None and client is not None:
        try:
            back_to = rollback_target(client.release_info(app, version).get("description"))
        except HerokuAPIError as exc:
            log.warning("could not read release v%s of %s: %s", version, app, exc)
    earlier = None
    last_at = None
    for event in ledger.health_events(conn, app, limit=1000):
        if event["kind"] != EventKind.ROLLBACK_REQUESTED:
            continue
        at = epoch(event["at"])
        last_at = at if last_at is None else max(last_at, at)
        if event["release_version"] == version and earlier is None:
            earlier = (event.get("detail") or {}).get("request_id") or event["id"]
    return Facts(app=app, release_version=version, now=now, is_rollback_release=back_to is not None,
                 rollback_of=back_to, earlier_request=earlier, last_auto_rollback_at=last_at,
                 target=ledger.latest_verified_checkpoint(conn, app, before_version=version))


def with_cost(settings: Settings, conn: LedgerConnection, facts: Facts) -> Facts:
    """With BACKOUT_AUTO_ROLLBACK=auto, the facts with what rolling back to the target costs: the
    verdicts recorded for the releases it undoes, and the data a down would lose, counted now in the
    app's database (DATABASE_URL)."""
    target_version = facts.target["release_version"] if facts.target else None
    if settings.auto_rollback.removesuffix("+files") != AUTO or target_version is None:
        return facts
    from backout.verdict.cost import cost_now

    cost = cost_now(settings, conn, facts.app, target_version, facts.release_version)
    return dataclasses.replace(facts, cost=cost)


def release_commits(conn: LedgerConnection, app: str, version: int) -> dict[str, Any]:
    """The commits of a release and of the one it replaced, from their checkpoints: release-match
    and the Sentry check compare by commit (sentry-sdk names a Heroku release after it)."""
    checkpoint = ledger.checkpoint_for_release(conn, app, version)
    if checkpoint is None:
        return {"commit": None, "previous": None}
    previous = None
    previous_version = checkpoint["previous_release_version"]
    if previous_version:
        before = ledger.checkpoint_for_release(conn, app, previous_version)
        if before is not None:
            previous = {"version": before["release_version"], "commit": before.get("slug_commit"),
                        "started_at": epoch(before["created_at"])}
    return {"commit": checkpoint.get("slug_commit"), "previous": previous}


def on_failed(settings: Settings, conn: LedgerConnection, client: Any, registry: WatchRegistry,
              watch: WatchRecord, step: Step, now: float) -> tuple[str, str | None]:
    """Record the failure and carry out the decision.

    Returns ("requested", request id) when a rollback was requested, ("ended", None) when the watch
    is over without one (suppressed, dry run, refused), or ("retry", None) when the request could
    not be made for a passing reason (the Platform API or the ledger did not answer): the next
    failed round tries again.
    """
    app, version = watch["app"], watch["release_version"]
    record(conn, watch, EventKind.FAILED, step.reason, RoundVerdict.FAIL, step.detail)
    facts = with_cost(settings, conn, gather_facts(conn, client, app, version, now, watch))
    decision = decide(Policy.from_settings(settings), facts)
    if decision.action == Action.ROLLBACK and not registry.mark_auto_rollback(app, version, f"monitor at {now:.3f}"):
        decision = Decision(Action.SUPPRESS, f"an auto-rollback of v{version} was already requested by another "
                                        "monitor; at most one per release", needs_person=True)
    headline = f"{app} v{version} failed its health checks ({step.reason})"
    if decision.action == Action.DRY_RUN:
        record(conn, watch, EventKind.DRY_RUN, decision.reason, RoundVerdict.FAIL, decision.detail())
        notify(settings, "health.dry_run", f"{headline}; {decision.reason}", {**decision.detail(), "app": app,
                                                                              "release_version": version})
        return "ended", None
    if decision.action == Action.SUPPRESS:
        _suppressed(settings, conn, watch, headline, decision)
        return "ended", None

    from backout.rollback.enqueue import enqueue_rollback

    target = decision.target
    assert target is not None, "a rollback decision names its target"
    files = Policy.from_settings(settings).files_step
    try:
        request_id = enqueue_rollback(app, target["checkpoint"], db=decision.db or "none", files=files,
                                      confirm=app if decision.db != "none" or files != "none" else None,
                                      settings=settings, requested_by=REQUESTED_BY)
    except PlanRefused as exc:
        _suppressed(settings, conn, watch, headline, Decision(
            Action.SUPPRESS, f"the rollback plan was refused: {exc}", decision.db, decision.target, True))
        return "ended", None
    except BackoutError as exc:
        message = redact(str(exc), settings.secrets())
        if isinstance(exc, HerokuAPIError) and 400 <= exc.status < 500 and exc.status != 429:
            _suppressed(settings, conn, watch, headline, Decision(
                Action.SUPPRESS, f"the rollback could not be requested: {message}", decision.db, decision.target, True))
            return "ended", None
        registry.unmark_auto_rollback(app, version)
        record(conn, watch, EventKind.ROLLBACK_ERROR, f"the rollback could not be requested ({message}); trying again "
                                              "at the next failed probe", RoundVerdict.FAIL, decision.detail())
        return "retry", None
    first = step.detail.get("first_counted_at")
    record(conn, watch, EventKind.ROLLBACK_REQUESTED, decision.reason, RoundVerdict.FAIL, {
        **decision.detail(), "request_id": request_id, "first_counted_at": first,
        "seconds_since_first_failure": round(now - first, 3) if first else None,
    })
    registry.update(app, version, phase=WatchPhase.ROLLING_BACK, request_id=request_id, failed_at=now)
    notify(settings, "health.rollback_started",
           f"{headline}; rolling back to v{target['version']} with --db {decision.db} (request {request_id})",
           {**decision.detail(), "app": app, "release_version": version, "request_id": request_id})
    return "requested", request_id


def on_verified(settings: Settings, conn: LedgerConnection, watch: WatchRecord, step: Step) -> None:
    app, version = watch["app"], watch["release_version"]
    ledger.mark_release_verified(conn, app, version)
    checkpoint = ledger.checkpoint_for_release(conn, app, version)
    reason = step.reason
    if checkpoint is None:
        reason += "; " + _no_checkpoint(conn, watch)
    record(conn, watch, EventKind.VERIFIED, reason, RoundVerdict.PASS,
           {**step.detail, "checkpoint": checkpoint and checkpoint["id"]})
    notify(settings, "health.verified", f"{app} v{version} is verified healthy: {step.reason}",
           {"app": app, "release_version": version, "checkpoint": checkpoint and checkpoint["id"]})


def _no_checkpoint(conn: LedgerConnection, watch: WatchRecord) -> str:
    """Why a verified release has no checkpoint to mark: a rollback release takes none by design;
    any other release should have had one from the release hook."""
    app, version = watch["app"], watch["release_version"]
    made_by = next((r for r in ledger.list_requests(conn, app, statuses=[RequestStatus.SUCCEEDED], limit=20)
                    if (r.get("result") or {}).get("release_version") == version), None)
    back_to = watch.get("rollback_of") or (made_by and (made_by.get("result") or {}).get("target_version"))
    if made_by is None and back_to is None:
        return f"no complete deploy checkpoint of v{version} to mark (was the release hook in the Procfile?)"
    return (f"v{version} is a rollback release" + (f" to v{back_to}" if back_to else "")
            + (f" (request {made_by['id']})" if made_by else "") + ", which takes no checkpoint of its own")


def follow_rollback(settings: Settings, conn: LedgerConnection, registry: WatchRegistry, watch: WatchRecord,
                    now: float, give_up_after: float) -> bool:
    """Check on the auto-rollback a watch asked for. True when it is over (the watch ends).

    A rollback that succeeded gets a watch of its own (the release it made), so that a rollback
    release that fails too is caught, and then left to a person by the guards.
    """
    app, version, request_id = watch["app"], watch["release_version"], watch.get("request_id")
    request = ledger.get_request(conn, request_id) if request_id else None
    if request is None:
        record(conn, watch, EventKind.ROLLBACK_FAILED, f"rollback request {request_id} is not in the ledger", RoundVerdict.FAIL)
        return True
    if request["status"] == RequestStatus.SUCCEEDED:
        result = request.get("result") or {}
        new_version = result.get("release_version")
        record(conn, watch, EventKind.ROLLBACK_FINISHED,
               f"rolled back: v{new_version} runs v{result.get('target_version')}'s code and config "
               f"(request {request_id})", None, {"request_id": request_id, "result": result})
        if isinstance(new_version, int) and new_version != version:
            follow_up = new_record(app, new_version, now, watch.get("urls") or [], commit=None,
                                   rollback_of=result.get("target_version"), after_request=request_id)
            registry.register(follow_up)
        return True
    if request["status"] in (RequestStatus.FAILED, RequestStatus.REFUSED):
        record(conn, watch, EventKind.ROLLBACK_FAILED, f"the auto-rollback {request['status']}: {request.get('error')}; "
                                                "a person must look", RoundVerdict.FAIL, {"request_id": request_id})
        return True
    failed_at = watch.get("failed_at") or now
    if now - failed_at > give_up_after:
        reason = (f"the auto-rollback (request {request_id}) is still {request['status']} after "
                  f"{now - failed_at:.0f}s; is a worker running? a person must look")
        record(conn, watch, EventKind.ROLLBACK_FAILED, reason, RoundVerdict.FAIL, {"request_id": request_id})
        notify(settings, "health.rollback_stuck", f"{app} v{version}: {reason}", {"app": app, "request_id": request_id})
        return True
    return False


def _suppressed(settings: Settings, conn: LedgerConnection, watch: WatchRecord, headline: str,
                decision: Decision) -> None:
    record(conn, watch, EventKind.SUPPRESSED, decision.reason, RoundVerdict.FAIL, decision.detail())
    notify(settings, "health.rollback_suppressed", f"{headline} but is not rolled back: {decision.reason}",
           {**decision.detail(), "app": watch["app"], "release_version": watch["release_version"]})


