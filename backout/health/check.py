"""`backout health --app A [--json]`: probe the app once now, print the verdict and what the policy
would do if the release kept failing.

It probes every BACKOUT_HEALTH_URL, lists the dynos (with HEROKU_API_KEY) and asks Sentry (when
the Sentry check is configured and the ledger knows the commits), then shows the watch the monitor
runs for the app (with REDIS_URL) and the decision the guards would take. The check is recorded in
the ledger as a health event of kind `check` (with a ledger), so `backout status` shows it.
Exit status: 0 when the release passes, 1 when it fails or does not answer, 2 for bad input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from backout import ledger, redis_conn
from backout.errors import BackoutError, BadInput, HerokuAPIError
from backout.health.actions import gather_facts, release_commits, with_cost
from backout.health.policy import (
    FAILED,
    EventKind,
    Policy,
    RoundVerdict,
    Verdict,
    decide,
    judge_round,
    observe_crash,
)
from backout.health.probes import Prober, ProbeResult, ProbeSpec
from backout.health.watches import WatchRecord, new_record
from backout.redact import redact
from backout.release_version import rollback_target
from backout.settings import Settings
from backout.timestamps import epoch

log = logging.getLogger(__name__)


def check(settings: Settings, app: str) -> dict[str, Any]:
    """One health check of `app` now, as a JSON-friendly document (see the module docstring)."""
    if not settings.health.urls and not settings.heroku_api_key:
        raise BadInput("nothing to check: set BACKOUT_HEALTH_URL (the URL to probe, for example "
                       "https://myapp.herokuapp.com/health) or HEROKU_API_KEY (to look for crashed dynos)")
    policy = Policy.from_settings(settings)
    client = _client(settings)
    now = time.time()
    try:
        release = _release(client, app)
        version = release["version"] if release else None
        prober = Prober(ProbeSpec.from_settings(settings.health))
        try:
            results = [prober.probe(url) for url in settings.health.urls]
        finally:
            prober.close()
        verdict = judge_round(results, version or 0) if version else _unmatched(results)
        dynos, crash = None, None
        if client is not None:
            dynos = client.dynos(app)
            crash = observe_crash(version, dynos, f"GET /apps/{app}/dynos") if version else None
        conn = ledger.connect(settings.ledger_url) if settings.ledger_url else None
        try:
            watch = _watch(settings, app)
            sentry = _sentry(settings, conn, app, version, watch, now)
            sentry_failed = sentry is not None and sentry.get("kind") == FAILED
            failing = crash is not None or verdict.verdict in (RoundVerdict.FAIL, RoundVerdict.ERROR) or sentry_failed
            reason = crash.reason if crash else (sentry["reason"] if sentry is not None and sentry_failed else verdict.reason)
            overall = RoundVerdict.FAIL if crash or sentry_failed else verdict.verdict
            decision = None
            if failing and version and conn is not None:
                facts = with_cost(settings, conn, gather_facts(conn, client, app, version, now, watch))
                decision = decide(policy, facts)
            document = {
                "app": app,
                "checked_at": now,
                "release": release,
                "verdict": overall,
                "reason": reason,
                "probes": [r.to_dict() for r in results],
                "dynos": None if dynos is None else [_dyno(d) for d in dynos],
                "sentry": sentry,
                "watch": watch,
                "policy": {**policy.numbers(), "auto_rollback": policy.auto_rollback, "db": policy.db_step,
                           "dry_run": policy.dry_run},
                "decision": None if decision is None else {"action": decision.action, "reason": decision.reason,
                                                           "db": decision.db, "target": decision.target,
                                                           **({"branch": decision.branch, "cost": decision.cost}
                                                              if decision.branch else {})},
            }
            if conn is not None:
                ledger.record_health_event(conn, app=app, release_version=version, kind=EventKind.CHECK, verdict=overall,
                                           reason=f"backout health: {reason}",
                                           detail={"probes": document["probes"], "decision": document["decision"]})
            return document
        finally:
            if conn is not None:
                conn.close()
    finally:
        if client is not None:
            client.close()


def _client(settings: Settings) -> Any:
    if not settings.heroku_api_key:
        return None
    from backout.heroku import HerokuClient

    return HerokuClient.from_settings(settings)


def _release(client: Any, app: str) -> dict[str, Any] | None:
    if client is None:
        return None
    try:
        current = client.current_release(app)
    except HerokuAPIError as exc:
        if exc.status == 404:
            raise BadInput(f"app {app!r} not found: {exc.message}") from None
        raise
    return {"version": current["version"], "description": current.get("description"),
            "rollback_of": rollback_target(current.get("description")), "created_at": current.get("created_at")}


def _unmatched(results: list[ProbeResult]) -> Verdict:
    # Without the release (no Platform API), release-match cannot tell who answered: count them all.
    return judge_round([replace(r, release=None) for r in results], 0)


def _watch(settings: Settings, app: str) -> WatchRecord | None:
    if not settings.redis_url:
        return None
    from backout.health.watches import WatchRegistry

    connection = redis_conn.connect(settings.redis_url)
    try:
        registry = WatchRegistry(connection)
        record = registry.get(app)
        if record is not None:
            record["owner"] = registry.owner(app)
        return record
    finally:
        connection.close()


def _sentry(settings: Settings, conn: Any, app: str, version: int | None, watch: WatchRecord | None,
            now: float) -> dict[str, Any] | None:
    if not settings.sentry_api_token or not version or conn is None:
        return None
    from backout.health.sentry_check import SentryCheck

    record = watch if watch and watch.get("release_version") == version else new_record(
        app, version, now, (), **release_commits(conn, app, version))
    if record.get("previous") is None or not record.get("commit"):
        return {"kind": "sentry", "reason": "not compared: the ledger does not know the commits of this release and the one before"}
    if watch is None:
        checkpoint = ledger.checkpoint_for_release(conn, app, version)
        if checkpoint:
            record["started_at"] = epoch(checkpoint["created_at"])
    try:
        step = SentryCheck(settings).check_release(record, now)
    except BackoutError as exc:
        return {"kind": "sentry", "reason": f"not compared: {redact(str(exc), settings.secrets())}"}
    return None if step is None else {"kind": step.kind, "reason": step.reason, "detail": step.detail}


def _dyno(dyno: dict[str, Any]) -> dict[str, Any]:
    release = dyno.get("release")
    return {"name": dyno.get("name"), "state": dyno.get("state"),
            "release_version": release.get("version") if isinstance(release, dict) else None}


