"""Driving `backout web` in a real browser: Debian's chromium, headless, through Playwright.

Playwright's own browser downloads are never used (`playwright install` fetches builds from outside
the registries): the browser is /usr/bin/chromium, which scripts/setup installs from Debian.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Where to save a screenshot of the page (the README's docs/web.png is made this way).
SCREENSHOT = "BACKOUT_WEB_SCREENSHOT"


def launch(playwright) -> Browser:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing; scripts/setup installs Debian's chromium"
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def check_the_demo_page(url: str, password: str, app: str, versions: dict[str, int]) -> None:
    """The demo's story, as the page tells it: `versions` has the releases of code v1 and v2 and the
    rollback release ("v1", "v2", "rollback")."""
    v1, v2, rollback = versions["v1"], versions["v2"], versions["rollback"]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            _refused_without_password(browser, url, app)
            context = browser.new_context(http_credentials={"username": "oncall", "password": password},
                                          viewport={"width": 1180, "height": 900})
            page = context.new_page()
            answer = page.goto(url)
            assert answer is not None and answer.status == 200
            expect(page.locator("h1")).to_have_text(app)
            _timeline_in_order(page, v1, v2, rollback)
            _chart_marks_the_failure(page, v2)
            if os.environ.get(SCREENSHOT):
                page.screenshot(path=os.environ[SCREENSHOT])
            _rollback_needs_the_typed_name(page, app, v1)
        finally:
            browser.close()


def _refused_without_password(browser: Browser, url: str, app: str) -> None:
    context = browser.new_context()
    try:
        answer = context.request.get(url)
        assert answer.status == 401, answer.status
        assert app not in answer.text()
        wrong = browser.new_context(http_credentials={"username": "oncall", "password": "not-the-password"})
        assert wrong.request.get(url).status == 401
        wrong.close()
    finally:
        context.close()


def _timeline_in_order(page: Page, v1: int, v2: int, rollback: int) -> None:
    rows = page.locator("table.timeline tbody tr")
    versions = [int(v) for v in rows.evaluate_all("rows => rows.map(r => r.dataset.version)")]
    assert versions == sorted(versions, reverse=True), versions
    assert versions[:3] == [rollback, v2, v1], versions
    expect(page.locator(f"#v{rollback}")).to_contain_text(f"Rollback to v{v1}")
    expect(page.locator(f"#v{rollback}")).to_contain_text("current")
    expect(page.locator(f"#v{v2}")).to_contain_text("failed")
    expect(page.locator(f"#v{v2}")).to_contain_text("rolled back by")
    expect(page.locator(f"#v{v2}")).to_contain_text("alembic 0001 → 0002")
    expect(page.locator(f"#v{v1}")).to_contain_text("verified healthy")
    expect(page.locator("article.rollback").first).to_contain_text("health-monitor")
    expect(page.locator("article.rollback").first).to_contain_text("db_down")


def _chart_marks_the_failure(page: Page, v2: int) -> None:
    chart = page.locator("svg.chart")
    expect(chart).to_be_visible()
    expect(chart.locator(f'g.release.failed[data-version="{v2}"]')).to_have_count(1)
    expect(chart.locator(f'g.release.failed[data-version="{v2}"] text')).to_have_text(f"v{v2} failed")
    expect(chart.locator(f'g.failure[data-version="{v2}"]')).to_have_count(1)
    assert chart.locator("circle.probe.fail").count() >= 3
    assert chart.locator("circle.probe.pass").count() >= 3
    expect(chart.locator("g.rollback")).to_have_count(1)


def _rollback_needs_the_typed_name(page: Page, app: str, v1: int) -> None:
    page.locator(f"#v{v1} a.button", has_text="Roll back to here").click()
    expect(page.locator("h1")).to_have_text(f"Roll {app} back to v{v1}")
    expect(page.locator("pre.plan")).to_contain_text(f"target:  v{v1}")
    page.fill("#confirm", app + "-typo")
    page.locator("form.confirm button").click()
    expect(page.locator("h1")).to_have_text("not rolled back")
    expect(page.locator("body")).to_contain_text(f"type {app}")
    page.go_back()
    page.fill("#confirm", app)
    page.locator("form.confirm button").click()
    expect(page.locator("p.notice")).to_contain_text("requested")
    request_id = re.search(r"rb_[0-9A-Z]{26}", page.locator("p.notice").inner_text())[0]
    article = page.locator(f"article#{request_id}")
    expect(article).to_contain_text("web:oncall")
    # The worker carries it out: the app already runs v1's code, so it succeeds without a release.
    deadline = time.monotonic() + 60
    while "succeeded" not in article.inner_text():
        assert time.monotonic() < deadline, article.inner_text()
        page.wait_for_timeout(1000)
        page.reload()
