"""The Heroku client and its retry policy, against real HTTP servers on loopback (tests/stub_http.py)."""

from __future__ import annotations

import logging
import random
import re
import socket
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Callable, Iterator

import pytest

from backout import __version__, settings
from backout.errors import BackoutError, BadInput, ConfigError, HerokuAPIError
from backout.heroku import (
    ACCEPT,
    ACCEPT_SDK,
    HerokuClient,
    HerokuUnreachable,
    TransferFailed,
    WaitTimeout,
    release_ref,
    sandbox_hint,
    transfer_name,
    transfer_ref,
)
from backout.http_retry import RetryPolicy, retry_after_seconds
from tests.stub_http import Reply, Request, StubServer, in_order

pytestmark = pytest.mark.integration

TOKEN = "hrku-0123456789abcdefSECRETTOKEN"


class Clock:
    """Time that passes only when the code under test sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def serve() -> Iterator[Callable[..., StubServer]]:
    servers: list[StubServer] = []

    def start(handler: Callable[[Request], Reply]) -> StubServer:
        servers.append(StubServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
        assert not server.errors, server.errors[0]


def client(server: StubServer, clock: Clock, data: StubServer | None = None, **policy: float) -> HerokuClient:
    """A client of the stub whose backoff always takes its ceiling (random() == 1.0)."""
    return HerokuClient(
        TOKEN, server.url, (data or server).url, timeout=5,
        policy=RetryPolicy(**policy), sleep=clock.sleep, random=lambda: 1.0, clock=clock.monotonic,
    )


def release(version: int, **fields: object) -> dict:
    return {"id": str(uuid.UUID(int=version)), "version": version, "description": f"Deploy {version}",
            "status": "succeeded", "current": False, **fields}


def calls(server: StubServer, method: str | None = None) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.requests if method in (None, r.method)]


# --- headers -------------------------------------------------------------------------------------


def test_headers_and_the_two_bases(serve, clock):
    api = serve(lambda req: Reply(200, release(3) if "releases" in req.path else {"name": "shop"}))
    data = serve(lambda req: Reply(200, []))
    heroku = client(api, clock, data)

    assert heroku.app_info("shop") == {"name": "shop"}
    assert heroku.release_info("shop", "v3")["version"] == 3
    assert heroku.transfers("shop") == []

    app_call, release_call = api.requests
    assert app_call.headers["Accept"] == ACCEPT == "application/vnd.heroku+json; version=3"
    assert app_call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert app_call.headers["User-Agent"] == f"backout/{__version__}"
    assert (release_call.path, release_call.headers["Accept"]) == ("/apps/shop/releases/3", ACCEPT_SDK)
    assert calls(data) == ["GET /client/v11/apps/shop/transfers"]
    assert data.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_slug_upload_sends_no_credentials_and_resends_the_whole_file(serve, clock, tmp_path):
    blob = serve(in_order([Reply(503), Reply(200)]))
    tarball = tmp_path / "slug.tgz"
    tarball.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 100)

    client(blob, clock).upload_slug(f"{blob.url}/slugs/abc?Signature=s3cr3t", tarball)

    assert [r.body for r in blob.requests] == [tarball.read_bytes()] * 2
    for request in blob.requests:
        assert (request.method, request.path, request.query) == ("PUT", "/slugs/abc", {"Signature": ["s3cr3t"]})
        assert "Authorization" not in request.headers
        assert request.headers["Content-Type"] == ""


def test_a_failed_slug_upload_keeps_the_signed_query_out_of_the_error(serve, clock):
    blob = serve(lambda req: Reply(403, "<Error><Code>AccessDenied</Code></Error>"))
    with pytest.raises(HerokuAPIError) as caught:
        client(blob, clock).upload_slug(f"{blob.url}/slugs/abc?Signature=s3cr3t", b"tarball")
    assert caught.value.status == 403 and "AccessDenied" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


# --- Range pagination ----------------------------------------------------------------------------


def releases_app(count: int) -> Callable[[Request], Reply]:
    """A releases endpoint that pages the way Heroku does: 206 and Next-Range while more remain."""
    releases = [release(v, current=(v == count)) for v in range(1, count + 1)]

    def handle(req: Request) -> Reply:
        m = re.fullmatch(r"version (\]?)(\d*)\.\.; order=(asc|desc), max=(\d+)", req.headers["Range"])
        assert m, req.headers["Range"]
        after, order, size = m[2], m[3], int(m[4])
        items = sorted(releases, key=lambda r: r["version"], reverse=order == "desc")
        if after:
            items = [r for r in items if (r["version"] < int(after)) == (order == "desc") and r["version"] != int(after)]
        page, rest = items[:size], items[size:]
        if rest:
            return Reply(206, page, {"Next-Range": f"version ]{page[-1]['version']}..; order={order}, max={size}"})
        return Reply(200, page)

    return handle


def test_list_releases_follows_range_pagination_over_250_releases(serve, clock):
    api = serve(releases_app(250))
    releases = client(api, clock).list_releases("shop", page_size=100)

    assert [r["version"] for r in releases] == list(range(250, 0, -1))
    assert [r.headers["Range"] for r in api.requests] == [
        "version ..; order=desc, max=100",
        "version ]151..; order=desc, max=100",
        "version ]51..; order=desc, max=100",
    ]
    assert all(r.headers["Accept"] == ACCEPT_SDK for r in api.requests)


def test_list_releases_oldest_first_and_a_single_page(serve, clock):
    api = serve(releases_app(7))
    heroku = client(api, clock)
    assert [r["version"] for r in heroku.list_releases("shop", newest_first=False)] == list(range(1, 8))
    assert api.requests[0].headers["Range"] == "version ..; order=asc, max=200"
    assert len(api.requests) == 1
    with pytest.raises(BadInput, match="page_size"):
        heroku.list_releases("shop", page_size=5000)


def test_current_release_skips_a_newer_failed_release(serve, clock):
    api = serve(lambda req: Reply(200, [release(9, status="failed"), release(8, current=True), release(7)]))
    assert client(api, clock).current_release("shop")["version"] == 8
    assert api.requests[0].headers["Range"] == "version ..; order=desc, max=20"


# --- retries -------------------------------------------------------------------------------------


def test_a_burst_of_503s_is_retried_with_capped_exponential_backoff(serve, clock):
    api = serve(in_order([Reply(503)] * 5 + [Reply(200, {"name": "shop"})]))
    heroku = client(api, clock, max_attempts=6, base_delay=0.5, max_delay=3.0)
    assert heroku.app_info("shop") == {"name": "shop"}
    assert len(api.requests) == 6
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_is_full_jitter(serve, clock):
    api = serve(in_order([Reply(502)] * 4 + [Reply(200, {})]))
    heroku = HerokuClient(TOKEN, api.url, api.url, policy=RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=4.0),
                          sleep=clock.sleep, random=random.Random(42).random)
    heroku.app_info("shop")
    same = random.Random(42)
    assert clock.sleeps == [same.random() * ceiling for ceiling in (1.0, 2.0, 4.0, 4.0)]
    assert all(0 <= s < c for s, c in zip(clock.sleeps, (1.0, 2.0, 4.0, 4.0)))


def test_retry_after_is_honoured_on_429_and_503(serve, clock):
    api = serve(in_order([
        Reply(429, {"id": "rate_limit", "message": "Your account reached the API rate limit"}, {"Retry-After": "7"}),
        Reply(503, None, {"Retry-After": "0"}),
        Reply(429),
        Reply(200, []),
    ]))
    client(api, clock, max_attempts=5, base_delay=0.5).list_releases("shop")
    assert len(api.requests) == 4
    assert clock.sleeps == [7.0, 0.0, 2.0]
    assert len({r.headers["Range"] for r in api.requests}) == 1


def test_retry_after_as_an_http_date():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now=lambda: now) == 90.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now=lambda: now) == 0.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_retry_after_beyond_the_limit_is_not_waited_for(serve, clock):
    api = serve(lambda req: Reply(429, {"id": "rate_limit", "message": "slow down"}, {"Retry-After": "3600"}))
    with pytest.raises(HerokuAPIError) as caught:
        client(api, clock).app_info("shop")
    assert (caught.value.status, caught.value.id, len(api.requests), clock.sleeps) == (429, "rate_limit", 1, [])


def test_retries_stop_at_max_attempts_with_herokus_error(serve, clock):
    api = serve(lambda req: Reply(503, {"id": "unavailable", "message": "Heroku is temporarily unavailable"}))
    with pytest.raises(HerokuAPIError) as caught:
        client(api, clock, max_attempts=4).config_vars("shop")
    assert len(api.requests) == 4 and len(clock.sleeps) == 3
    err = caught.value
    assert (err.status, err.id, err.message, err.method, err.path) == (
        503, "unavailable", "Heroku is temporarily unavailable", "GET", "/apps/shop/config-vars")


def test_a_post_is_not_retried_blindly_after_a_5xx_or_a_lost_connection(serve, clock):
    api = serve(in_order([Reply(503), Reply(201, release(5))]))
    with pytest.raises(HerokuAPIError) as caught:
        client(api, clock).create_release("shop", "slug-1", "Deploy abc")
    assert caught.value.status == 503 and calls(api) == ["POST /apps/shop/releases"]

    cut = serve(in_order([Reply(disconnect=True), Reply(201, release(5))]))
    with pytest.raises(HerokuUnreachable, match="no answer"):
        client(cut, clock).create_addon("shop", "heroku-postgresql:essential-0")
    assert len(cut.requests) == 1 and clock.sleeps == []


def test_a_post_is_retried_after_429_and_when_it_says_so(serve, clock):
    api = serve(in_order([Reply(429), Reply(201, release(5))]))
    assert client(api, clock).create_release("shop", "slug-1")["version"] == 5
    assert len(api.requests) == 2

    slugs = serve(in_order([Reply(500), Reply(disconnect=True), Reply(201, {"id": "slug-1"})]))
    assert client(slugs, clock).create_slug("shop", {"web": "python app.py"}, commit="abc")["id"] == "slug-1"
    assert len(slugs.requests) == 3
    assert slugs.requests[0].json() == {"process_types": {"web": "python app.py"}, "commit": "abc"}


def test_a_get_is_retried_after_a_lost_connection(serve, clock):
    api = serve(in_order([Reply(disconnect=True), Reply(200, {"remaining": 4499})]))
    assert client(api, clock).rate_limits() == {"remaining": 4499}
    assert calls(api) == ["GET /account/rate-limits"] * 2


def test_a_refused_connection_is_retried_even_for_a_post(clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    heroku = HerokuClient(TOKEN, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}",
                          policy=RetryPolicy(max_attempts=3), sleep=clock.sleep, random=lambda: 1.0)
    with pytest.raises(HerokuUnreachable) as caught:
        heroku.create_release("shop", "slug-1")
    assert len(clock.sleeps) == 2
    assert caught.value.status == 0 and "Connection refused" in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value) and "object at 0x" not in str(caught.value)


def test_an_unreachable_api_names_the_sandbox_when_one_left_its_state_here(clock, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    heroku = HerokuClient(TOKEN, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}",
                          policy=RetryPolicy(max_attempts=1), sleep=clock.sleep)
    with pytest.raises(HerokuUnreachable) as caught:
        heroku.app_info("shop")
    assert "sandbox" not in str(caught.value)  # no sandbox state here: nothing to suggest
    (tmp_path / ".backout").mkdir()
    (tmp_path / ".backout" / "sandbox.json").write_text("{}")
    with pytest.raises(HerokuUnreachable) as caught:
        heroku.app_info("shop")
    assert "start it with `backout sandbox`" in str(caught.value)
    assert "BACKOUT_HEROKU_API_URL and BACKOUT_HEROKU_DATA_URL" in str(caught.value)
    # Pointed at Heroku itself (the default), the hint says how to point at the sandbox instead.
    hint = sandbox_hint(settings.HEROKU_API_URL)
    assert "export the BACKOUT_HEROKU_API_URL and BACKOUT_HEROKU_DATA_URL it prints" in hint
    assert ".backout/sandbox.json" in hint


# --- rollback ------------------------------------------------------------------------------------


class ReleasesWithRollback:
    """An app whose rollback POST can be scripted to fail before or after it made the release."""

    def __init__(self, versions: int, posts: list[str], existing: dict[int, str] | None = None) -> None:
        self.releases = [release(v, description=(existing or {}).get(v, f"Deploy {v}")) for v in range(1, versions + 1)]
        # each: "ok", "fail" (503, nothing done), "done-then-fail" / "done-then-disconnect" (made it, no answer)
        self.posts = posts

    def __call__(self, req: Request) -> Reply:
        newest_first = sorted(self.releases, key=lambda r: -r["version"])
        if req.method == "GET" and req.path == "/apps/shop/releases":
            size = int(req.headers["Range"].rsplit("max=", 1)[1])
            return Reply(206 if size < len(newest_first) else 200, newest_first[:size])
        if req.method == "GET":
            version = int(req.path.rsplit("/", 1)[1])
            return Reply(200, next(r for r in self.releases if r["version"] == version))
        outcome = self.posts.pop(0)
        if outcome == "fail":
            return Reply(503, {"id": "unavailable", "message": "try again"})
        target = next(r for r in self.releases if r["id"] == req.json()["release"])
        made = release(len(self.releases) + 1, description=f"Rollback to v{target['version']}", current=True)
        self.releases.append(made)
        if outcome == "done-then-disconnect":
            return Reply(disconnect=True)
        return Reply(201, made) if outcome == "ok" else Reply(503, {"id": "unavailable", "message": "lost"})


@pytest.mark.parametrize("lost", ["done-then-fail", "done-then-disconnect"])
def test_rollback_that_worked_but_lost_its_answer_is_not_done_twice(serve, clock, lost):
    app = ReleasesWithRollback(5, [lost, "ok"])
    api = serve(app)
    made = client(api, clock).rollback("shop", "v3")
    assert (made["version"], made["description"]) == (6, "Rollback to v3")
    assert len(app.releases) == 6
    assert calls(api, "POST") == ["POST /apps/shop/releases"]
    assert api.requests[2].json() == {"release": str(uuid.UUID(int=3))}


def test_rollback_that_failed_is_retried_once_checked(serve, clock):
    app = ReleasesWithRollback(5, ["fail", "ok"], existing={4: "Rollback to v3"})
    api = serve(app)
    made = client(api, clock).rollback("shop", 3)
    # v4 was an older rollback to v3; only a release newer than v5 counts as this one.
    assert made["version"] == 6
    assert len(calls(api, "POST")) == 2 and len(clock.sleeps) == 1


def test_rollback_gives_up_when_it_cannot_tell_whether_it_happened(serve, clock):
    state = {"posted": False}

    def handle(req: Request) -> Reply:
        if req.method == "POST":
            state["posted"] = True
            return Reply(503)
        if state["posted"]:
            return Reply(500, "boom")
        return Reply(200, release(3) if req.path.endswith("/3") else [release(5)])

    api = serve(handle)
    with pytest.raises(BackoutError, match="check the releases before trying again"):
        client(api, clock, max_attempts=2).rollback("shop", "v3")
    assert len(calls(api, "POST")) == 1


# --- errors --------------------------------------------------------------------------------------


def test_error_mapping(serve, clock):
    def handle(req: Request) -> Reply:
        if req.path == "/apps/nope":
            return Reply(404, {"id": "not_found", "message": "Couldn't find that app.", "resource": "app"})
        if req.path == "/apps/shop/releases/99":
            return Reply(404, {"id": "not_found", "message": "Couldn't find that release.", "resource": "release"})
        if req.path == "/apps/ghost/config-vars":
            return Reply(404, {"id": "not_found", "message": "Couldn't find that app."})
        if req.path == "/apps/shop/formation":
            return Reply(502, "<html><body><h1>502 Bad Gateway</h1>\n nginx</body></html>")
        if req.path == "/apps/shop/dynos":
            return Reply(500)
        return Reply(422, {"id": "invalid_params", "message": "Name is already taken"})

    heroku = client(serve(handle), clock, max_attempts=1)
    cases = [
        (lambda: heroku.app_info("nope"),
         (404, "not_found", "app 'nope' not found (check the name, or that your token can see it)")),
        (lambda: heroku.release_info("shop", 99), (404, "not_found", "Couldn't find that release. (app 'shop')")),
        (lambda: heroku.config_vars("ghost"),
         (404, "not_found", "app 'ghost' not found (check the name, or that your token can see it)")),
        (lambda: heroku.formation("shop"), (502, "bad_gateway", "502 Bad Gateway nginx")),
        (lambda: heroku.dynos("shop"), (500, "internal_server_error", "Internal Server Error")),
        (lambda: heroku.create_app("taken"), (422, "invalid_params", "Name is already taken")),
    ]
    for call, expected in cases:
        with pytest.raises(HerokuAPIError) as caught:
            call()
        assert (caught.value.status, caught.value.id, caught.value.message) == expected
    assert str(caught.value) == "Heroku API 422 invalid_params: Name is already taken (POST /apps)"


def test_bad_release_and_transfer_references_are_bad_input():
    assert [release_ref(x) for x in (12, "12", "v12", "V12")] == ["12"] * 4
    some_id = str(uuid.uuid4())
    assert release_ref(some_id.upper()) == some_id
    for bad in ("v0", "latest", "", True, "12a", -3):
        with pytest.raises(BadInput, match="neither a version"):
            release_ref(bad)
    assert [transfer_ref(x) for x in (12, "12", "b012", "r003")] == ["12", "12", "12", "3"]
    with pytest.raises(BadInput):
        transfer_ref("x12")


# --- secrets -------------------------------------------------------------------------------------


def test_the_token_never_shows(serve, clock, caplog):
    def handle(req: Request) -> Reply:
        if req.path == "/account/rate-limits":
            return Reply(503, {"id": "unavailable", "message": "busy"})
        # A server that quotes the credentials back must not get them into our messages.
        return Reply(401, {"id": "unauthorized", "message": f"Invalid credentials: {req.headers['Authorization']}"})

    heroku = client(serve(handle), clock, max_attempts=2)
    with pytest.raises(HerokuAPIError) as caught, caplog.at_level(logging.DEBUG):
        heroku.app_info("shop")
    err = caught.value
    assert err.status == 401 and err.id == "unauthorized"
    assert "refused the API token" in str(err) and "HEROKU_API_KEY" in str(err)

    with caplog.at_level(logging.DEBUG), pytest.raises(HerokuAPIError):
        heroku.rate_limits()
    assert caplog.records, "the retry was logged"
    for text in (str(err), repr(err), repr(heroku), repr(heroku.http), repr(heroku.http._auth), caplog.text):
        assert TOKEN not in text

    with pytest.raises(BadInput) as bad:
        HerokuClient("hrku-abc\nX-Evil: 1")
    assert "hrku-abc" not in str(bad.value)


def test_from_settings(serve, clock):
    with pytest.raises(ConfigError, match="HEROKU_API_KEY is not set"):
        HerokuClient.from_settings(settings.load({}))
    api = serve(lambda req: Reply(200, {"remaining": 10}))
    heroku = HerokuClient.from_settings(settings.load({
        "HEROKU_API_KEY": TOKEN, "BACKOUT_HEROKU_API_URL": api.url, "BACKOUT_HEROKU_DATA_URL": api.url + "/"}))
    assert heroku.rate_limits() == {"remaining": 10}
    assert (heroku.api_url, heroku.data_url) == (api.url, api.url)


# --- polling -------------------------------------------------------------------------------------


def test_wait_release_polls_until_not_pending(serve, clock):
    api = serve(in_order([Reply(200, release(8, status="pending"))] * 3 + [Reply(200, release(8, status="failed"))]))
    seen: list[str] = []
    done = client(api, clock).wait_release("shop", 8, poll=0.25, progress=seen.append)
    assert done["status"] == "failed"
    assert clock.sleeps == [0.25] * 3 and len(seen) == 3 and "v8: its release phase is still running" in seen[0]

    stuck = serve(lambda req: Reply(200, release(9, status="pending")))
    with pytest.raises(WaitTimeout, match="v9 of shop still pending after 10s"):
        client(stuck, clock).wait_release("shop", 9, timeout=10, poll=1.0)


def transfer(num: int, **fields: object) -> dict:
    return {"uuid": str(uuid.UUID(int=num)), "num": num, "from_name": "DATABASE", "from_type": "pg_dump",
            "to_name": "BACKUP", "to_type": "gof3r", "started_at": None, "finished_at": None,
            "succeeded": False, "processed_bytes": 0, **fields}


def test_wait_transfer_until_finished(serve, clock):
    data = serve(in_order([
        Reply(200, transfer(12)),
        Reply(200, transfer(12, started_at="2026-03-01T12:00:00Z", processed_bytes=5_000_000)),
        Reply(200, transfer(12, started_at="2026-03-01T12:00:00Z", processed_bytes=9_000_000,
                            finished_at="2026-03-01T12:00:09Z", succeeded=True)),
    ]))
    seen: list[str] = []
    done = client(data, clock).wait_transfer("shop", "b012", poll=2.0, progress=seen.append)
    assert done["succeeded"] and calls(data) == ["GET /client/v11/apps/shop/transfers/12"] * 3
    assert seen == ["b012: pending", "b012: 5.0 MB"] and clock.sleeps == [2.0, 2.0]


def test_a_failed_transfer_raises_with_its_last_log_line(serve, clock):
    failed = transfer(7, started_at="t0", finished_at="t1", succeeded=False, to_type="pg_restore",
                      from_type="gof3r", to_name="DATABASE")

    def handle(req: Request) -> Reply:
        if req.query.get("verbose") == ["true"]:
            return Reply(200, {**failed, "logs": [{"created_at": "t0", "message": "pg_restore: starting"},
                                                  {"created_at": "t1", "message": "pg_restore: error: out of disk"}]})
        return Reply(200, failed)

    data = serve(handle)
    with pytest.raises(TransferFailed, match="r007 .*failed: pg_restore: error: out of disk") as caught:
        client(data, clock).wait_transfer("shop", 7)
    assert caught.value.transfer["num"] == 7 and len(data.requests) == 2


def test_wait_database_treats_not_yet_known_as_waiting(serve, clock):
    data = serve(in_order([
        Reply(404, {"id": "not_found", "message": "not found"}),
        Reply(200, {"waiting?": True, "message": "preparing", "error?": False}),
        Reply(200, {"waiting?": False, "message": "available", "error?": False}),
    ]))
    assert client(data, clock).wait_database("db-1", poll=5.0)["message"] == "available"
    assert clock.sleeps == [5.0, 5.0]
    assert calls(data) == ["GET /client/v11/databases/db-1/wait_status"] * 3

    broken = serve(lambda req: Reply(200, {"waiting?": True, "error?": True, "message": "provisioning failed"}))
    with pytest.raises(BackoutError, match="db-1: provisioning failed"):
        client(broken, clock).wait_database("db-1")


# --- every other route ---------------------------------------------------------------------------


def test_routes_methods_and_bodies(serve, clock):
    api = serve(lambda req: Reply(200, {"url": "https://b.example/x"} if "public-url" in req.path else {}))
    h = client(api, clock)
    routes = [
        (lambda: h.create_app("shop", region="eu"), "POST /apps", {"name": "shop", "region": "eu"}),
        (lambda: h.release_config_vars("shop", "v4"), "GET /apps/shop/releases/4/config-vars", None),
        (lambda: h.update_config_vars("shop", {"A": "1", "B": None}), "PATCH /apps/shop/config-vars",
         {"A": "1", "B": None}),
        (lambda: h.update_formation("shop", [{"type": "web", "quantity": 2}]), "PATCH /apps/shop/formation",
         {"updates": [{"type": "web", "quantity": 2}]}),
        (lambda: h.restart_dynos("shop"), "DELETE /apps/shop/dynos", None),
        (lambda: h.restart_dynos("shop", "web.1"), "DELETE /apps/shop/dynos/web.1", None),
        (lambda: h.slug_info("shop", "s-1"), "GET /apps/shop/slugs/s-1", None),
        (lambda: h.addons("shop"), "GET /apps/shop/addons", None),
        (lambda: h.addon_info("shop", "postgresql-a"), "GET /apps/shop/addons/postgresql-a", None),
        (lambda: h.create_addon("shop", "heroku-postgresql:standard-0", config={"rollback": "x", "to": "t"},
                                attachment_name="ROLLBACK", confirm="shop"),
         "POST /apps/shop/addons", {"plan": "heroku-postgresql:standard-0", "config": {"rollback": "x", "to": "t"},
                                    "attachment": {"name": "ROLLBACK"}, "confirm": "shop"}),
        (lambda: h.attachments("shop"), "GET /apps/shop/addon-attachments", None),
        (lambda: h.create_attachment("shop", "postgresql-b", "DATABASE", confirm="shop"), "POST /addon-attachments",
         {"app": "shop", "addon": "postgresql-b", "name": "DATABASE", "confirm": "shop"}),
        (lambda: h.delete_attachment("att-1"), "DELETE /addon-attachments/att-1", None),
        (lambda: h.webhooks("shop"), "GET /apps/shop/webhooks", None),
        (lambda: h.create_webhook("shop", "https://hook.example/", ["api:release"], secret="whsec"),
         "POST /apps/shop/webhooks",
         {"url": "https://hook.example/", "include": ["api:release"], "level": "notify", "secret": "whsec"}),
        (lambda: h.database_info("db-1"), "GET /client/v11/databases/db-1", None),
        (lambda: h.capture_backup("db-1"), "POST /client/v11/databases/db-1/backups", None),
        (lambda: h.transfer("shop", str(uuid.UUID(int=5))), f"GET /client/v11/apps/shop/transfers/{uuid.UUID(int=5)}",
         None),
        (lambda: h.backup_url("shop", "b005"), "POST /client/v11/apps/shop/transfers/5/actions/public-url", None),
        (lambda: h.restore_backup("db-1", "https://b.example/x"), "POST /client/v11/databases/db-1/restores",
         {"backup_url": "https://b.example/x"}),
        (lambda: h.app_info("a b/c"), "GET /apps/a%20b%2Fc", None),
    ]
    for call, route, body in routes:
        call()
        request = api.requests[-1]
        assert (f"{request.method} {request.path}", request.json()) == (route, body)
    assert h.backup_url("shop", 5) == {"url": "https://b.example/x"}
    with pytest.raises(BadInput, match="app is empty"):
        h.app_info(" ")


def test_transfer_names():
    assert transfer_name({"num": 3, "from_type": "pg_dump", "to_type": "gof3r"}) == "b003"
    assert transfer_name({"num": 3, "from_type": "pg_dump", "to_type": "gof3r", "schedule": {"name": "x"}}) == "a003"
    assert transfer_name({"num": 41, "from_type": "gof3r", "to_type": "pg_restore"}) == "r041"
    assert transfer_name({"num": 1234, "from_type": "pg_dump", "to_type": "pg_restore"}) == "c1234"
