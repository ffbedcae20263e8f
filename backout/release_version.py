"""Heroku releases as people and Heroku write them: a version (42, "42", "v42"), the description
of a rollback release ("Rollback to v41"), the slug a release runs.

Apart from the API client (`backout.heroku`), which loads `requests`, so that the release phase
and the policy read these without it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# The ledger keeps versions in PostgreSQL `integer` columns; Heroku's are far below this.
MAX_VERSION = 2**31 - 1
_ROLLBACK_DESCRIPTION = re.compile(r"Rollback to v(\d+)")


def parse_release_version(value: object) -> int | None:
    """The version in `value` (42, "42", "v42", "V42"), or None when it is not one.

    Only ASCII digits count: str.isdigit() also accepts "٣" and "²", which int() reads as 3 and
    refuses, respectively; neither is a version anyone typed on purpose.
    """
    if isinstance(value, bool):
        return None
    text = str(value).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    return number if 1 <= number <= MAX_VERSION else None


def rollback_description(target_version: int) -> str:
    """The description Heroku gives the release a rollback to `target_version` makes."""
    return f"Rollback to v{target_version}"


def rollback_target(description: str | None) -> int | None:
    """The version a release rolls back to, from its description (`Rollback to v41`), else None."""
    found = _ROLLBACK_DESCRIPTION.match(description or "")
    return int(found[1]) if found else None


def slug_id(release: Mapping[str, Any]) -> str | None:
    """The id of a Platform API release's slug, None for a release without one."""
    slug = release.get("slug")
    return slug.get("id") if isinstance(slug, dict) else None
