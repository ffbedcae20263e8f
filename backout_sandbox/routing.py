"""The Heroku APIs' conventions on the shared core: Heroku-style errors and Range pagination."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from backout_sandbox.core.messages import HttpError, Refused, Response


class ApiError(HttpError):
    """An error answer in Heroku's shape: `{"id": ..., "message": ...}` with an HTTP status."""

    def __init__(self, status: int, error_id: str, message: str, headers: Mapping[str, str] | None = None,
                 resource: str | None = None) -> None:
        body = {"id": error_id, "message": message}
        if resource:
            body["resource"] = resource
        super().__init__(status, body, headers)
        self.id = error_id
        self.message = message
        self.resource = resource


def not_found(what: str) -> ApiError:
    """Heroku's 404: `{"resource": "app", "id": "not_found", "message": "Couldn't find that app."}`."""
    return ApiError(404, "not_found", f"Couldn't find that {what}.", resource=what.replace(" ", "-").replace("add-on", "addon"))


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


def refusal(refused: Refused) -> ApiError:
    """What Heroku answers where the core refuses a request."""
    if refused.kind == "not_json":
        return ApiError(400, "bad_request", refused.message)
    if refused.kind == "not_object":
        return invalid(refused.message)
    if refused.kind == "method_not_allowed":
        return ApiError(405, "method_not_allowed", refused.message)
    return ApiError(404, "not_found", "The requested API endpoint was not found. Are you using the right HTTP verb "
                    "(i.e. `GET` vs. `POST`), and did you specify your intended version with the `Accept` header?")


# --- Range pagination --------------------------------------------------------------------------
# Heroku pages lists with `Range: version ..; order=desc, max=10`; a partial answer is 206 with
# `Next-Range: version ]42..; order=desc, max=10` naming where the next page starts.

DEFAULT_MAX = 200
LIMIT_MAX = 1000
_RANGE = re.compile(r"^\s*(?P<field>\w+)\s+(?P<open>[\[\]]?)(?P<start>[^.;\s]*)\.\.(?P<end>[^;\s]*)\s*(?:;(?P<opts>.*))?$")


@dataclass
class Range:
    field: str
    start: str | None = None
    exclusive: bool = False
    end: str | None = None
    order: str = "asc"
    max: int = DEFAULT_MAX


def parse_range(header: str | None, fields: Sequence[str]) -> Range:
    if not header:
        return Range(fields[0])
    found = _RANGE.match(header)
    if not found:
        raise ApiError(400, "bad_request", f"Range header {header!r} is malformed; expected e.g. "
                       f"`{fields[0]} ..; order=desc, max=10`.")
    if found["field"] not in fields:
        raise ApiError(400, "bad_request", f"Range by {found['field']!r} is not supported here; "
                       f"use one of: {', '.join(fields)}.")
    result = Range(found["field"], found["start"] or None, found["open"] == "]", found["end"] or None)
    for option in (found["opts"] or "").split(","):
        key, _, value = option.strip().partition("=")
        if not key:
            continue
        if key == "order" and value in ("asc", "desc"):
            result.order = value
        elif key == "max" and value.isdigit() and int(value) >= 1:
            result.max = min(int(value), LIMIT_MAX)
        else:
            raise ApiError(400, "bad_request", f"Range option {option.strip()!r} is invalid; "
                           "use order=asc|desc and max=1..1000.")
    return result


def paginate(items: Sequence[dict[str, Any]], header: str | None, fields: Sequence[str]) -> Response:
    """The page of `items` the Range header asks for: 200 when it is the rest, else 206 with Next-Range."""
    wanted = parse_range(header, fields)
    kind = type(items[0][wanted.field]) if items else str

    def value(text: str) -> Any:
        if kind is int:
            if not text.lstrip("v").isdigit():
                raise ApiError(400, "bad_request", f"Range value {text!r} is not a {wanted.field}.")
            return int(text.lstrip("v"))
        return text

    descending = wanted.order == "desc"
    ordered = sorted(items, key=lambda item: item[wanted.field], reverse=descending)
    if wanted.start is not None:
        start = value(wanted.start)
        if descending:
            ordered = [i for i in ordered if i[wanted.field] < start or (i[wanted.field] == start and not wanted.exclusive)]
        else:
            ordered = [i for i in ordered if i[wanted.field] > start or (i[wanted.field] == start and not wanted.exclusive)]
    if wanted.end is not None:
        end = value(wanted.end)
        ordered = [i for i in ordered if (i[wanted.field] >= end if descending else i[wanted.field] <= end)]
    page = ordered[: wanted.max]
    headers = {"Accept-Ranges": ", ".join(fields)}
    if page:
        headers["Content-Range"] = f"{wanted.field} {page[0][wanted.field]}..{page[-1][wanted.field]}"
    if len(ordered) > wanted.max:
        headers["Next-Range"] = f"{wanted.field} ]{page[-1][wanted.field]}..; order={wanted.order}, max={wanted.max}"
        return Response(206, page, headers)
    return Response(200, page, headers)
