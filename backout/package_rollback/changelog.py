"""Reading and editing a changelog: Keep a Changelog and the common variants.

Recognised release headings, at the level of the first one found (ATX `#`..`###` or setext):
`## [1.2.3] - 2024-05-01`, `## [1.2.3](https://...) - 2024-05-01`, `## 1.2.3 (2024-05-01)`,
`## v1.2.3 - 2024-05-01`, `## Version 1.2.3`, `1.2.3 (2024-05-01)` underlined with `---`; and
`[Unreleased]`/`Unreleased`. A release marked `[YANKED]` (Keep a Changelog's convention), "yanked",
"rolled back", "withdrawn" or "retracted" in its heading is one that must not be rolled back to.
A changelog that names no release, names one that is not a PEP 440 version, lists one twice or
is not newest first is refused: editing it could put the entry in the wrong place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from backout.errors import BadInput

NAMES = ("CHANGELOG.md", "CHANGES.md", "HISTORY.md", "NEWS.md", "CHANGELOG", "CHANGES", "CHANGELOG.rst")
FORMS = "`## [1.2.3] - 2024-05-01` (Keep a Changelog), `## 1.2.3 (2024-05-01)` or `## v1.2.3`"

_ATX = re.compile(r"(?P<hashes>#{1,3})\s+(?P<text>.*?)\s*#*\s*")
_UNDERLINE = re.compile(r"(?P<char>[=-])(?P=char){2,}\s*")
_BRACKETED = re.compile(r"\[(?P<label>[^\]]+)\]")
_LEADING = re.compile(r"(?:(?:version|release)\s+)?v?(?P<label>\d[^\s(),:;]*)", re.I)
_UNRELEASED = re.compile(r"\[?\s*(unreleased|upcoming|next release)\s*\]?", re.I)
_MARKED = re.compile(r"yanked|rolled[ -]back|withdrawn|retracted", re.I)
_LINK = re.compile(r"\[(?P<label>[^\]]+)\]:\s*(?P<url>\S+)\s*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Section:
    """One release heading: its version (None for Unreleased) and where it is."""

    label: str | None  # the version as written, or None for Unreleased
    version: Version | None
    line: int  # index of the heading's (first) line
    setext: bool
    marked: bool  # yanked or rolled back, per the heading


class Changelog:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.sections = self._parse()

    # -- reading --

    def _parse(self) -> list[Section]:
        found: list[tuple[int, int, str, bool]] = []  # (level, line, heading text, setext)
        for i, line in enumerate(self.lines):
            match = _ATX.fullmatch(line)
            if match:
                found.append((len(match["hashes"]), i, match["text"], False))
            elif (i + 1 < len(self.lines) and line.strip() and not line.startswith((" ", "-", "*", "["))
                  and _UNDERLINE.fullmatch(self.lines[i + 1])):
                found.append((1 if self.lines[i + 1].startswith("=") else 2, i, line.strip(), True))
        level = next((lvl for lvl, _, text, _ in found if _version_label(text) is not None), None)
        if level is None:
            raise BadInput(
                f"{self.path} names no release in a form backout recognises (expected headings like {FORMS}); "
                "fix the changelog or pass --changelog with the right file"
            )
        sections: list[Section] = []
        for lvl, i, text, setext in found:
            if lvl != level:
                continue
            if _UNRELEASED.fullmatch(text.split(" - ")[0].strip()):
                sections.append(Section(None, None, i, setext, False))
                continue
            label = _version_label(text)
            if label is None:
                continue
            try:
                version = Version(label)
            except InvalidVersion:
                raise BadInput(
                    f"{self.path} line {i + 1}: {text!r} names {label!r}, which is not a PEP 440 version; "
                    "fix the heading, then rerun"
                ) from None
            sections.append(Section(label, version, i, setext, bool(_MARKED.search(text))))
        releases = [s for s in sections if s.version is not None]
        for before, after in zip(releases, releases[1:]):
            assert before.version is not None and after.version is not None
            if after.version == before.version:
                raise BadInput(f"{self.path} lists {after.label} twice (lines {before.line + 1} and "
                               f"{after.line + 1}); remove one, then rerun")
            if after.version > before.version:
                raise BadInput(
                    f"{self.path} is not newest first: {after.label} (line {after.line + 1}) is below "
                    f"{before.label} (line {before.line + 1}); order it newest first, then rerun"
                )
        return sections

    def releases(self) -> list[Section]:
        """Release sections, newest first (Unreleased left out)."""
        return [s for s in self.sections if s.version is not None]

    def find(self, version: Version) -> Section | None:
        return next((s for s in self.releases() if s.version == version), None)

    # -- editing --

    def with_rollback(self, *, new: Version, bad: Version, good: Version, entry: list[str],
                      date: str, tags: dict[str, str], bad_sha: str | None = None) -> str:
        """The text with a section for `new` (its bullet lines `entry`) and the bad release marked
        `[YANKED]`. Link references, if the changelog uses them, get one for `new`, and links to the
        deleted bad tag point at its commit instead. Applying it twice changes nothing more."""
        lines = list(self.lines)
        bad_section = self.find(bad)
        if bad_section is not None and not bad_section.marked:
            lines[bad_section.line] = lines[bad_section.line].rstrip() + " [YANKED]"
            if bad_section.setext:
                underline = lines[bad_section.line + 1].strip()[0]
                lines[bad_section.line + 1] = underline * len(lines[bad_section.line])
        if self.find(new) is None:
            # Heading lines were edited in place above, so the parsed positions still hold.
            at, heading = self._place_for(new, date)
            bullet = "*" if sum(ln.startswith("* ") for ln in lines) > sum(ln.startswith("- ") for ln in lines) else "-"
            lines[at:at] = heading + [""] + [f"{bullet} {item}" for item in entry] + [""]
        lines = self._with_links(lines, new, tags, bad_sha)
        return "\n".join(lines) + "\n"

    def _place_for(self, new: Version, date: str) -> tuple[int, list[str]]:
        releases = self.releases()
        template = releases[0]
        text = self.lines[template.line]
        assert template.label is not None
        heading = text.replace(template.label, str(new), 1)
        heading = _DATE.sub(date, heading, count=1)
        heading = re.sub(r"\s*\[YANKED\]|\s*\((?:yanked|withdrawn|retracted|rolled back)\)", "", heading, flags=re.I)
        block = [heading]
        if template.setext:
            block.append(self.lines[template.line + 1].strip()[0] * len(heading))
        after = next((s for s in releases if s.version is not None and s.version < new), None)
        at = after.line if after is not None else len(self.lines)
        return at, block

    def _with_links(self, lines: list[str], new: Version, tags: dict[str, str], bad_sha: str | None) -> list[str]:
        links = {m["label"].lower(): (i, m["url"]) for i, line in enumerate(lines) if (m := _LINK.fullmatch(line))}
        if not links:
            return lines
        releases = self.releases()
        newest_link = next((links[s.label.lower()] for s in releases if s.label and s.label.lower() in links), None)
        out = list(lines)
        for label, (i, url) in links.items():
            if label in ("unreleased", "upcoming"):
                out[i] = re.sub(r"(/compare/)[^\s]+?(\.\.\.HEAD)", rf"\g<1>{tags['new']}\g<2>", out[i])
            elif bad_sha and url.endswith(f"...{tags['bad']}"):
                out[i] = out[i][: -len(tags["bad"])] + bad_sha
            elif bad_sha and url.endswith(f"/releases/tag/{tags['bad']}"):
                out[i] = f"[{_label_of(lines[i])}]: {url.split('/releases/tag/')[0]}/tree/{bad_sha}"
        if str(new).lower() in links or newest_link is None:
            return out
        at, url = newest_link
        if "/compare/" in url:
            new_url = f"{url.split('/compare/')[0]}/compare/{tags['good']}...{tags['new']}"
        elif "/releases/tag/" in url:
            new_url = f"{url.split('/releases/tag/')[0]}/releases/tag/{tags['new']}"
        else:
            return out
        position = next((links[s.label.lower()][0] for s in releases
                         if s.label and s.version is not None and s.version < new and s.label.lower() in links), at)
        out.insert(position, f"[{new}]: {new_url}")
        return out


def _label_of(line: str) -> str:
    match = _LINK.fullmatch(line)
    return match["label"] if match else ""


def _version_label(text: str) -> str | None:
    """The version a heading names, as written, or None when it names none."""
    bracketed = _BRACKETED.match(text)
    candidate = bracketed["label"].strip() if bracketed else text.strip()
    match = _LEADING.match(candidate)
    if not match:
        return None
    return match["label"].rstrip(".")
