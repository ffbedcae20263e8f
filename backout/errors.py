"""The exceptions backout raises. Each carries the exit status the CLI uses (0 done, 1 failed, 2 bad input)."""

from __future__ import annotations


class BackoutError(Exception):
    """Something failed while doing the work (exit status 1)."""

    exit_code = 1


class BadInput(BackoutError):
    """The request cannot be carried out as given; nothing was changed (exit status 2)."""

    exit_code = 2


class ConfigError(BadInput):
    """A setting is missing or malformed. The message names the variable and the expected form."""

    def __init__(self, variable: str, problem: str, expected: str) -> None:
        self.variable = variable
        self.problem = problem
        self.expected = expected
        super().__init__(f"{variable} {problem}; expected {expected}")


class PlanRefused(BadInput):
    """A rollback plan cannot be completed, so nothing was done."""


class PolicyViolation(BackoutError):
    """The pending migrations break BACKOUT_REQUIRE (backout.verdict.policy): exit status 1."""


class HerokuAPIError(BackoutError):
    """An error answer from the Heroku Platform or Data API, with Heroku's `id` and `message`."""

    def __init__(self, status: int, error_id: str, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.id = error_id
        self.message = message
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"Heroku API {status} {error_id}: {message}{where}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
