"""`backout web`'s server over real HTTP against a real ledger: authentication, security headers,
the redirect to HTTPS, the refusals of the rollback form, and the dyno webhook on the same port."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone

import pytest
import requests

from backout import ledger
from backout.errors import ConfigError
from backout.health.dyno_webhook import SIGNATURE_HEADER, signature
from backout.settings import load
from backout.web import auth
from backout.web.server import WEBHOOK_PATH, make_server
from tests.support import child_env

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def web(database, redis_url):
    """A running `backout web` (actions on) over a ledger with one app, and its base URL."""
    with ledger.connect(database) as conn:
        cp = ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=4, release_id="r4",
                                      slug_id="s4", slug_commit="abc1234", previous_release_version=3,
                                      backup_strategy="none", migration_tool="none")
        ledger.update_checkpoint(conn, cp["id"], status="complete", completed_at="now")
        ledger.record_health_event(conn, app="shop", release_version=4, kind="verified", verdict="pass",
                                   reason="passed its probes")
    settings = load({"DATABASE_URL": database, "REDIS_URL": redis_url, "BACKOUT_WEB_PASSWORD": PASSWORD,
                     "BACKOUT_WEB_ACTIONS": "true", "BACKOUT_HEALTH_WEBHOOK_SECRET": "s" * 32})
    server = make_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url, **kwargs):
    return requests.get(url, auth=("anyone", PASSWORD), allow_redirects=False, timeout=10, **kwargs)


def test_every_page_needs_the_password(web):
    for path in ("/", "/apps/shop", "/static/backout.css", "/apps/shop/rollback?to=v4", "/nothing"):
        answer = requests.get(web + path, timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="backout"')
        assert "shop" not in answer.text
    assert requests.get(web + "/apps/shop", auth=("anyone", PASSWORD + "x"), timeout=10).status_code == 401
    assert requests.get(web + "/apps/shop", auth=("anyone", ""), timeout=10).status_code == 401
    assert get(web + "/apps/shop").status_code == 200


def test_any_user_name_is_accepted_and_the_page_reads_the_ledger(web):
    answer = requests.get(web + "/apps/shop", auth=("ops@example.com", PASSWORD), timeout=10)
    assert answer.status_code == 200
    assert '<tr id="v4"' in answer.text and "verified healthy" in answer.text and "abc1234" in answer.text
    index = get(web + "/")
    assert 'href="/apps/shop"' in index.text


def test_security_headers_and_hsts_behind_tls(web):
    answer = get(web + "/apps/shop")
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in answer.headers
    assert "max-age" in get(web + "/apps/shop", headers={"X-Forwarded-Proto": "https"}).headers["Strict-Transport-Security"]
    unauthenticated = requests.get(web + "/apps/shop", timeout=10)
    assert unauthenticated.headers["X-Frame-Options"] == "DENY"


def test_plain_http_behind_the_router_is_sent_to_https_before_any_password_is_asked(web):
    answer = requests.get(web + "/apps/shop?x=1", headers={"X-Forwarded-Proto": "http", "Host": "shop-ops.example.com"},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 308
    assert answer.headers["Location"] == "https://shop-ops.example.com/apps/shop?x=1"
    assert "WWW-Authenticate" not in answer.headers


def test_the_rollback_form_needs_a_valid_csrf_token_and_the_typed_name(web, database):
    url = web + "/apps/shop/rollback"
    form = {"to": "v4", "db": "none", "confirm": "shop"}
    missing = requests.post(url, data=form, auth=("ops", PASSWORD), allow_redirects=False, timeout=10)
    assert missing.status_code == 403
    token = auth.csrf_token(auth.csrf_key(PASSWORD), "ops", "shop")
    wrong_user = requests.post(url, data={**form, "csrf": token}, auth=("someone-else", PASSWORD), timeout=10)
    assert wrong_user.status_code == 403
    other_site = requests.post(url, data={**form, "csrf": token}, auth=("ops", PASSWORD), timeout=10,
                               headers={"Origin": "https://evil.example.com"})
    assert other_site.status_code == 403
    mistyped = requests.post(url, data={**form, "csrf": token, "confirm": "shopp"}, auth=("ops", PASSWORD), timeout=10)
    assert mistyped.status_code == 400 and "type shop" in mistyped.text
    with ledger.connect(database) as conn:
        assert ledger.list_requests(conn, "shop") == []


def test_actions_are_off_unless_asked_for(database):
    settings = load({"DATABASE_URL": database, "BACKOUT_WEB_PASSWORD": PASSWORD})
    server = make_server(settings, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        plan = get(base + "/apps/shop/rollback?to=v4")
        assert plan.status_code == 409 and "HEROKU_API_KEY is not set" in plan.text  # readable, never a form
        assert 'name="confirm"' not in plan.text
        token = auth.csrf_token(auth.csrf_key(PASSWORD), "anyone", "shop")
        posted = requests.post(base + "/apps/shop/rollback", data={"to": "v4", "confirm": "shop", "csrf": token},
                               auth=("anyone", PASSWORD), timeout=10)
        assert posted.status_code == 403
    finally:
        server.shutdown()
        server.server_close()


def test_the_dyno_webhook_shares_the_port_and_proves_itself_by_signature(web):
    body = json.dumps({"resource": "dyno", "action": "update", "data": {
        "app": {"name": "shop"}, "name": "web.1", "state": "crashed", "release": {"version": 4}},
        "published_at": datetime.now(timezone.utc).isoformat(),
        "webhook_metadata": {"delivery": {"id": f"d-{uuid.uuid4()}"}}}).encode()
    unsigned = requests.post(web + WEBHOOK_PATH, data=body, timeout=10)
    assert unsigned.status_code == 401
    signed = requests.post(web + WEBHOOK_PATH, data=body, headers={SIGNATURE_HEADER: signature("s" * 32, body)},
                           timeout=10)
    assert signed.status_code == 202
    replayed = requests.post(web + WEBHOOK_PATH, data=body, headers={SIGNATURE_HEADER: signature("s" * 32, body)},
                             timeout=10)
    assert replayed.status_code == 409  # the same delivery is taken once, on this port too


def test_without_a_password_it_refuses_to_start(database):
    with pytest.raises(ConfigError) as refused:
        make_server(load({"DATABASE_URL": database}), "127.0.0.1", 0)
    assert "BACKOUT_WEB_PASSWORD" in str(refused.value) and "heroku config:set" in str(refused.value)
    with pytest.raises(ConfigError):
        make_server(load({"DATABASE_URL": database, "BACKOUT_WEB_PASSWORD": "short"}), "127.0.0.1", 0)


def test_basic_auth_parsing():
    header = "Basic " + base64.b64encode(f"a b:{PASSWORD}".encode()).decode()
    assert auth.basic_user(header, PASSWORD) == "ab"
    assert auth.basic_user("Basic !!!", PASSWORD) is None
    assert auth.basic_user("Bearer x", PASSWORD) is None
    key = auth.csrf_key(PASSWORD)
    token = auth.csrf_token(key, "ops", "shop", now=1000.0)
    assert auth.csrf_valid(key, token, "ops", "shop", now=1010.0)
    assert not auth.csrf_valid(key, token, "ops", "other", now=1010.0)
    assert not auth.csrf_valid(key, token, "ops", "shop", now=1000.0 + auth.CSRF_MAX_AGE + 1)


def test_the_command_without_a_password_says_how_to_set_one_and_exits_2(database):
    env = child_env({"DATABASE_URL": database, "PORT": "0", "DYNO": "web.1"})
    done = subprocess.run([sys.executable, "-m", "backout", "web"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "BACKOUT_WEB_PASSWORD is not set" in lines[0] and "heroku config:set" in lines[0]


def test_password_guessing_is_slowed_per_client(web):
    guesser = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(auth.FAILURES_ALLOWED):
        assert requests.get(web + "/", auth=("x", "guess"), headers=guesser, timeout=10).status_code == 401
    blocked = requests.get(web + "/", auth=("x", PASSWORD), headers=guesser, timeout=10)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "60"
    # Another client (the router appends the address it saw, so a forged first entry does not help).
    other = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    assert requests.get(web + "/", auth=("x", PASSWORD), headers=other, timeout=10).status_code == 200


def test_the_throttle_forgets_after_its_window():
    throttle = auth.Throttle(allowed=2, window=10)
    throttle.failed("a", now=0)
    throttle.failed("a", now=1)
    assert throttle.blocked("a", now=5) and not throttle.blocked("b", now=5)
    assert not throttle.blocked("a", now=10.5)
