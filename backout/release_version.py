"""Heroku release versions as people and Heroku write them: 42, "42", "v42"."""

from __future__ import annotations

# The ledger keeps versions in PostgreSQL `integer` columns; Heroku's are far below this.
MAX_VERSION = 2**31 - 1


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
