"""The sandboxes' own errors (the sandbox imports nothing of backout, so it has its own)."""

from __future__ import annotations


class SandboxError(Exception):
    """Something the sandbox was asked to do failed; the message says what."""


class StartError(SandboxError):
    """The sandbox cannot start as asked (a port in use, an unreadable state file, no PostgreSQL);
    the message names the problem and the fix, and nothing was changed."""
