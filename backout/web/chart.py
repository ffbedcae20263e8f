"""The health chart: every probe over time (latency up, outcome as colour) with the releases and
rollbacks on the same time axis, as SVG drawn on the server.

One panel per probed URL. Each release is a band from its release to the next, tinted by its
verdict (a failed release red, a verified one green) and labelled with its version; a rollback is
a dashed line where it was asked for; a release's failure is a red marker where the monitor called
it. Probes made in the grace period or answered by another release did not count, and are drawn
hollow. Styling is by class (the page's stylesheet), so the SVG needs no inline style and the
page's Content-Security-Policy can forbid inline styles.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from html import escape
from typing import Callable, Iterable

from backout.timestamps import epoch
from backout.ledger.records import ProbeSampleRow
from backout.web.facts import AppFacts, Release

WIDTH = 960
PANEL = 130
TOP = 28
LEFT = 58
RIGHT = 16
BOTTOM = 34
GAP = 14
TICKS = 6


def svg(facts: AppFacts, text: Callable[[object], str] = lambda v: escape(str(v))) -> str:
    """The chart of `facts` as an <svg> element; `text` escapes (and redacts) anything shown."""
    urls = sorted({s["url"] for s in facts.samples}) or [""]
    t0, t1 = _span(facts)
    height = TOP + len(urls) * (PANEL + GAP) - GAP + BOTTOM
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / (t1 - t0) * plot_w

    out = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
           f'xmlns="http://www.w3.org/2000/svg" aria-labelledby="chart-title">',
           f'<title id="chart-title">Health probes of {text(facts.app)} with its releases and rollbacks</title>']
    bottom = height - BOTTOM
    out += _release_bands(facts.releases, t0, t1, x, bottom, text)
    for index, url in enumerate(urls):
        top = TOP + index * (PANEL + GAP)
        out += _panel(url, [s for s in facts.samples if s["url"] == url], top, x, text)
    out += _rollback_lines(facts, t0, t1, x, bottom, text)
    out += _failure_marks(facts, t0, t1, x, bottom, text)
    out += _time_axis(t0, t1, x, bottom)
    if not facts.samples:
        out.append(f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + PANEL / 2:.1f}" text-anchor="middle">'
                   "no probes recorded yet (the worker probes BACKOUT_HEALTH_URL after each release)</text>")
    out.append("</svg>")
    return "\n".join(out)


def _span(facts: AppFacts) -> tuple[float, float]:
    """From the first probe (or release) shown to the last, with a little room on both sides."""
    times = [_t(s["at"]) for s in facts.samples]
    times += [_t(e["at"]) for e in facts.events]
    if not times:
        times = [_t(r.when) for r in facts.releases if r.when] or [facts.read_at - 3600]
    t0, t1 = min(times), max(times)
    if facts.in_progress:
        t1 = max(t1, facts.read_at)
    pad = max((t1 - t0) * 0.03, 1.0)
    return t0 - pad, t1 + pad


def _release_bands(releases: list[Release], t0: float, t1: float, x: Callable[[float], float], bottom: float,
                   text: Callable[[object], str]) -> list[str]:
    out = []
    ordered = sorted((r for r in releases if r.when), key=lambda r: _t(r.when))
    for index, release in enumerate(ordered):
        start = _t(release.when)
        end = _t(ordered[index + 1].when) if index + 1 < len(ordered) else t1
        if end < t0 or start > t1:
            continue
        verdict = {"failed": "failed", "verified healthy": "verified"}.get(release.health, "unknown")
        left, right = x(start), x(end)
        label = f"v{release.version}" + (" failed" if verdict == "failed" else "")
        what = f"v{release.version}: {release.health or 'no verdict'}" + (
            f" ({release.health_reason})" if release.health_reason else "")
        out.append(f'<g class="release {verdict}" data-version="{release.version}">'
                   f"<title>{text(what)}</title>"
                   f'<rect x="{left:.1f}" y="{TOP - 6}" width="{max(right - left, 1):.1f}" height="{bottom - TOP + 6:.1f}"/>'
                   + (f'<line x1="{left:.1f}" y1="{TOP - 6}" x2="{left:.1f}" y2="{bottom:.1f}"/>' if start >= t0 else "")
                   + f'<text x="{left + 3:.1f}" y="{TOP - 10}">{text(label)}</text></g>')
    return out


def _panel(url: str, samples: list[ProbeSampleRow], top: float, x: Callable[[float], float],
           text: Callable[[object], str]) -> list[str]:
    elapsed = [e * 1000 for s in samples if (e := s["elapsed"]) is not None]
    ceiling = _nice(max(elapsed, default=100.0))

    def y(ms: float) -> float:
        return top + PANEL - min(ms, ceiling) / ceiling * PANEL

    out = [f'<g class="panel"><rect class="frame" x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{PANEL}"/>']
    for ms in (0.0, ceiling / 2, ceiling):
        out.append(f'<text class="tick" x="{LEFT - 4}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:g} ms</text>')
    if url:
        out.append(f'<text class="url" x="{LEFT + 4}" y="{top + 12}">{text(url)}</text>')
    for s in samples:
        ms = (s.get("elapsed") or 0.0) * 1000
        status = s.get("status")
        what = (f"{_clock(_t(s['at']))} v{s.get('release_version')}: {s['outcome']}"
                + (f", status {status}" if status is not None else "") + f", {ms:.0f} ms"
                + ("" if s.get("counted", True) else " (not counted)"))
        hollow = "" if s.get("counted", True) else " uncounted"
        cx, cy = x(_t(s["at"])), y(ms) if s["outcome"] != "error" else top + 4
        out.append(f'<circle class="probe {s["outcome"]}{hollow}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.2">'
                   f"<title>{text(what)}</title></circle>")
    out.append("</g>")
    return out


def _rollback_lines(facts: AppFacts, t0: float, t1: float, x: Callable[[float], float], bottom: float,
                    text: Callable[[object], str]) -> list[str]:
    out = []
    for rollback in facts.rollbacks:
        at = _t(rollback.request["created_at"])
        if not t0 <= at <= t1:
            continue
        label = f"rollback to v{rollback.target}"
        what = f"{rollback.request['id']}: {label}, {rollback.request['status']}, by {rollback.request['requested_by']}"
        out.append(f'<g class="rollback {rollback.request["status"]}" data-request="{text(rollback.request["id"])}">'
                   f"<title>{text(what)}</title>"
                   f'<line x1="{x(at):.1f}" y1="{TOP:.1f}" x2="{x(at):.1f}" y2="{bottom:.1f}"/>'
                   f'<text x="{x(at) + 3:.1f}" y="{bottom - 6:.1f}">{text(label)}</text></g>')
    return out


def _failure_marks(facts: AppFacts, t0: float, t1: float, x: Callable[[float], float], bottom: float,
                   text: Callable[[object], str]) -> list[str]:
    out = []
    for event in facts.events:
        if event["kind"] != "failed" or not t0 <= _t(event["at"]) <= t1:
            continue
        cx = x(_t(event["at"]))
        what = f"v{event['release_version']} failed: {event['reason']}"
        out.append(f'<g class="failure" data-version="{event["release_version"]}">'
                   f"<title>{text(what)}</title>"
                   f'<path d="M{cx - 6:.1f},{bottom:.1f} L{cx + 6:.1f},{bottom:.1f} L{cx:.1f},{bottom - 10:.1f} Z"/></g>')
    return out


def _time_axis(t0: float, t1: float, x: Callable[[float], float], bottom: float) -> list[str]:
    out = [f'<g class="axis"><line x1="{LEFT}" y1="{bottom:.1f}" x2="{WIDTH - RIGHT}" y2="{bottom:.1f}"/>']
    for t in _ticks(t0, t1):
        out.append(f'<line x1="{x(t):.1f}" y1="{bottom:.1f}" x2="{x(t):.1f}" y2="{bottom + 4:.1f}"/>'
                   f'<text x="{x(t):.1f}" y="{bottom + 18:.1f}" text-anchor="middle">{_clock(t)}</text>')
    out.append(f'<text x="{WIDTH - RIGHT}" y="{bottom + 32:.1f}" text-anchor="end">UTC</text></g>')
    return out


def _ticks(t0: float, t1: float) -> Iterable[float]:
    step = _nice((t1 - t0) / TICKS)
    first = math.ceil(t0 / step) * step
    return [first + i * step for i in range(TICKS + 1) if first + i * step <= t1]


def _nice(value: float) -> float:
    """A round number (1, 2 or 5 times a power of ten) at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")


def _t(iso: str | None) -> float:
    return epoch(iso) if iso else time.time()
