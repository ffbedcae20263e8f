"""The page's HTML, rendered on the server: the app list, an app's page (summary, health chart,
release timeline, rollback requests), the rollback plan with its confirmation form, and messages.

Every value shown goes through `Views.text`, which masks secrets (backout.redact) before escaping,
so a token or a database password that found its way into a reason or an error never reaches the
page. No JavaScript: the page refreshes itself with a meta refresh while something is going on.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from backout import __version__
from backout.ledger.records import ACTIVE_STATUSES, CheckpointRow, StepRow
from backout.output import human_bytes
from backout.redact import redact
from backout.rollback.plan import DB_CHOICES, Plan, describe
from backout.web import chart
from backout.web.facts import AppFacts, Release, Rollback

REFRESH_SECONDS = 5
DESCRIPTION_WIDTH = 60
DB_WORDS = {
    "none": "code and config only",
    "down": "run the saved down migrations",
    "restore": "restore the database from the checkpoint",
}


class Views:
    def __init__(self, secrets: Iterable[str] = (), actions: bool = False) -> None:
        self.secrets = list(secrets)
        self.actions = actions

    def text(self, value: object) -> str:
        """`value` as HTML text: secrets masked, then escaped."""
        return escape(redact("" if value is None else str(value), self.secrets))

    # --- pages -----------------------------------------------------------------------------------

    def index(self, apps: list[dict[str, Any]]) -> str:
        if not apps:
            body = "<p>The ledger holds no app yet: deploy one with <code>release: backout release -- ...</code>.</p>"
        else:
            body = "<ul class=\"apps\">" + "".join(
                f'<li><a href="{app_path(a["app"])}">{self.text(a["app"])}</a> '
                f'<span class="muted">last record {self.text(_when(a["last"]))}</span></li>' for a in apps) + "</ul>"
        return self._document("backout", "<h1>backout</h1>" + body)

    def app_page(self, facts: AppFacts, notice: str | None = None) -> str:
        current = next((r for r in facts.releases if r.current), None)
        parts = [f"<h1>{self.text(facts.app)}</h1>", self._summary(facts, current)]
        if notice:
            parts.append(f'<p class="notice">{self.text(notice)}</p>')
        if facts.api_note:
            parts.append(f'<p class="warning">{self.text(facts.api_note)}</p>')
        parts.append('<section id="health"><h2>Health probes, releases and rollbacks</h2>'
                     + chart.svg(facts, self.text) + _legend() + "</section>")
        parts.append(self._timeline(facts))
        parts.append(self._rollbacks(facts.rollbacks))
        return self._document(f"{facts.app} · backout", "\n".join(parts), refresh=facts.in_progress)

    def plan_page(self, app: str, to: str, db: str, plan: Plan | None, refusal: str | None, csrf: str) -> str:
        parts = [f'<p><a href="{app_path(app)}">&larr; {self.text(app)}</a></p>',
                 f"<h1>Roll {self.text(app)} back to {self.text(to)}</h1>", self._db_choices(app, to, db)]
        if refusal:
            parts.append(f'<p class="refused">This rollback cannot be done: {self.text(refusal)}</p>')
        if plan is not None:
            parts.append("<h2>The plan</h2><p class=\"muted\">what <code>backout rollback --app "
                         f"{self.text(app)} --to {self.text(to)} --db {self.text(db)} --dry-run</code> prints</p>"
                         f'<pre class="plan">{self.text(describe(plan))}</pre>')
        if plan is not None and not self.actions:
            parts.append(f'<p class="muted">Rolling back from this page is off (BACKOUT_WEB_ACTIONS). To carry '
                         f'the plan out: <code>backout rollback --app {self.text(app)} --to {self.text(to)} '
                         f'--db {self.text(db)} --confirm {self.text(app)}</code></p>')
        elif plan is not None:
            parts.append(
                f'<form method="post" action="{app_path(app)}/rollback" class="confirm">'
                f'<input type="hidden" name="to" value="{self.text(to)}">'
                f'<input type="hidden" name="db" value="{self.text(db)}">'
                f'<input type="hidden" name="csrf" value="{self.text(csrf)}">'
                f'<label for="confirm">Type <strong>{self.text(app)}</strong> to confirm</label> '
                '<input id="confirm" name="confirm" autocomplete="off" spellcheck="false" required> '
                f'<button type="submit">Roll back to {self.text(to)}</button></form>')
        return self._document(f"roll back {app} · backout", "\n".join(parts))

    def message(self, title: str, text: str, back: str | None = None) -> str:
        link = f'<p><a href="{self.text(back)}">back</a></p>' if back else ""
        return self._document(title, f"<h1>{self.text(title)}</h1><p>{self.text(text)}</p>{link}")

    # --- parts -----------------------------------------------------------------------------------

    def _summary(self, facts: AppFacts, current: Release | None) -> str:
        items = []
        if current is not None:
            items.append(f"current release <strong>v{current.version}</strong>"
                         + (f" ({self.text(current.description)})" if current.description else ""))
        newest = facts.releases[0] if facts.releases else None
        if newest is not None and newest.health:
            items.append(f"v{newest.version} {_badge(newest.health)}")
        running = [r for r in facts.rollbacks if r.request["status"] in ACTIVE_STATUSES]
        if running:
            items.append(f'<span class="badge running">rollback {self.text(running[0].request["status"])}</span>')
        if facts.in_progress:
            items.append(f'<span class="muted">refreshes every {REFRESH_SECONDS}s while a watch or rollback runs</span>')
        items.append(f'<span class="muted">read {self.text(_clock(facts.read_at))} UTC</span>')
        return '<p class="summary">' + " · ".join(items) + "</p>"

    def _timeline(self, facts: AppFacts) -> str:
        rows = []
        for r in facts.releases:
            rows.append(
                f'<tr id="v{r.version}" class="release {"current" if r.current else ""}" data-version="{r.version}">'
                f'<th scope="row">v{r.version}{" <span class=badge>current</span>" if r.current else ""}</th>'
                f"<td>{self.text(_when(r.when))}</td>"
                f"<td><code>{self.text((r.commit or '')[:12])}</code></td>"
                f"<td>{self.text(r.who or '')}</td>"
                f"<td>{self._what(r)}</td>"
                f"<td>{self._checkpoint(r.checkpoint)}</td>"
                f"<td>{_badge(r.health) if r.health else ''}"
                f"{f'<div class=muted>{self.text(r.health_reason)}</div>' if r.health_reason else ''}</td>"
                f"<td>{self._action(facts.app, r)}</td></tr>")
        if not rows:
            rows.append('<tr><td colspan="8">no release recorded yet</td></tr>')
        return ('<section id="releases"><h2>Releases</h2><table class="timeline"><thead><tr><th>release</th>'
                "<th>when (UTC)</th><th>commit</th><th>who</th><th>what</th><th>checkpoint</th><th>health</th>"
                "<th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>")

    def _what(self, r: Release) -> str:
        description = r.description or ""
        short = description if len(description) <= DESCRIPTION_WIDTH else description[:DESCRIPTION_WIDTH - 1] + "…"
        parts = [f'<span title="{self.text(description)}">{self.text(short)}</span>']
        if r.made_by is not None:
            parts.append(f'<div>rollback to v{r.rollback_of} by <a href="#{self.text(r.made_by["id"])}">'
                         f'{self.text(r.made_by["id"])}</a></div>')
        for request in r.rolled_back_by:
            parts.append(f'<div class="rolled-back">rolled back by <a href="#{self.text(request["id"])}">'
                         f'{self.text(request["id"])}</a> ({self.text(request["requested_by"])}, '
                         f'{self.text(request["status"])})</div>')
        return "".join(parts)

    def _checkpoint(self, cp: CheckpointRow | None) -> str:
        if cp is None:
            return '<span class="muted">none</span>'
        backup = cp.get("backup") or {}
        size = backup.get("size")
        before = " ".join(cp.get("migrations_before") or []) or "none"
        after = " ".join(cp.get("migrations_after") or []) or "none"
        lines = [f'<code title="{self.text(cp["id"])}">{self.text(cp["id"][:12])}…</code> {self.text(cp["status"])}',
                 f"{self.text(cp['backup_strategy'])}" + (f" {self.text(human_bytes(size))}" if isinstance(size, int) else ""),
                 f"{self.text(cp['migration_tool'])} {self.text(before)} &rarr; {self.text(after)}"]
        verdict = cp.get("verdict")
        if verdict:
            # backout.verdict's record: {"verdict": kind, "text": what it means, ...}
            shown = verdict.get("text") or verdict.get("verdict") if isinstance(verdict, dict) else verdict
            lines.append(f"verdict: {self.text(shown)}")
        elif cp.get("reversible") is False:
            lines.append("irreversible: " + self.text(", ".join(str(i) for i in cp.get("irreversible") or [])))
        drilled = cp.get("drilled_at")
        lines.append(f"drilled {self.text(_when(drilled))}" if drilled else '<span class="muted">not drilled</span>')
        return "<br>".join(lines)

    def _action(self, app: str, r: Release) -> str:
        if r.current or r.status not in (None, "succeeded"):
            return ""
        href = f'{app_path(app)}/rollback?{urlencode({"to": f"v{r.version}"})}'
        if not self.actions:
            return f'<a class="plan-link" href="{href}">plan</a>'
        return f'<a class="button" href="{href}">Roll back to here</a>'

    def _rollbacks(self, rollbacks: list[Rollback]) -> str:
        if not rollbacks:
            return '<section id="rollbacks"><h2>Rollbacks</h2><p class="muted">none requested</p></section>'
        items = []
        for rb in rollbacks:
            q = rb.request
            result = q.get("result") or {}
            outcome = f", now v{result['release_version']}" if result.get("release_version") else ""
            steps = "".join(
                f'<li class="step {self.text(s["status"])}"><span class="time">{self.text(_clock_iso(s["at"]))}</span> '
                f'{self.text(s["step"])} {self.text(s["status"])}{self._step_detail(s)}</li>' for s in rb.steps)
            items.append(
                f'<article class="rollback" id="{self.text(q["id"])}"><h3>{self.text(q["id"])} '
                f'{_badge(q["status"])}</h3>'
                f"<p>v{self.text(rb.source)} &rarr; v{self.text(rb.target)} with --db {self.text(q['db'])}{self.text(outcome)}, "
                f"asked by {self.text(q['requested_by'])} at {self.text(_when(q['created_at']))}"
                + (f", finished {self.text(_when(q['finished_at']))}" if q.get("finished_at") else "") + "</p>"
                f"<p>loses: {self.text(rb.loses)}</p>"
                + (f'<p class="refused">{self.text(q["error"])}</p>' if q.get("error") else "")
                + f'<ol class="steps">{steps}</ol></article>')
        return '<section id="rollbacks"><h2>Rollbacks</h2>' + "".join(items) + "</section>"

    def _step_detail(self, step: StepRow) -> str:
        detail = step.get("detail") or {}
        shown = ", ".join(f"{k} {v}" for k, v in detail.items()
                          if v is not None and not isinstance(v, (dict, list)))[:300]
        return f' <span class="muted">{self.text(shown)}</span>' if shown else ""

    def _db_choices(self, app: str, to: str, db: str) -> str:
        links = []
        for choice in DB_CHOICES:
            label = f"--db {choice}: {DB_WORDS[choice]}"
            if choice == db:
                links.append(f"<strong>{self.text(label)}</strong>")
            else:
                links.append(f'<a href="{app_path(app)}/rollback?{urlencode({"to": to, "db": choice})}">'
                             f"{self.text(label)}</a>")
        return '<p class="choices">' + " · ".join(links) + "</p>"

    def _document(self, title: str, body: str, refresh: bool = False) -> str:
        meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
        return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{self.text(title)}</title><link rel="stylesheet" href="/static/backout.css">{meta}</head>'
                f"<body>{body}<footer>backout {__version__}"
                + (" · actions on (BACKOUT_WEB_ACTIONS)" if self.actions else " · read-only") + "</footer></body></html>\n")


def app_path(app: str) -> str:
    return "/apps/" + quote(app, safe="")


def _badge(word: str) -> str:
    kind = word.replace(" ", "-")
    return f'<span class="badge {escape(kind)}">{escape(word)}</span>'


def _legend() -> str:
    return ('<p class="legend"><span class="dot pass"></span> probe passed <span class="dot fail"></span> failed '
            '<span class="dot error"></span> no answer <span class="dot uncounted"></span> not counted (grace, '
            'another release) <span class="swatch failed"></span> failed release <span class="swatch verified">'
            '</span> verified healthy <span class="dash"></span> rollback requested</p>')


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _clock_iso(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%H:%M:%S")


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")
