"""Logging set-up with a filter that masks secrets in every record."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from backout.redact import redact, secrets_from_env


class RedactingFilter(logging.Filter):
    """Masks secret values, URL passwords and bearer tokens in the formatted message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when the handler was made,
    so a replaced stderr (a test harness, a daemonized worker) never leaves a closed stream behind."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup(level: str | None = None) -> None:
    """Log to stderr with secrets masked; BACKOUT_LOG_LEVEL sets the level (default INFO)."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets_from_env(dict(os.environ))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("BACKOUT_LOG_LEVEL", "INFO").upper())
