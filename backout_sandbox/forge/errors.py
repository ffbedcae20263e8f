"""GitHub's error answers: `{"message", "documentation_url", "status"}`, and `errors` for validation."""

from __future__ import annotations

from typing import Any

from backout_sandbox.core.messages import HttpError, Refused

DOCS = "https://docs.github.com/rest"


class GitHubError(HttpError):
    def __init__(self, status: int, message: str, doc: str = DOCS, errors: list[dict[str, str]] | None = None) -> None:
        body: dict[str, Any] = {"message": message, "documentation_url": doc, "status": str(status)}
        if errors:
            body["errors"] = errors
        super().__init__(status, body)


def refusal(refused: Refused) -> GitHubError:
    """What GitHub answers where the core refuses a request."""
    if refused.kind in ("not_json", "not_object"):
        return GitHubError(400, "Problems parsing JSON")
    return GitHubError(404, "Not Found")
