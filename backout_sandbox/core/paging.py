"""The two ways the APIs page a list: Heroku's `Range` header and GitHub's `page` query and `Link` header."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlencode

from backout_sandbox.core.messages import Refused, Request, Response

# --- Heroku: Range -----------------------------------------------------------------------------
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
        raise Refused("bad_range", f"Range header {header!r} is malformed; expected e.g. "
                      f"`{fields[0]} ..; order=desc, max=10`.")
    if found["field"] not in fields:
        raise Refused("bad_range", f"Range by {found['field']!r} is not supported here; "
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
            raise Refused("bad_range", f"Range option {option.strip()!r} is invalid; "
                          "use order=asc|desc and max=1..1000.")
    return result


def paginate(items: Sequence[dict[str, Any]], header: str | None, fields: Sequence[str]) -> Response:
    """The page of `items` the Range header asks for: 200 when it is the rest, else 206 with Next-Range."""
    wanted = parse_range(header, fields)
    kind = type(items[0][wanted.field]) if items else str

    def value(text: str) -> Any:
        if kind is int:
            if not text.lstrip("v").isdigit():
                raise Refused("bad_range", f"Range value {text!r} is not a {wanted.field}.")
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


# --- GitHub: page numbers and Link --------------------------------------------------------------
# GitHub pages lists with `?per_page=30&page=2` (at most 100 a page) and names the neighbouring
# pages in `Link: <...?page=3>; rel="next", <...?page=5>; rel="last"`.

PER_PAGE = 30
PER_PAGE_MAX = 100


def link_page(items: Sequence[Any], req: Request) -> Response:
    """The page of `items` that `req`'s `page` and `per_page` ask for, with a Link header to the others."""
    try:
        per_page = max(1, min(PER_PAGE_MAX, int(req.param("per_page") or PER_PAGE)))
        page = max(1, int(req.param("page") or 1))
    except ValueError:
        raise Refused("bad_page", "Invalid pagination parameters") from None
    last = max(1, -(-len(items) // per_page))
    chunk = list(items[(page - 1) * per_page: page * per_page])

    def link(number: int, rel: str) -> str:
        query = {k: v[0] for k, v in req.query.items()}
        query.update(per_page=str(per_page), page=str(number))
        return f'<{req.base_url}{req.raw_path}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page > 1:
        links += [link(page - 1, "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    return Response(200, chunk, {"Link": ", ".join(links)} if links else {})
