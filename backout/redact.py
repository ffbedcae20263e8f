"""Keeping secrets out of logs, exceptions, job arguments and Sentry events."""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "********"

# Environment variables whose values are secrets wherever they turn up.
SECRET_VARIABLES = (
    "HEROKU_API_KEY", "GITHUB_TOKEN", "SENTRY_DSN", "BACKOUT_SENTRY_API_TOKEN", "BACKOUT_HEALTH_WEBHOOK_SECRET",
    "BACKOUT_WEB_PASSWORD",
)
URL_VARIABLES = ("DATABASE_URL", "BACKOUT_DATABASE_URL", "REDIS_URL", "REDIS_TLS_URL", "BACKOUT_NOTIFY_URL")

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?!PASSWORD@)(?P<password>[^@/\s]+)@", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=\-]+", re.I)


def mask_url(url: str) -> str:
    """The URL with its password replaced, for display."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords, bearer tokens and the given secret values masked."""
    out = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    out = _BEARER.sub(lambda m: m.group(1) + MASK, out)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def secrets_from_env(environ: dict[str, str]) -> list[str]:
    """The secret values present in an environment: tokens, and the passwords inside URLs."""
    found = [environ[name] for name in SECRET_VARIABLES if environ.get(name)]
    for name in URL_VARIABLES:
        value = environ.get(name)
        if value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    return found
