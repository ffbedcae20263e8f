"""The health policy: what a round of probes says, when a release has failed or is verified
healthy, and whether a failed release may be rolled back by itself.

Pure logic, no I/O: the monitor feeds it observations and facts and carries out what it decides.

A watch starts when the release hook schedules it. Probes made during the grace period are not
counted (the release is still booting). After it, `threshold` consecutive failed rounds, or
`error_threshold` consecutive rounds without an answer, fail the release; a passing round resets
both counts. A crashed dyno of the release fails it at once, grace or not: a release that cannot
stay up does not get threshold x interval to prove it. A release that passes its probes until
`grace + window` after the watch started is verified healthy, which makes its checkpoint a
target for `previous` and for later auto-rollbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Sequence, TypedDict

from backout.health.probes import ERROR, FAIL, PASS, ProbeResult
from backout.settings import HealthNumbers, Settings

if TYPE_CHECKING:  # the policy stays pure: it reads the ledger's rows, never the ledger
    from backout.ledger.records import CheckpointRow


class RoundVerdict(StrEnum):
    """What one round of probes says about the release: its probes' outcome, or stale."""

    PASS = PASS.value
    FAIL = FAIL.value
    ERROR = ERROR.value
    STALE = "stale"  # answered by another release only (release-match)


STALE = RoundVerdict.STALE


class EventKind(StrEnum):
    """The kinds of health event (the ledger's health_events.kind): the steps of a watch, and
    what the monitor, the watch job and `backout health` did about them."""

    # The steps of a watch (a Step's kind); the monitor records each but PASSED.
    GRACE = "grace"  # a probe during the grace period: not counted
    COUNTED = "counted"  # a failed or unanswered probe, counted towards a threshold
    RECOVERED = "recovered"  # a passing probe after counted ones: the counts start again
    IGNORED_STALE = "stale"  # answered by another release (release-match): not counted
    FAILED = "failed"  # the release failed its checks
    VERIFIED = "verified"  # the release passed its window
    PASSED = "pass"  # a passing probe, nothing to record
    SENTRY = "sentry"  # the Sentry comparison, when it does not fail the release
    # What was done about them.
    WATCH_STARTED = "watch_started"
    WATCH_SKIPPED = "watch_skipped"
    WATCH_ENDED = "watch_ended"  # superseded by the watch of a newer release
    ROLLBACK_REQUESTED = "rollback_requested"
    ROLLBACK_ERROR = "rollback_error"  # the request could not be made; tried again
    ROLLBACK_FINISHED = "rollback_finished"
    ROLLBACK_FAILED = "rollback_failed"
    SUPPRESSED = "suppressed"  # no auto-rollback: a guard said no, a person is told
    DRY_RUN = "dry_run"  # BACKOUT_HEALTH_DRY_RUN: what would have been done
    CHECK = "check"  # one `backout health`


# The step kinds by their short names, as the monitor and the tests use them.
GRACE = EventKind.GRACE
COUNTED = EventKind.COUNTED
RECOVERED = EventKind.RECOVERED
IGNORED_STALE = EventKind.IGNORED_STALE
FAILED = EventKind.FAILED
VERIFIED = EventKind.VERIFIED
PASSED = EventKind.PASSED


class Action(StrEnum):
    """What is done about a failed release (a Decision's action)."""

    ROLLBACK = "rollback"
    DRY_RUN = "dry_run"
    SUPPRESS = "suppress"

DB_STEP = {"code": "none", "code+down": "down", "code+restore": "restore"}
# BACKOUT_AUTO_ROLLBACK=auto chooses the database step from the rollback's cost (backout.verdict.cost).
AUTO = "auto"


@dataclass(frozen=True)
class Policy(HealthNumbers):
    auto_rollback: str = "code"
    dry_run: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(**settings.health.numbers(), auto_rollback=settings.auto_rollback,
                   dry_run=settings.health.dry_run)

    @property
    def db_step(self) -> str | None:
        """The database step auto-rollbacks take (`none`, `down`, `restore`), None when they are off
        or chosen by the verdict (`auto`)."""
        return DB_STEP.get(self.base_policy)

    @property
    def base_policy(self) -> str:
        """The policy without its `+files` (`auto+files` is `auto`, putting the uploads back too)."""
        return self.auto_rollback.removesuffix("+files")

    @property
    def files_step(self) -> str:
        """`restore` when auto-rollbacks put the uploads back too (a policy ending in `+files`)."""
        return "restore" if self.auto_rollback.endswith("+files") else "none"

    @property
    def enabled(self) -> bool:
        return self.auto_rollback != "off"

    def describe(self) -> str:
        return (f"grace {self.grace:g}s, a probe every {self.interval:g}s, fail after {self.threshold} failed "
                f"or {self.error_threshold} unanswered probes in a row, verified after {self.window:g}s")


@dataclass(frozen=True)
class Verdict:
    """What one round of probes (every URL once) says about the release."""

    verdict: RoundVerdict
    reason: str
    results: tuple[ProbeResult, ...] = ()

    def detail(self) -> dict[str, Any]:
        return {"probes": [r.to_dict() for r in self.results]}


def judge_round(results: Sequence[ProbeResult], release_version: int, release_commit: str | None = None) -> Verdict:
    """One verdict from a round's probes: a wrong answer outweighs no answer outweighs a pass.

    With release-match on, a probe answered by another release is not counted (Heroku's preboot
    keeps the old release serving for minutes); one that does not say which release answered is
    counted, since a router error page never says.
    """
    counted = [r for r in results if _served_by(r.release, release_version, release_commit)]
    stale = [r for r in results if r not in counted]
    failed = [r for r in counted if r.outcome == FAIL]
    errors = [r for r in counted if r.outcome == ERROR]
    if failed:
        return Verdict(RoundVerdict.FAIL, _reasons(failed), tuple(results))
    if errors:
        return Verdict(RoundVerdict.ERROR, _reasons(errors), tuple(results))
    if counted:
        return Verdict(RoundVerdict.PASS, _reasons(counted), tuple(results))
    if stale:
        served = ", ".join(sorted({_release_text(r.release) for r in stale}))
        return Verdict(RoundVerdict.STALE, f"answered by {served}, not v{release_version}", tuple(results))
    return Verdict(RoundVerdict.PASS, "no URL to probe", ())


@dataclass
class WatchState:
    """The counts of one watch. Kept in the memory of the worker holding the watch."""

    started_at: float
    failures: int = 0  # consecutive counted rounds with a wrong answer, since the last pass
    errors: int = 0  # consecutive counted rounds without an answer, since the last pass
    passes: int = 0
    first_counted_at: float | None = None  # when the current run of bad rounds started
    history: list[dict[str, Any]] = field(default_factory=list)  # the current run, for the record


@dataclass(frozen=True)
class Step:
    """What an observation means for the watch, and the reason to record."""

    kind: EventKind
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def grace_ends(policy: Policy, state: WatchState) -> float:
    return state.started_at + policy.grace


def window_ends(policy: Policy, state: WatchState) -> float:
    return state.started_at + policy.grace + policy.window


def observe(policy: Policy, state: WatchState, verdict: Verdict, at: float) -> Step:
    """Fold one round's verdict, made at `at` (when its probes started), into the state."""
    if verdict.verdict == STALE:
        return Step(IGNORED_STALE, verdict.reason + "; not counted", verdict.detail())
    if at < grace_ends(policy, state):
        left = grace_ends(policy, state) - at
        if verdict.verdict == RoundVerdict.PASS:
            return Step(PASSED, verdict.reason)
        return Step(GRACE, f"{verdict.verdict}: {verdict.reason}; in the grace period ({left:.1f}s left), not counted",
                    verdict.detail())
    if verdict.verdict == RoundVerdict.PASS:
        had = (state.failures, state.errors)
        state.failures = state.errors = 0
        state.first_counted_at = None
        state.history.clear()
        state.passes += 1
        if at >= window_ends(policy, state):
            return Step(VERIFIED, f"passed its probes for {policy.window:g}s after a {policy.grace:g}s grace period",
                        {"passes": state.passes})
        if any(had):
            return Step(RECOVERED, f"passed after {_count_text(*had)}; the counts start again", verdict.detail())
        return Step(PASSED, verdict.reason)

    if state.first_counted_at is None:
        state.first_counted_at = at
    if verdict.verdict == RoundVerdict.FAIL:
        state.failures += 1
    else:
        state.errors += 1
    state.history.append({"at": at, "verdict": verdict.verdict, "reason": verdict.reason})
    detail = {**verdict.detail(), "failures": state.failures, "errors": state.errors,
              "threshold": policy.threshold, "error_threshold": policy.error_threshold}
    if state.failures >= policy.threshold:
        return Step(FAILED, f"{state.failures} failed probes in a row (threshold {policy.threshold}): {verdict.reason}",
                    {**detail, "first_counted_at": state.first_counted_at, "run": list(state.history)})
    if state.errors >= policy.error_threshold:
        return Step(FAILED, f"{state.errors} unanswered probes in a row (error threshold {policy.error_threshold}): "
                            f"{verdict.reason}",
                    {**detail, "first_counted_at": state.first_counted_at, "run": list(state.history)})
    if verdict.verdict == RoundVerdict.FAIL:
        return Step(COUNTED, f"failed probe {state.failures} of {policy.threshold}: {verdict.reason}", detail)
    return Step(COUNTED, f"unanswered probe {state.errors} of {policy.error_threshold}: {verdict.reason}", detail)


def observe_crash(release_version: int, dynos: Sequence[dict[str, Any]], source: str) -> Step | None:
    """A FAILED step when a dyno of the watched release is crashed, else None."""
    crashed = sorted(
        d.get("name") or "?" for d in dynos
        if d.get("state") == "crashed" and _dyno_release(d) in (None, release_version)
    )
    if not crashed:
        return None
    return Step(FAILED, f"dyno {', '.join(crashed)} of v{release_version} crashed (seen in {source})",
                {"crashed": crashed, "source": source})


def due_verified(policy: Policy, state: WatchState, now: float, probes: bool) -> Step | None:
    """Verification for a watch without probe URLs (only dynos and Sentry are watched)."""
    if probes or now < window_ends(policy, state):
        return None
    return Step(VERIFIED, f"no dyno crashed for {policy.grace + policy.window:g}s (no health URL to probe)")


@dataclass(frozen=True)
class Facts:
    """What the ledger and the Platform API say, for deciding on an auto-rollback."""

    app: str
    release_version: int
    now: float
    is_rollback_release: bool = False
    rollback_of: int | None = None  # the release a rollback release went back to, if known
    earlier_request: str | None = None  # an auto-rollback already requested for this release
    last_auto_rollback_at: float | None = None
    target: CheckpointRow | None = None  # the checkpoint of the last release verified healthy
    cost: dict[str, Any] | None = None  # what rolling back to the target costs (BACKOUT_AUTO_ROLLBACK=auto)


class Target(TypedDict):
    """What an auto-rollback goes back to: the release verified healthy, by its deploy checkpoint."""

    checkpoint: str
    version: int | None
    verified_healthy_at: str | None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    db: str | None = None
    target: Target | None = None
    needs_person: bool = False
    # With BACKOUT_AUTO_ROLLBACK=auto: the branch taken (code, code+down, person) and the cost behind it.
    branch: str | None = None
    cost: dict[str, Any] | None = None

    def detail(self) -> dict[str, Any]:
        found: dict[str, Any] = {"action": self.action, "db": self.db, "target": self.target,
                                 "needs_person": self.needs_person}
        if self.branch:
            found.update(branch=self.branch, cost=self.cost)
        return found


def decide(policy: Policy, facts: Facts) -> Decision:
    """Whether a failed release is rolled back by itself, and to what. The guards, in order."""
    v = facts.release_version
    if not policy.enabled:
        return Decision(Action.SUPPRESS, f"v{v} failed its health checks but BACKOUT_AUTO_ROLLBACK is off; "
                                    "roll back by hand if it is bad", needs_person=True)
    if facts.is_rollback_release:
        back_to = f" to v{facts.rollback_of}" if facts.rollback_of else ""
        return Decision(Action.SUPPRESS, f"v{v} is a rollback{back_to} and is still failing; backout does not roll back "
                                    "a rollback: a person must look", needs_person=True)
    if facts.earlier_request:
        return Decision(Action.SUPPRESS, f"an auto-rollback of v{v} was already requested ({facts.earlier_request}); "
                                    "at most one per release", needs_person=True)
    if facts.last_auto_rollback_at is not None and facts.now - facts.last_auto_rollback_at < policy.cooldown:
        ago = facts.now - facts.last_auto_rollback_at
        return Decision(Action.SUPPRESS, f"the last auto-rollback of {facts.app} was {ago:.0f}s ago, within the "
                                    f"{policy.cooldown:g}s cooldown (BACKOUT_HEALTH_COOLDOWN)", needs_person=True)
    if facts.target is None:
        return Decision(Action.SUPPRESS, f"no release before v{v} was verified healthy, so there is nothing known good "
                                    "to roll back to", needs_person=True)
    target: Target = {"checkpoint": facts.target["id"], "version": facts.target["release_version"],
                      "verified_healthy_at": facts.target.get("verified_healthy_at")}
    if policy.base_policy == AUTO:
        return _by_cost(policy, facts, target)
    plan = f"roll back to v{target['version']} ({target['checkpoint']}) with --db {policy.db_step}"
    if policy.dry_run:
        return Decision(Action.DRY_RUN, f"dry run (BACKOUT_HEALTH_DRY_RUN): would {plan}", policy.db_step, target)
    return Decision(Action.ROLLBACK, plan[0].upper() + plan[1:], policy.db_step, target)


def _by_cost(policy: Policy, facts: Facts, target: Target) -> Decision:
    """BACKOUT_AUTO_ROLLBACK=auto: the cheapest rollback that loses nothing, or a person is told.

    Code only when the previous code runs on the new schema; code plus down when it does not and
    the down scripts lose nothing written since the deploy; otherwise nothing automatic (never a
    restore): the app stays as it is, and the person told gets the verdict, the plan they could
    run and what it would lose.
    """
    cost = facts.cost or {"verdict": "no-verdict", "text": "no verdict", "reason": "the cost was not computed"}
    back_to = f"v{target['version']} ({target['checkpoint']})"
    why = f"the verdict is {cost['text']}: {cost['reason']}"
    db = {"code-only": "none", "down-needed": "down"}.get(cost["verdict"])
    if db == "down" and not cost.get("loss_counted"):
        db = None  # a down that may lose data is not run by itself (the reason says why it was not counted)
    if db is None:
        down = f"backout rollback --app {facts.app} --to {target['checkpoint']} --db down --confirm {facts.app}"
        restore = f"backout rollback --app {facts.app} --to {target['checkpoint']} --db restore --confirm {facts.app}"
        loss = "; ".join(x["what"] for x in cost.get("loss") or [])
        person = (f"BACKOUT_AUTO_ROLLBACK=auto rolls back nothing by itself: {why}. The app is left as it is; a "
                  f"person can run `{down}`" + (f" (it would lose {loss})" if loss else "")
                  + f" or `{restore}` (it loses every write since the checkpoint)")
        return Decision(Action.SUPPRESS, person, None, target, needs_person=True, branch="person", cost=cost)
    branch = "code" if db == "none" else "code+down"
    plan = (f"roll back to {back_to} with --db {db}: BACKOUT_AUTO_ROLLBACK=auto chose {branch} because {why}"
            + ("; the database keeps the newer schema" if db == "none" else
               "; the down scripts lose nothing written since the deploy"))
    if policy.dry_run:
        return Decision(Action.DRY_RUN, f"dry run (BACKOUT_HEALTH_DRY_RUN): would {plan}", db, target, branch=branch,
                        cost=cost)
    return Decision(Action.ROLLBACK, plan[0].upper() + plan[1:], db, target, branch=branch, cost=cost)


def _served_by(release: int | str | None, version: int, commit: str | None) -> bool:
    if release is None:
        return True
    if isinstance(release, int):
        return release == version
    if commit:
        return release == commit or (len(release) >= 7 and commit.startswith(release))
    return True  # a label we cannot compare with the release: count it


def _dyno_release(dyno: dict[str, Any]) -> int | None:
    release = dyno.get("release")
    if isinstance(release, dict) and isinstance(release.get("version"), int):
        return release["version"]
    return None


def _release_text(release: int | str | None) -> str:
    return f"v{release}" if isinstance(release, int) else str(release)


def _reasons(results: Sequence[ProbeResult]) -> str:
    if len(results) == 1:
        return results[0].reason
    return "; ".join(f"{r.url}: {r.reason}" for r in results)


def _count_text(failures: int, errors: int) -> str:
    parts = []
    if failures:
        parts.append(f"{failures} failed")
    if errors:
        parts.append(f"{errors} unanswered")
    return " and ".join(parts) + " probe" + ("s" if failures + errors > 1 else "")
