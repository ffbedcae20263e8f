"""Package versions: PEP 440 parsing and ordering (with `packaging`), tag names, the rollback version."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from packaging.version import InvalidVersion, Version

from backout.errors import BadInput

# A tag is a prefix without digits, then the version: v1.2.3, release-1.2.3, 1.2.3. A prefix with
# digits in it is given with --tag-prefix.
_TAG = re.compile(r"(?P<prefix>\D*)(?P<version>\d.*)")


def parse(text: str, what: str) -> Version:
    """`text` as a PEP 440 version; BadInput naming `what` when it is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        raise BadInput(
            f"{what} {text!r} is not a PEP 440 version; give it as PyPI shows it, for example 1.2.3"
        ) from None


def next_patch(bad: Version) -> Version:
    """The version a rollback of `bad` is published as: the next patch after it (1.2.3 -> 1.2.4).

    PyPI accepts a version only once and only in PEP 440 form, so the rollback cannot reuse the bad
    number or append a label to it. Pre-, post- and dev-release parts are dropped: 1.2.3rc1 -> 1.2.4.
    """
    major, minor, patch = (list(bad.release) + [0, 0])[:3]
    epoch = f"{bad.epoch}!" if bad.epoch else ""
    return Version(f"{epoch}{major}.{minor}.{patch + 1}")


def split_tag(tag: str) -> tuple[str, Version] | None:
    """(prefix, version) of a version tag, or None for a tag that names no version."""
    match = _TAG.fullmatch(tag)
    if not match:
        return None
    try:
        return match["prefix"], Version(match["version"])
    except InvalidVersion:
        return None


def version_of_tag(tag: str, prefix: str) -> Version | None:
    """The version a tag names with the given prefix, or None."""
    rest = tag[len(prefix):] if tag.startswith(prefix) else ""
    if not rest[:1].isdigit():
        return None
    try:
        return Version(rest)
    except InvalidVersion:
        return None


def detect_prefix(tags: Iterable[str], bad: Version) -> str:
    """The tag prefix the project uses: the one on the bad version's tag, else the most common
    one among its version tags, else "v"."""
    prefixes: Counter[str] = Counter()
    for tag in tags:
        split = split_tag(tag)
        if split is None:
            continue
        if split[1] == bad:
            return split[0]
        prefixes[split[0]] += 1
    return prefixes.most_common(1)[0][0] if prefixes else "v"
