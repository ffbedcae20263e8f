"""backout's defaults, each written once with the reason for its value.

The health numbers are what `backout.settings` uses when a BACKOUT_HEALTH_* variable is not set
(the README's table of variables shows the same values); the queue names, TTLs and timeouts are
fixed. A module that needs one of these reads it from here, never writes the number again.
"""

from __future__ import annotations

HOUR = 3600
DAY = 24 * HOUR

# --- the post-deploy health watch (BACKOUT_HEALTH_*) -------------------------------------------

# A redirect is an answer from a running app (a login page, a trailing slash); 4xx and 5xx are not.
HEALTH_EXPECT: tuple[tuple[int, int], ...] = ((200, 399),)
# Heroku's router gives a request 30 s; a health URL slower than 5 s is failing for its users.
HEALTH_TIMEOUT = 5.0
# Often enough that THRESHOLD failed probes in a row fail a release within half a minute.
HEALTH_INTERVAL = 10.0
# One failed probe is a blip (a dyno restarting, a slow query); three in a row are the release.
HEALTH_THRESHOLD = 3
# A probe without an answer (a network hiccup between the worker and the app) is weaker evidence
# than a wrong answer, so it takes this many times the failure threshold to fail a release.
HEALTH_ERRORS_PER_FAILURE = 2
HEALTH_ERROR_THRESHOLD = HEALTH_ERRORS_PER_FAILURE * HEALTH_THRESHOLD
# Heroku waits up to 60 s for a web dyno to bind its port; probes before that are not counted.
HEALTH_GRACE = 60.0
# Ten minutes of passing probes after the grace period: long enough for the first real traffic
# and the first scheduled jobs to run against the release before it is trusted as a target.
HEALTH_WINDOW = 600.0
# At most one auto-rollback per half hour per app: a second failure that soon needs a person.
HEALTH_COOLDOWN = 1800.0
# Sentry: a release is failing when it reports at least twice the previous release's errors.
HEALTH_SENTRY_RATIO = 2.0

# --- queues ------------------------------------------------------------------------------------

# Each ledger has its own pair (`<name>@<ledger id>`); the worker listens to them in this order,
# so a rollback never waits behind routine jobs (health watches, drills, re-checks).
ROLLBACK_QUEUE = "backout-rollback"
ROUTINE_QUEUE = "backout-routine"

# --- TTLs and timeouts -------------------------------------------------------------------------

# RQ keeps a finished job's result for a week: `backout status` and a person looking into a
# failed deploy can still read it after a weekend.
JOB_RESULT_TTL = 7 * DAY
# How long the newest release an app's health watch was registered for is remembered: a watch job
# of an older (or the same) release that arrives later, up to a week late with its queue, is
# ignored even after the newer watch has ended.
WATCHED_RELEASE_TTL = 7 * DAY
# Heroku stops a release phase after an hour, so waiting longer for one is waiting for nothing.
RELEASE_PHASE_LIMIT = HOUR
# A rollback job may wait out a whole release phase (the rollback release's own) and still have
# time for its database step: it outlives the release phase it waits for.
ROLLBACK_JOB_TIMEOUT = 2 * RELEASE_PHASE_LIMIT
