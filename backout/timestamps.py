"""Times as Heroku, S3 and the ledger write them (ISO 8601), read one way everywhere."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (`2026-12-03T18:08:25Z`, or with an offset); one without a zone is UTC,
    which is what Heroku and PostgreSQL mean by it."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def epoch(value: str | datetime) -> float:
    """Seconds since the epoch of an ISO 8601 time or a datetime."""
    return (value if isinstance(value, datetime) else parse_time(value)).timestamp()
