"""The health monitor: watches every registered release, in whichever worker holds its app.

`run_monitor(settings, stop)` runs inside `backout worker` (in a thread) until `stop` is set.
Each worker's monitor claims the watches nobody holds (see `health_watches`), so one watch per app
runs at a time however many workers there are, and a watch whose worker died is taken over.

Concurrency, so that one slow app does not delay the others and a thousand targets stay cheap:
- one scheduler thread (this loop) owns all watch state and never blocks on the network;
- probes, dyno listings and Sentry queries run on a fixed thread pool and post their results to
  the loop's inbox; probes share one keep-alive connection pool (see `probes`);
- everything that writes the ledger, calls the rollback API or notifies runs on one ledger
  thread, in order, so the health events of a watch are recorded in the order they happened;
- a subscriber thread turns Redis messages (a new watch, a dyno webhook) into inbox items, so a
  crash reported by webhook is acted on at once rather than at the next round.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeAlias

import psycopg
import redis

from backout import ledger, redis_conn
from backout.errors import BackoutError
from backout.health import actions as health_actions
from backout.health.policy import (
    FAILED,
    PASSED,
    STALE,
    VERIFIED,
    EventKind,
    Policy,
    RoundVerdict,
    Step,
    WatchState,
    due_verified,
    grace_ends,
    judge_round,
    observe,
    observe_crash,
)
from backout.health.probes import Prober, ProbeResult, ProbeSpec
from backout.health.watches import CHANNEL, WatchPhase, WatchRecord, WatchRegistry
from backout.redact import mask_url, redact
from backout.settings import Settings

log = logging.getLogger(__name__)

POOL_SIZE = 32
# The owner key outlives a few missed renewals; a dead worker's watches move after this long.
MIN_LOCK_TTL = 3.0
LOCK_TTL_INTERVALS = 3
# A rollback that has not finished after this long is handed to a person.
ROLLBACK_GIVE_UP = 3600.0
# Dyno listings spend the token's Platform API budget (Heroku: 4500 requests an hour), so the
# monitor makes at most this many a second, whatever it watches: each app's dynos are listed every
# half interval (a crash is seen within one) while that fits, less often when many apps are
# watched. Crash webhooks are not rationed.
DYNO_LISTINGS_PER_SECOND = 0.5
# Probe samples (for the web page's chart) are written in batches, at most this often, and the ones
# older than the ledger keeps are deleted about once an hour.
SAMPLE_FLUSH = 1.0
SAMPLE_PRUNE = 3600.0


# --- the loop's inbox: what the worker threads, the subscriber and the ledger thread tell it ------


@dataclass(frozen=True)
class ProbeDone:
    """One probe of a round came back."""

    kind: ClassVar[str] = "probe"
    app: str
    version: int
    round_no: int
    result: ProbeResult


@dataclass(frozen=True)
class DynosListed:
    """The release's dynos as the Platform API lists them, or why they could not be listed."""

    kind: ClassVar[str] = "dynos"
    app: str
    version: int
    dynos: list[dict[str, Any]] | None
    problem: str | None


@dataclass(frozen=True)
class DynoEvent:
    """A dyno's state change, from a dyno webhook."""

    kind: ClassVar[str] = "dyno_event"
    app: str
    version: int
    dyno: dict[str, Any]


@dataclass(frozen=True)
class SentryChecked:
    """The Sentry check's step (None when it says nothing or could not ask)."""

    kind: ClassVar[str] = "sentry"
    app: str
    version: int
    step: Step | None


@dataclass(frozen=True)
class LedgerDone:
    """The ledger thread finished a decision or verification: the watch may go on (with its record
    replaced when `record` is set) or has `ended`."""

    kind: ClassVar[str] = "done"
    app: str
    version: int
    ended: bool
    record: WatchRecord | None


@dataclass(frozen=True)
class RedisMessage:
    """A message on the watches' channel (a new watch, a dyno webhook), as published."""

    kind: ClassVar[str] = "message"
    data: bytes


Message: TypeAlias = ProbeDone | DynosListed | DynoEvent | SentryChecked | LedgerDone | RedisMessage


@dataclass
class _Watch:
    record: WatchRecord
    state: WatchState
    next_round: float
    round_no: int = 0
    results: list[ProbeResult] = field(default_factory=list)
    expected: int = 0
    round_at: float = 0.0
    in_flight: bool = False  # probes of the current round not all back yet
    dynos_in_flight: bool = False
    next_dynos: float = 0.0
    sentry_in_flight: bool = False
    next_sentry: float = 0.0
    busy: bool = False  # a decision or verification is running on the ledger thread
    ended: bool = False

    @property
    def app(self) -> str:
        return self.record["app"]

    @property
    def version(self) -> int:
        return self.record["release_version"]

    @property
    def rolling_back(self) -> bool:
        return self.record.get("phase") == WatchPhase.ROLLING_BACK

    @property
    def urls(self) -> list[str]:
        return list(self.record.get("urls") or [])  # a Lua round-trip turns [] into {}


class Monitor:
    def __init__(self, settings: Settings, connection: redis.Redis, owner: str | None = None) -> None:
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.redis = connection
        self.registry = WatchRegistry(connection)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock_ttl = max(MIN_LOCK_TTL, LOCK_TTL_INTERVALS * self.policy.interval)
        self.sync_every = min(self.policy.interval, self.lock_ttl / 3)
        self.prober = Prober(ProbeSpec.from_settings(settings.health))
        self.pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="backout-probe")
        self.ledger_thread = ThreadPoolExecutor(1, thread_name_prefix="backout-health-ledger")
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.watches: dict[str, _Watch] = {}
        self._local = threading.local()
        self._sync_now = False
        self._next_due = 0.0
        self._next_listing = 0.0
        self.sentry_enabled = bool(settings.sentry_api_token)
        self._sentry_check: Any = None
        self._sentry_lock = threading.Lock()
        self._secrets = settings.secrets()
        self._samples: list[dict[str, Any]] = []
        self._next_flush = 0.0
        self._next_prune = 0.0

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set; then hand the watches back so another worker takes them at once."""
        subscriber = threading.Thread(target=self._subscribe, args=(stop,), name="backout-health-events", daemon=True)
        subscriber.start()
        next_sync = 0.0
        try:
            while not stop.is_set():
                now = time.time()
                if now >= next_sync or self._sync_now:
                    self._sync_now = False
                    try:
                        self._sync(now)
                    except redis.RedisError as exc:
                        log.warning("health monitor cannot reach Redis: %s", redact(str(exc), self.settings.secrets()))
                    next_sync = now + self.sync_every
                if now >= self._next_due:
                    # One pass over the watches when one is due, not at every wake-up: results
                    # arrive a hundred times a second when a thousand apps are watched.
                    self._next_due = float("inf")
                    for watch in list(self.watches.values()):
                        if watch.next_round <= now:
                            self._start_round(watch, now)
                        self._next_due = min(self._next_due, watch.next_round, self._list_dynos(watch, now))
                # Capped so that a stop is noticed within half a second however quiet it is.
                self._drain(max(0.0, min(next_sync, self._next_due, now + 0.5) - time.time()), stop)
                self._flush_samples(time.time())
        finally:
            stop.set()
            subscriber.join(2.0)
            self._shutdown()

    def _drain(self, timeout: float, stop: threading.Event) -> None:
        try:
            item = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001 - one bad item must not stop the watching of every app
                log.exception("health monitor could not handle %s", item.kind)
            if stop.is_set():
                return
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _shutdown(self) -> None:
        self._flush_samples(float("inf"))
        for watch in self.watches.values():
            try:
                self.registry.release(watch.app, self.owner)
            except redis.RedisError:
                pass  # the key expires by itself
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.ledger_thread.shutdown(wait=True)
        self.prober.close()

    # --- who watches what -------------------------------------------------------------------------

    def _sync(self, now: float) -> None:
        records = self.registry.all()
        held = set(self.watches)
        kept = self.registry.renew(held, self.owner, self.lock_ttl)
        for app in held - kept:
            log.warning("health monitor lost the watch of %s to another worker", app)
            del self.watches[app]
        for app in kept:
            watch = self.watches[app]
            current = records.get(app)
            if current is None:
                if not watch.busy:
                    self.registry.release(app, self.owner)
                    del self.watches[app]
            elif current["release_version"] != watch.version:
                if not watch.busy:
                    if not watch.ended:
                        self._in_ledger(self._record, watch.record, EventKind.WATCH_ENDED, _superseded(watch, current))
                    self.watches[app] = self._new_watch(current, now)
            elif current.get("phase") != watch.record.get("phase") and not watch.busy:
                watch.record = current
        unheld = [app for app in records if app not in self.watches]
        for app in self.registry.claim(unheld, self.owner, self.lock_ttl):
            self.watches[app] = self._new_watch(records[app], now)
            log.info("health monitor %s watches %s v%s", self.owner, app, records[app]["release_version"])

    def _new_watch(self, record: WatchRecord, now: float) -> _Watch:
        started = float(record["started_at"])
        # The first round at once: a watch taken over from a dead worker has lost time already.
        watch = _Watch(record=record, state=WatchState(started_at=started), next_round=now,
                       next_sentry=started + self.policy.grace)
        self._next_due = min(self._next_due, watch.next_round)
        return watch

    def _end(self, watch: _Watch) -> None:
        """The watch is over: nothing more to probe for this release."""
        watch.ended = True
        try:
            self.registry.remove(watch.app, watch.version)
            self.registry.release(watch.app, self.owner)
        except redis.RedisError as exc:
            log.warning("could not remove the watch of %s: %s", watch.app, type(exc).__name__)
        if self.watches.get(watch.app) is watch:
            del self.watches[watch.app]

    # --- rounds -----------------------------------------------------------------------------------

    def _start_round(self, watch: _Watch, now: float) -> None:
        watch.next_round += self.policy.interval
        if watch.next_round <= now:  # fell behind (the machine slept): skip, don't burst
            watch.next_round = now + self.policy.interval
        if watch.busy:
            return
        if watch.rolling_back:
            watch.busy = True
            self._in_ledger(self._check_rollback, watch)
            return
        if watch.in_flight:
            return  # the last round's probes are still out (timeouts longer than the interval)
        watch.round_no += 1
        urls = watch.urls
        if urls:
            watch.in_flight = True
            watch.results, watch.expected, watch.round_at = [], len(urls), now
            # The watch record holds the URLs with credentials masked; the settings have them.
            real = {mask_url(url): url for url in self.settings.health.urls}
            for url in urls:
                self.pool.submit(self._probe_task, watch.app, watch.version, watch.round_no, real.get(url, url))
        elif (step := due_verified(self.policy, watch.state, now, probes=False)) is not None:
            self._conclude(watch, step)
            return
        if self.sentry_enabled and not watch.sentry_in_flight and now >= watch.next_sentry:
            watch.sentry_in_flight = True
            watch.next_sentry = now + max(self.policy.interval, min(60.0, self.policy.window / 5))
            self.pool.submit(self._sentry_task, WatchRecord(**watch.record), now)

    def _list_dynos(self, watch: _Watch, now: float) -> float:
        """List the watch's dynos if due and the budget allows; returns when to look again."""
        if not self._heroku_enabled() or watch.ended or watch.busy or watch.rolling_back:
            return float("inf")
        if watch.dynos_in_flight:
            return watch.next_dynos
        if now >= watch.next_dynos and now >= self._next_listing:
            watch.dynos_in_flight = True
            self._next_listing = now + 1 / DYNO_LISTINGS_PER_SECOND
            watch.next_dynos = now + max(self.policy.interval / 2, len(self.watches) / DYNO_LISTINGS_PER_SECOND)
            self.pool.submit(self._dynos_task, watch.app, watch.version)
        return max(watch.next_dynos, self._next_listing)

    def _probe_task(self, app: str, version: int, round_no: int, url: str) -> None:
        self.inbox.put(ProbeDone(app, version, round_no, self.prober.probe(url)))

    def _dynos_task(self, app: str, version: int) -> None:
        try:
            dynos = self._heroku().dynos(app)
        except Exception as exc:  # noqa: BLE001 - reported through the inbox
            self.inbox.put(DynosListed(app, version, None, redact(str(exc), self.settings.secrets())))
            return
        self.inbox.put(DynosListed(app, version, dynos, None))

    def _sentry_task(self, record: WatchRecord, now: float) -> None:
        try:
            step = self._sentry().check_release(record, now)
        except Exception as exc:  # noqa: BLE001 - a Sentry outage is logged, never a verdict
            log.warning("Sentry check of %s v%s failed: %s", record["app"], record["release_version"],
                        redact(str(exc), self.settings.secrets()))
            step = None
        self.inbox.put(SentryChecked(record["app"], record["release_version"], step))

    # --- results ----------------------------------------------------------------------------------

    def _handle(self, item: Message) -> None:
        if isinstance(item, RedisMessage):
            self._on_message(item.data)
            return
        app = item.app
        watch = self.watches.get(app)
        if isinstance(item, LedgerDone):
            if watch is not None and watch.version == item.version:
                watch.busy = False
                if item.record is not None:
                    watch.record = item.record
                if item.ended:
                    self._end(watch)
            return
        if watch is None or watch.ended or watch.version != item.version:
            return  # a late answer about a watch that moved on
        if isinstance(item, ProbeDone):
            self._on_probe(watch, item.round_no, item.result)
        elif isinstance(item, DynosListed):
            watch.dynos_in_flight = False
            if item.problem:
                log.warning("could not list the dynos of %s: %s", app, item.problem)
            elif not watch.busy and not watch.rolling_back:
                self._on_crash(watch, observe_crash(watch.version, item.dynos or [], f"GET /apps/{app}/dynos"))
        elif isinstance(item, DynoEvent):
            if not watch.busy and not watch.rolling_back:
                self._on_crash(watch, observe_crash(watch.version, [item.dyno], "a dyno webhook"))
        elif isinstance(item, SentryChecked):
            watch.sentry_in_flight = False
            step = item.step
            if step is not None and not watch.busy and not watch.rolling_back:
                if step.kind == FAILED:
                    self._conclude(watch, step)
                else:
                    self._in_ledger(self._record, watch.record, step.kind, step.reason, None, step.detail)

    def _on_probe(self, watch: _Watch, round_no: int, result: ProbeResult) -> None:
        if round_no != watch.round_no:
            return
        watch.results.append(result)
        if len(watch.results) < watch.expected:
            return
        watch.in_flight = False
        if watch.busy or watch.rolling_back:
            return
        verdict = judge_round(watch.results, watch.version, watch.record.get("commit"))
        counted = verdict.verdict != STALE and watch.round_at >= grace_ends(self.policy, watch.state)
        self._samples += [{"app": watch.app, "release_version": watch.version, "url": redact(r.url, self._secrets),
                           "at": r.at or watch.round_at, "outcome": r.outcome, "status": r.status,
                           "elapsed": r.elapsed, "counted": counted} for r in watch.results]
        step = observe(self.policy, watch.state, verdict, watch.round_at)
        if step.kind in (FAILED, VERIFIED):
            self._conclude(watch, step)
        elif step.kind != PASSED:
            self._in_ledger(self._record, watch.record, step.kind, step.reason, verdict.verdict, step.detail)

    def _on_crash(self, watch: _Watch, step: Step | None) -> None:
        if step is not None:
            self._conclude(watch, step)

    def _conclude(self, watch: _Watch, step: Step) -> None:
        """Hand a verdict on the release to the ledger thread; the watch waits for it."""
        watch.busy = True
        if step.kind == VERIFIED:
            self._in_ledger(self._verify, watch, step)
        else:
            self._in_ledger(self._fail, watch, step, time.time())

    # --- on the ledger thread ---------------------------------------------------------------------

    def _in_ledger(self, fn: Callable[..., Any], *args: Any) -> None:
        self.ledger_thread.submit(self._run_in_ledger, fn, *args)

    def _run_in_ledger(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except (psycopg.Error, OSError, BackoutError) as exc:  # BackoutError: the ledger did not connect
            self._drop_ledger()
            log.error("health monitor could not write the ledger: %s", redact(str(exc), self.settings.secrets()))
            self._release_busy(args)
        except Exception:  # noqa: BLE001
            log.exception("health monitor step %s failed", getattr(fn, "__name__", fn))
            self._release_busy(args)

    def _release_busy(self, args: tuple[Any, ...]) -> None:
        # A verdict that could not be acted on is tried again at the next round.
        watch = args[0] if args and isinstance(args[0], _Watch) else None
        if watch is not None:
            self.inbox.put(LedgerDone(watch.app, watch.version, False, None))

    def _record(self, record: WatchRecord, kind: EventKind, reason: str, verdict: RoundVerdict | None = None,
                detail: dict[str, Any] | None = None) -> None:
        health_actions.record(self._ledger(), record, kind, reason, verdict, detail)

    def _flush_samples(self, now: float) -> None:
        if self._samples and now >= self._next_flush:
            batch, self._samples = self._samples, []
            self._next_flush = now + SAMPLE_FLUSH
            self._in_ledger(self._write_samples, batch)

    def _write_samples(self, batch: list[dict[str, Any]]) -> None:
        conn = self._ledger()
        ledger.record_probe_samples(conn, batch)
        if time.time() >= self._next_prune:  # only the ledger thread reads and sets it
            self._next_prune = time.time() + SAMPLE_PRUNE
            ledger.prune_probe_samples(conn)

    def _fail(self, watch: _Watch, step: Step, now: float) -> None:
        outcome, request_id = health_actions.on_failed(self.settings, self._ledger(), self._heroku_or_none(),
                                                       self.registry, watch.record, step, now)
        if outcome != "requested":
            self.inbox.put(LedgerDone(watch.app, watch.version, outcome == "ended", None))
            return
        rolling_back: WatchRecord = {**watch.record, "phase": WatchPhase.ROLLING_BACK, "request_id": request_id,
                                     "failed_at": now}
        self.inbox.put(LedgerDone(watch.app, watch.version, False, rolling_back))

    def _verify(self, watch: _Watch, step: Step) -> None:
        health_actions.on_verified(self.settings, self._ledger(), watch.record, step)
        self.inbox.put(LedgerDone(watch.app, watch.version, True, None))

    def _check_rollback(self, watch: _Watch) -> None:
        over = health_actions.follow_rollback(self.settings, self._ledger(), self.registry, watch.record, time.time(),
                                              ROLLBACK_GIVE_UP)
        self.inbox.put(LedgerDone(watch.app, watch.version, over, None))

    def _ledger(self) -> ledger.LedgerConnection:
        conn = getattr(self._local, "ledger", None)
        if conn is None or conn.closed:
            self.settings.require("BACKOUT_DATABASE_URL")
            conn = self._local.ledger = ledger.connect(self.settings.ledger_url or "")
        return conn

    def _drop_ledger(self) -> None:
        conn = getattr(self._local, "ledger", None)
        self._local.ledger = None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    # --- the Platform API and Redis messages ------------------------------------------------------

    def _heroku_enabled(self) -> bool:
        return bool(self.settings.heroku_api_key)

    def _sentry(self) -> Any:
        """The monitor's one SentryCheck, made on first use (it asks for the project's id once)."""
        with self._sentry_lock:
            if self._sentry_check is None:
                from backout.health.sentry_check import SentryCheck

                self._sentry_check = SentryCheck(self.settings)
            return self._sentry_check

    def _heroku(self) -> Any:
        # requests sessions are not shared between threads: one client per thread.
        client = getattr(self._local, "heroku", None)
        if client is None:
            from backout.heroku import HerokuClient

            client = self._local.heroku = HerokuClient.from_settings(self.settings)
        return client

    def _heroku_or_none(self) -> Any:
        return self._heroku() if self._heroku_enabled() else None

    def _subscribe(self, stop: threading.Event) -> None:
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        self.inbox.put(RedisMessage(message["data"]))
            except redis.RedisError as exc:
                log.warning("health monitor lost its Redis subscription: %s", type(exc).__name__)
                stop.wait(1.0)
            finally:
                pubsub.close()

    def _on_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if message.get("type") == "watch":
            self._sync_now = True
        elif message.get("type") == "dyno" and isinstance(message.get("app"), str):
            watch = self.watches.get(message["app"])
            if watch is not None:
                dyno = {"name": message.get("name"), "state": message.get("state"),
                        "release": {"version": message.get("release_version")}}
                self._handle(DynoEvent(message["app"], watch.version, dyno))


def run_monitor(settings: Settings, stop: threading.Event) -> None:
    """The monitor of `backout worker`: watch until `stop` is set. Runs the dyno webhook receiver
    too when BACKOUT_HEALTH_WEBHOOK_PORT is set."""
    settings.require("REDIS_URL", "BACKOUT_DATABASE_URL")
    assert settings.redis_url is not None
    connection = redis_conn.connect(settings.redis_url)
    receiver = None
    if settings.health.webhook_port is not None:
        from backout.health.dyno_webhook import serve

        receiver = serve(settings, connection, settings.health.webhook_port)
        log.info("receiving dyno webhooks on port %d", receiver.server_address[1])
    try:
        Monitor(settings, connection).run(stop)
    finally:
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()
        connection.close()


def _superseded(watch: _Watch, newer: WatchRecord) -> str:
    request = watch.record.get("request_id")
    if watch.rolling_back and request:
        # The rollback release's own release phase scheduled its watch before the job finished.
        return (f"superseded by the watch of v{newer['release_version']}; the auto-rollback (request {request}) "
                "goes on and its release is watched")
    return f"superseded by a watch of v{newer['release_version']}"


class MonitorThread:
    """`run_monitor` on a daemon thread, as `backout worker` runs it beside its RQ loop."""

    def __init__(self, settings: Settings) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(settings,), name="backout-health-monitor", daemon=True)
        self.thread.start()

    def _run(self, settings: Settings) -> None:
        try:
            run_monitor(settings, self.stop_event)
        except Exception:  # noqa: BLE001 - the worker goes on running rollbacks without its monitor
            log.exception("the health monitor stopped")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and hand the watches back, so another worker takes them over at once."""
        self.stop_event.set()
        self.thread.join(timeout)


def start_monitor(settings: Settings) -> MonitorThread:
    return MonitorThread(settings)
