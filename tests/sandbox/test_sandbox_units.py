"""The sandbox's parts that need no server: rate limit, Range paging, faults, backoff, signed URLs,
dyno environments, and keeping passwords out of child processes' command lines."""

from __future__ import annotations

import time

import pytest

from backout_sandbox.databases import is_pitr_plan, libpq
from backout_sandbox.dynos import Backoff
from backout_sandbox.faults import Faults
from backout_sandbox.processes import dyno_env, exit_status
from backout_sandbox.ratelimit import RateLimiter
from backout_sandbox.routing import ApiError, paginate, parse_range
from backout_sandbox.signed_urls import Signer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_is_a_budget_per_token_refilled_gradually() -> None:
    clock = Clock()
    limiter = RateLimiter(limit=4500, window=3600, clock=clock)
    assert limiter.remaining("a") == 4500
    for expected in (4499, 4498):
        assert limiter.spend("a") == (True, expected)
    assert limiter.remaining("b") == 4500  # another token has its own budget
    for _ in range(4498):
        limiter.spend("a")
    assert limiter.spend("a") == (False, 0)
    clock.now += 0.81  # 4500 an hour is 1.25 a second: one request back after 0.8 s
    assert limiter.spend("a") == (True, 0)
    assert limiter.spend("a") == (False, 0)
    clock.now += 10 * 3600
    assert limiter.remaining("a") == 4500  # never more than the limit
    with pytest.raises(ValueError):
        RateLimiter(limit=0)


def test_range_headers_are_parsed_like_herokus() -> None:
    wanted = parse_range("version ..; order=desc, max=10", ("version", "id"))
    assert (wanted.field, wanted.start, wanted.order, wanted.max) == ("version", None, "desc", 10)
    nxt = parse_range("version ]42..; max=5, order=desc", ("version", "id"))
    assert (nxt.start, nxt.exclusive, nxt.max, nxt.order) == ("42", True, 5, "desc")
    assert parse_range(None, ("version",)).max == 200
    assert parse_range("version ..; max=5000", ("version",)).max == 1000
    for bad in ("version", "name ..", "version ..; max=0", "version ..; order=sideways", "version ..; limit=3"):
        with pytest.raises(ApiError) as refused:
            parse_range(bad, ("version", "id"))
        assert refused.value.status == 400


def test_paging_walks_every_item_exactly_once() -> None:
    items = [{"version": v, "id": f"id{v:03d}"} for v in range(1, 26)]
    header, seen = "version ..; order=desc, max=7", []
    while True:
        page = paginate(items, header, ("version", "id"))
        seen += [i["version"] for i in page.body]
        if page.status == 200:
            break
        header = page.headers["Next-Range"]
    assert seen == list(range(25, 0, -1))
    by_id = paginate(items, "id id010..id012", ("version", "id"))
    assert [i["version"] for i in by_id.body] == [10, 11, 12] and by_id.status == 200
    assert paginate([], None, ("version",)).body == []


def test_faults_match_count_down_and_report_hits() -> None:
    faults = Faults()
    first = faults.script(503, times=2, method="GET", path=r"^/apps/x$", retry_after=1)
    faults.slow(0.5, path="/releases")
    assert faults.take("POST", "/apps/x") is None
    assert faults.take("GET", "/apps/x").status == 503
    rule = faults.take("GET", "/apps/x")
    assert rule.error().headers == {"Retry-After": "1"} and rule.error().id == "service_unavailable"
    assert faults.take("GET", "/apps/x") is None
    assert faults.hits(first) == 2
    slow = faults.take("GET", "/apps/x/releases")
    assert (slow.status, slow.delay) == (None, 0.5)
    faults.fail_release("myapp", times=2)
    assert [faults.take_release_failure("other-id", "myapp") for _ in range(3)] == [True, True, False]
    assert faults.apply_json({"status": 429, "times": 3})["id"] > first
    for bad in ({"status": 200}, {"bogus": 1}, {"times": 2}, {"fail_release": "x"}, {"status": 503, "times": 0}):
        with pytest.raises(ValueError):
            faults.apply_json(bad)
    faults.clear()
    assert faults.rules() == [] and not faults.take_release_failure("myapp")


def test_crashed_dynos_restart_at_once_then_with_growing_capped_delays() -> None:
    backoff = Backoff(base=1.0, cap=20.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


def test_signed_urls_expire_and_cannot_be_altered() -> None:
    signer = Signer("k" * 64, "http://127.0.0.1:5010/")
    url, expires = signer.url("/sandbox/backups/x.dump", ttl=60)
    assert url.startswith("http://127.0.0.1:5010/sandbox/backups/x.dump?") and expires.endswith("Z")
    query = {k: [v] for k, v in (part.split("=") for part in url.split("?")[1].split("&"))}
    assert signer.valid("/sandbox/backups/x.dump", query)
    assert not signer.valid("/sandbox/backups/y.dump", query)
    assert not signer.valid("/sandbox/backups/x.dump", {**query, "expires": [str(int(time.time()) + 9999)]})
    assert not Signer("other" * 10, "http://x").valid("/sandbox/backups/x.dump", query)
    old, _ = signer.url("/p", ttl=-1)
    assert not signer.valid("/p", {k: [v] for k, v in (part.split("=") for part in old.split("?")[1].split("&"))})


def test_database_passwords_travel_in_pgpassword_never_in_the_url_given_to_a_tool() -> None:
    url, env = libpq("postgres://u%40x:p%2Fss%40word@db.local:6543/app?sslmode=require")
    assert url == "postgres://u%40x@db.local:6543/app?sslmode=require"
    assert env == {"PGPASSWORD": "p/ss@word"}
    assert libpq("postgresql://postgres@127.0.0.1:5432/postgres") == ("postgresql://postgres@127.0.0.1:5432/postgres", {})


def test_a_dyno_sees_its_config_and_metadata_not_the_sandboxs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEROKU_API_KEY", "the-sandbox-owners-token")
    monkeypatch.setenv("DATABASE_URL", "postgres://owner:secret@elsewhere/db")
    env = dyno_env({"FOO": "bar", "PATH": "/app/bin"}, {"DYNO": "web.1", "PORT": "5000"})
    assert env["FOO"] == "bar" and env["DYNO"] == "web.1" and env["PORT"] == "5000"
    assert "HEROKU_API_KEY" not in env and "DATABASE_URL" not in env
    assert env["PATH"] == "/app/bin"  # the app's config wins, as on Heroku
    assert dyno_env({}, {})["PATH"].split(":")[0].endswith("bin")


def test_exit_statuses_are_reported_as_a_shell_does() -> None:
    assert (exit_status(0), exit_status(3), exit_status(-15), exit_status(-9)) == (0, 3, 143, 137)


def test_pitr_plans_are_the_standard_premium_private_and_shield_tiers() -> None:
    assert [is_pitr_plan(p) for p in ("standard-0", "premium-4", "private-2", "shield-9")] == [True] * 4
    assert [is_pitr_plan(p) for p in ("essential-0", "mini", "basic", "hobby-dev")] == [False] * 4
