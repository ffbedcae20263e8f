"""The page's views and chart from hand-made facts: what a person sees, and what must never show."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from xml.etree import ElementTree

from backout.web import chart
from backout.web.facts import AppFacts, Release, Rollback, _releases
from backout.web.views import Views

T0 = 1_700_000_000.0
SECRET = "hunter2-very-secret-token"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def story() -> AppFacts:
    """v4 verified healthy, v5 failed and rolled back by the monitor, v6 the rollback release."""
    request = {
        "id": "rb_01M7ABCDEFGHJKMNPQRSTVWXYZ", "app": "shop", "status": "succeeded", "db": "down",
        "requested_by": "health-monitor", "dry_run": False, "created_at": iso(T0 + 40), "finished_at": iso(T0 + 45),
        "plan": {"current": {"version": 5}, "target": {"version": 4}, "db_step": {"summary": "undo 0002 (drops notes.priority)"}},
        "result": {"release_version": 6, "target_version": 4}, "error": None,
    }
    steps = [{"step": "safety_checkpoint", "status": "done", "detail": {"checkpoint": "cp_x"}, "at": iso(T0 + 41)},
             {"step": "db_down", "status": "done", "detail": {"undone": ["0002"]}, "at": iso(T0 + 42)},
             {"step": "code_rollback", "status": "done", "detail": {"release_version": 6}, "at": iso(T0 + 43)}]
    checkpoints = [
        {"id": "cp_01M7AAAAAAAAAAAAAAAAAAAAAA", "kind": "deploy", "status": "complete", "release_version": 5,
         "slug_commit": "bbbbbbbbbbbbbbbb", "created_at": iso(T0 + 20), "backup_strategy": "pg_dump",
         "backup": {"size": 1234}, "migration_tool": "alembic", "migrations_before": ["0001"],
         "migrations_after": ["0002"], "reversible": True, "verified_healthy_at": None,
         "verdict": {"verdict": "down_needed", "text": "a rollback needs the down migration"}},
        {"id": "cp_01M7BBBBBBBBBBBBBBBBBBBBBB", "kind": "deploy", "status": "complete", "release_version": 4,
         "slug_commit": "aaaaaaaaaaaaaaaa", "created_at": iso(T0), "backup_strategy": "pg_dump",
         "backup": {"size": 441}, "migration_tool": "alembic", "migrations_before": [],
         "migrations_after": ["0001"], "reversible": True, "verified_healthy_at": iso(T0 + 10)},
    ]
    events = [
        {"kind": "watch_started", "release_version": 4, "reason": "watching", "at": iso(T0 + 1)},
        {"kind": "verified", "release_version": 4, "reason": "passed its probes", "at": iso(T0 + 10)},
        {"kind": "watch_started", "release_version": 5, "reason": "watching", "at": iso(T0 + 21)},
        {"kind": "failed", "release_version": 5, "reason": f"3 failed probes; token {SECRET}", "at": iso(T0 + 39)},
        {"kind": "verified", "release_version": 6, "reason": "passed its probes", "at": iso(T0 + 60)},
    ]
    rollbacks = [Rollback(request, steps)]
    heroku = [
        {"version": 6, "created_at": iso(T0 + 44), "user": {"email": "api@example.com"}, "description": "Rollback to v4",
         "status": "succeeded", "current": True, "slug": {"id": "s1"}},
        {"version": 5, "created_at": iso(T0 + 20), "user": {"email": "dev@example.com"}, "description": "Deploy code v2",
         "status": "succeeded", "current": False, "slug": {"id": "s2"}},
        {"version": 4, "created_at": iso(T0), "user": {"email": "dev@example.com"}, "description": "Deploy code v1",
         "status": "succeeded", "current": False, "slug": {"id": "s1"}},
    ]
    samples = []
    for i in range(60):
        version = 4 if i < 20 else 5 if i < 44 else 6
        bad = version == 5 and i >= 24
        samples.append({"app": "shop", "release_version": version, "url": "https://shop.example.com/health",
                        "at": iso(T0 + i), "outcome": "fail" if bad else "pass", "status": 500 if bad else 200,
                        "elapsed": 0.02 + (i % 5) / 100, "counted": i not in (20, 21)})
    return AppFacts(app="shop", releases=_releases(heroku, checkpoints, events, rollbacks), rollbacks=rollbacks,
                    samples=samples, events=events, in_progress=False, read_at=T0 + 61)


def test_the_timeline_lists_releases_newest_first_with_checkpoints_health_and_rollbacks():
    html = Views([SECRET]).app_page(story())
    rows = re.findall(r'<tr id="v(\d+)"', html)
    assert rows == ["6", "5", "4"]
    v5 = html[html.index('<tr id="v5"'):html.index('<tr id="v4"')]
    assert "failed" in v5 and "rolled back by" in v5 and "rb_01M7ABCDEFGHJKMNPQRSTVWXYZ" in v5
    assert "verdict: a rollback needs the down migration" in v5 and "not drilled" in v5
    assert "alembic 0001 &rarr; 0002" in v5 and "1.2 KB" in v5 and "bbbbbbbbbbbb" in v5 and "dev@example.com" in v5
    v4 = html[html.index('<tr id="v4"'):]
    assert "verified healthy" in v4.split("</tr>")[0]
    assert "rollback to v4" in html[html.index('<tr id="v6"'):html.index('<tr id="v5"')]


def test_rollbacks_show_their_steps_and_what_they_lost():
    html = Views().app_page(story())
    article = html[html.index('<article class="rollback"'):]
    assert "v5 &rarr; v4 with --db down, now v6" in article
    assert "undo 0002 (drops notes.priority)" in article
    assert [s for s in ("safety_checkpoint", "db_down", "code_rollback") if s in article] == [
        "safety_checkpoint", "db_down", "code_rollback"]


def test_secrets_never_reach_the_page():
    facts = story()
    facts.api_note = f"Heroku said no for postgres://u:{SECRET}@db/x"
    html = Views([SECRET]).app_page(facts)
    assert SECRET not in html
    assert "********" in html


def test_values_are_escaped():
    facts = story()
    facts.app = "<script>alert(1)</script>"
    html = Views().app_page(facts)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_chart_marks_the_failed_release_its_failure_and_the_rollback():
    svg = chart.svg(story())
    root = ElementTree.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    failed = root.findall(".//s:g[@class='release failed']", ns)
    assert [g.get("data-version") for g in failed] == ["5"]
    verified = {g.get("data-version") for g in root.findall(".//s:g[@class='release verified']", ns)}
    assert verified == {"4", "6"}
    assert [g.get("data-version") for g in root.findall(".//s:g[@class='failure']", ns)] == ["5"]
    assert len(root.findall(".//s:g[@class='rollback succeeded']", ns)) == 1
    probes = root.findall(".//s:circle", ns)
    assert len(probes) == 60
    assert sum("fail" in c.get("class") for c in probes) == 20
    assert sum("uncounted" in c.get("class") for c in probes) == 2


def test_the_chart_puts_time_left_to_right():
    root = ElementTree.fromstring(chart.svg(story()))
    xs = [float(c.get("cx")) for c in root.iter("{http://www.w3.org/2000/svg}circle")]
    assert xs == sorted(xs) and xs[0] < xs[-1]


def test_the_page_refreshes_only_while_something_runs():
    facts = story()
    assert 'http-equiv="refresh"' not in Views().app_page(facts)
    facts.in_progress = True
    assert 'http-equiv="refresh"' in Views().app_page(facts)


def test_roll_back_to_here_shows_only_with_actions_on_and_not_on_the_current_release():
    facts = story()
    read_only = Views().app_page(facts)
    assert "Roll back to here" not in read_only and read_only.count(">plan</a>") == 2
    html = Views(actions=True).app_page(facts)
    assert html.count("Roll back to here") == 2
    assert "/apps/shop/rollback?to=v4" in html and "to=v6" not in html


def test_the_plan_page_shows_the_dry_run_plan_and_asks_for_the_name():
    plan = {"app": "shop", "to": "v4", "resolved_by": "version", "noop": False, "db": "none", "db_step": None,
            "current": {"version": 6, "description": "Deploy code v3", "slug_id": "a"},
            "target": {"version": 4, "description": "Deploy code v1", "slug_id": "b"},
            "config_changes": {"added": [], "removed": [], "changed": ["FEATURE"]},
            "steps": ["code_rollback", "release_phase", "verify"]}
    html = Views(actions=True).plan_page("shop", "v4", "none", plan, None, "123.abc")
    assert "target:  v4  Deploy code v1  (as asked)" in html
    assert 'name="confirm"' in html and 'name="csrf" value="123.abc"' in html
    read_only = Views().plan_page("shop", "v4", "none", plan, None, "")
    assert "target:  v4" in read_only and 'name="confirm"' not in read_only and "--confirm shop" in read_only
    refused = Views(actions=True).plan_page("shop", "v9", "none", None, "app 'shop' has no release v9", "1.a")
    assert "has no release v9" in refused and 'name="confirm"' not in refused


def test_releases_come_from_the_ledger_alone_when_heroku_does_not_answer():
    facts = story()
    releases = _releases(None, [r.checkpoint for r in facts.releases if r.checkpoint], facts.events, facts.rollbacks)
    assert [r.version for r in releases] == [6, 5, 4]
    assert releases[0].current and releases[0].rollback_of == 4 and releases[1].health == "failed"


def test_an_empty_chart_says_why():
    facts = AppFacts(app="new", releases=[Release(1, when=iso(time.time()))], rollbacks=[], samples=[], events=[],
                     in_progress=False)
    assert "no probes recorded yet" in chart.svg(facts)


def test_a_watch_is_in_progress_until_an_event_ends_it():
    from backout.web.facts import _watching

    now = time.time()
    started = {"kind": "watch_started", "release_version": 7, "reason": "", "at": iso(now - 5)}
    counted = {"kind": "counted", "release_version": 7, "reason": "", "at": iso(now - 2)}
    assert _watching([started, counted], 3600)
    assert not _watching([started, counted, {**counted, "kind": "verified"}], 3600)
    assert not _watching([started], 1)  # a watch whose worker died long ago is not shown as running
    assert not _watching([], 3600)


def test_each_probed_url_gets_its_own_panel():
    facts = story()
    facts.samples += [{**s, "url": "https://shop.example.com/ready"} for s in facts.samples[:10]]
    root = ElementTree.fromstring(chart.svg(facts))
    panels = root.findall(".//{http://www.w3.org/2000/svg}g[@class='panel']")
    assert len(panels) == 2
    assert [len(p.findall("{http://www.w3.org/2000/svg}circle")) for p in panels] == [60, 10]
