"""Routes: a method and a path pattern with `{name}` parameters, and the handler that serves them.

A parameter matches one path segment; `{name:path}` matches the rest of the path (slashes too),
`{name:int}` digits only, `{name:sha}` a full git object id. Patterns match the path as sent and
each parameter is decoded on its own, so `%2F` stays inside its segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote

from backout_sandbox.core.messages import Refused, Response

Handler = Callable[..., Response]

KINDS = {"": "[^/]+", "path": ".+", "int": r"\d+", "sha": "[0-9a-f]{40}"}
_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass
class Route:
    method: str
    pattern: str  # /apps/{app}/releases/{release}
    handler: Handler
    schema_href: str | None = None  # the official schema link this route implements
    public: bool = False  # no token: signed URLs and sandbox-only pages
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = _PARAMETER.split(self.pattern)
        regex = []
        for i in range(0, len(parts), 3):
            regex.append(re.escape(parts[i]))
            if i + 1 < len(parts):
                regex.append(f"(?P<{parts[i + 1]}>{KINDS[parts[i + 2] or '']})")
        self.regex = re.compile("".join(regex))


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, schema_href: str | None = None,
            public: bool = False) -> None:
        self.routes.append(Route(method, pattern, handler, schema_href, public))

    def route(self, method: str, pattern: str, schema_href: str | None = None,
              public: bool = False) -> Callable[[Handler], Handler]:
        """`add` as a decorator: `@router.route("GET", "/apps/{app}")` over the handler."""
        def wrap(handler: Handler) -> Handler:
            self.add(method, pattern, handler, schema_href, public)
            return handler
        return wrap

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The first route for `method` whose pattern matches `path` (as sent), and its decoded
        parameters. Refused "method_not_allowed" when only other methods serve the path, else "no_route"."""
        other_methods = False
        for route in self.routes:
            found = route.regex.fullmatch(path)
            if found:
                if route.method == method:
                    return route, {name: unquote(value) for name, value in found.groupdict().items()}
                other_methods = True
        if other_methods:
            raise Refused("method_not_allowed", f"{method} is not allowed on {unquote(path)}.")
        raise Refused("no_route", f"No route serves {method} {unquote(path)}.")
