"""Keeping secrets out of everything backout writes or relays: output, the migrate command's relayed
output, logs, exceptions, ledger rows, job arguments, notifications and Sentry events.

What counts as a secret: the values of SECRET_VARIABLES, and the password of every URL with
credentials (`scheme://user:password@host`) in any environment variable (a comma-separated list of
URLs included), or in the text being masked.
"""

from __future__ import annotations

import os
import re
import threading
from typing import IO, Any, Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "********"
# The longest piece of a child's output held back while waiting for its end of line.
LINE_MAX = 64 * 1024

# Environment variables whose values are secrets wherever they turn up.
SECRET_VARIABLES = (
    "HEROKU_API_KEY", "GITHUB_TOKEN", "SENTRY_DSN", "BACKOUT_SENTRY_API_TOKEN", "BACKOUT_HEALTH_WEBHOOK_SECRET",
    "BACKOUT_WEB_PASSWORD",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "BUCKETEER_AWS_SECRET_ACCESS_KEY",
)

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
    """The secret values present in an environment: tokens, and the passwords inside URLs (in any
    variable, lists of URLs included: BACKOUT_HEALTH_URL, an add-on's HEROKU_POSTGRESQL_..._URL)."""
    found = [environ[name] for name in SECRET_VARIABLES if environ.get(name)]
    for value in environ.values():
        if "://" not in value:
            continue
        for part in value.split(","):
            try:
                password = urlsplit(part.strip()).password
            except ValueError:
                password = None
            if password:
                found.append(password)
        found.extend(m["password"] for m in _URL_PASSWORD.finditer(value))
    return sorted(set(found))


def known_secrets() -> list[str]:
    """The secrets of this process's environment (where every backout process gets its settings)."""
    return secrets_from_env(dict(os.environ))


def scrub(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """`value` (text, or JSON-like data: dicts, lists) with secrets masked in every string; by
    default the secrets of this process's environment."""
    secrets = known_secrets() if secrets is None else list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {scrub(k, secrets) if isinstance(k, str) else k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets) for item in value]
    return value


def relay(source: IO[bytes], sink: IO[bytes], secrets: Iterable[str]) -> threading.Thread:
    """Copy a child's output from `source` to `sink` as it comes, line by line, with secrets masked;
    on a thread, which ends when the child closes its side. A line longer than LINE_MAX bytes is
    passed on in pieces."""
    secrets = list(secrets)

    def copy() -> None:
        with source:
            while chunk := source.readline(LINE_MAX):
                text = chunk.decode("utf-8", "replace")
                sink.write(redact(text, secrets).encode("utf-8"))
                sink.flush()

    thread = threading.Thread(target=copy, name="backout-relay", daemon=True)
    thread.start()
    return thread
