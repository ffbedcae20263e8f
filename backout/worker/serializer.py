"""JSON on the queue: job arguments are ids and plain values that anyone can read in Redis.

RQ's default serializer is pickle, and unpickling runs code; with JSON a job in Redis is data.
`check_arguments` refuses, before anything is enqueued, an argument that JSON would not carry
back unchanged or that contains a secret (a token or a database password must never sit in Redis).
"""

from __future__ import annotations

from typing import Any, Iterable

from rq.serializers import JSONSerializer

from backout.redact import redact

SERIALIZER = JSONSerializer


def check_arguments(args: Iterable[Any], secrets: Iterable[str] = ()) -> None:
    """Raise ValueError when an argument is not a plain JSON value or holds a secret."""
    secrets = list(secrets)
    for value in args:
        _check(value, secrets)


def _check(value: Any, secrets: list[str]) -> None:
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if redact(value, secrets) != value:
            raise ValueError("a job argument contains a secret; pass an id and let the job read the secret")
        return
    if isinstance(value, list):
        for item in value:
            _check(item, secrets)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"job argument keys must be strings, not {type(key).__name__}")
            _check(key, secrets)
            _check(item, secrets)
        return
    raise ValueError(f"job arguments must be JSON values (ids and plain values), not {type(value).__name__}")
