"""Which releases are being watched, and which worker watches each app, kept in Redis.

Every worker runs a monitor; one watch per app runs at a time, in whichever monitor holds the
app's owner key (`SET NX` with a TTL the holder renews while it watches). A worker that dies stops
renewing, the key expires, and another monitor takes the watch over from the record here, so a
watch survives its worker. The ledger keeps the story (health events); this is only who does what.

Keys, all under `backout:health:`:
- `watches`: hash app -> JSON watch record (release_version, started_at, urls, phase ...)
- `owner:<app>`: the holding monitor's id, with a TTL
- `auto-rollback:<app>:<version>`: set once, when an auto-rollback of that release is requested
- `newest:<app>`: the newest release a watch was registered for, kept after the watch ends
- channel `events`: wakes monitors when a watch is registered or a dyno webhook arrives
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any, Iterable, Required, TypedDict, cast

import redis

from backout.defaults import DAY, WATCHED_RELEASE_TTL
from backout.redact import mask_url

PREFIX = "backout:health:"
WATCHES = PREFIX + "watches"
CHANNEL = PREFIX + "events"
AUTO_ROLLBACK_MARK_TTL = 90 * DAY

# Registers a record unless the app has, or had, a watch of the same or a newer release (a late
# job of an older release is ignored even when the newer watch has already ended).
_REGISTER = """
local newest = redis.call('GET', KEYS[2])
if newest and tonumber(newest) >= tonumber(ARGV[3]) then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local version = cjson.decode(current)['release_version']
  if version >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 1
"""
# Merges fields into the record, only while it is still the watch of that release.
_UPDATE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local record = cjson.decode(current)
if record['release_version'] ~= tonumber(ARGV[2]) then return 0 end
for key, value in pairs(cjson.decode(ARGV[3])) do record[key] = value end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
return 1
"""
_REMOVE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if cjson.decode(current)['release_version'] ~= tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class WatchPhase(StrEnum):
    WATCHING = "watching"
    ROLLING_BACK = "rolling_back"  # the release failed and its auto-rollback is being followed


class WatchRecord(TypedDict, total=False):
    """A watch record: what a monitor needs to watch a release, JSON-friendly (it is stored in Redis)."""

    app: Required[str]
    release_version: Required[int]
    started_at: Required[float]  # epoch seconds
    urls: Required[list[str]]  # credentials masked
    phase: Required[str]  # a WatchPhase
    registered_at: float
    # The release's commit and the one it replaced ({"version", "commit", "started_at"}), for
    # release-match and the Sentry check (see health.actions.release_commits).
    commit: str | None
    previous: dict[str, Any] | None
    rollback_of: int | None  # set when the watched release is itself a rollback
    # Set when the phase turns to rolling_back.
    request_id: str | None
    failed_at: float
    owner: str | None  # who holds the watch, as `backout health` shows it


def new_record(app: str, release_version: int, started_at: float, urls: Iterable[str], **extra: Any) -> WatchRecord:
    """A watch record of `app`'s `release_version`, with `extra` fields of WatchRecord."""
    return cast(WatchRecord, {
        "app": app, "release_version": int(release_version), "started_at": float(started_at),
        # Redis holds no credentials: the monitors find each URL's own in their settings.
        "urls": [mask_url(url) for url in urls], "phase": WatchPhase.WATCHING, "registered_at": time.time(), **extra})


class WatchRegistry:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self._register = connection.register_script(_REGISTER)
        self._update = connection.register_script(_UPDATE)
        self._remove = connection.register_script(_REMOVE)
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)

    def register(self, record: WatchRecord) -> bool:
        """Store the watch; False when the app has, or had, one of this or a newer release."""
        added = self._register(keys=[WATCHES, _newest_key(record["app"])],
                               args=[record["app"], json.dumps(record), record["release_version"], WATCHED_RELEASE_TTL])
        if added:
            self.wake({"type": "watch", "app": record["app"]})
        return bool(added)

    def get(self, app: str) -> WatchRecord | None:
        raw = self.redis.hget(WATCHES, app)
        return cast(WatchRecord, json.loads(raw)) if raw else None

    def all(self) -> dict[str, WatchRecord]:
        return {_text(k): cast(WatchRecord, json.loads(v)) for k, v in self.redis.hgetall(WATCHES).items()}

    def update(self, app: str, release_version: int, **fields: Any) -> bool:
        return bool(self._update(keys=[WATCHES], args=[app, release_version, json.dumps(fields)]))

    def remove(self, app: str, release_version: int) -> bool:
        return bool(self._remove(keys=[WATCHES], args=[app, release_version]))

    # --- owners -----------------------------------------------------------------------------------

    def claim(self, apps: Iterable[str], owner: str, ttl: float) -> set[str]:
        """The apps among `apps` whose watch this owner now holds (taken when nobody held it)."""
        apps = list(apps)
        if not apps:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for app in apps:
            pipe.set(_owner_key(app), owner, nx=True, px=int(ttl * 1000))
        return {app for app, ok in zip(apps, pipe.execute()) if ok}

    def renew(self, apps: Iterable[str], owner: str, ttl: float) -> set[str]:
        """The apps among `apps` this owner still holds, their TTL renewed."""
        apps = list(apps)
        if not apps:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for app in apps:
            self._renew(keys=[_owner_key(app)], args=[owner, int(ttl * 1000)], client=pipe)
        return {app for app, ok in zip(apps, pipe.execute()) if ok}

    def release(self, app: str, owner: str) -> None:
        self._release(keys=[_owner_key(app)], args=[owner])

    def owner(self, app: str) -> str | None:
        raw = self.redis.get(_owner_key(app))
        return _text(raw) if raw else None

    # --- the once-per-release mark and wake-ups ---------------------------------------------------

    def mark_auto_rollback(self, app: str, release_version: int, request_hint: str) -> bool:
        """True for the first caller only: the Redis half of "at most one auto-rollback per release"."""
        return bool(self.redis.set(f"{PREFIX}auto-rollback:{app}:{release_version}", request_hint,
                                   nx=True, ex=AUTO_ROLLBACK_MARK_TTL))

    def unmark_auto_rollback(self, app: str, release_version: int) -> None:
        """Undo the mark when the request could not be made, so that the next attempt may."""
        self.redis.delete(f"{PREFIX}auto-rollback:{app}:{release_version}")

    def wake(self, message: dict[str, Any]) -> None:
        self.redis.publish(CHANNEL, json.dumps(message))


def _newest_key(app: str) -> str:
    return f"{PREFIX}newest:{app}"


def _owner_key(app: str) -> str:
    return f"{PREFIX}owner:{app}"


def _text(raw: bytes | str) -> str:
    # The monitors' connections return bytes (redis_conn.connect sets no decode_responses).
    return raw.decode() if isinstance(raw, bytes) else raw
