"""BACKOUT_REQUIRE: the verdicts a team accepts, enforced by `backout check` (exit 1) and by the
release phase (the release fails before its migrations run).

- `reversible`: every migration the previous code cannot run on has a down script (a release
  whose verdict is irreversible is refused);
- `expand-only`: the previous code runs on the new schema (only code-only rollback safe passes).
"""

from __future__ import annotations

from backout.errors import PolicyViolation
from backout.verdict.verdict import CODE_ONLY, IRREVERSIBLE, Verdict


def violation(verdict: Verdict, require: str | None) -> str | None:
    """Why `verdict` breaks the policy `require`, or None when it does not (or there is none)."""
    if require == "expand-only" and verdict.kind != CODE_ONLY:
        return f"BACKOUT_REQUIRE=expand-only, but the verdict is {verdict.text}: {verdict.reason}"
    if require == "reversible" and verdict.kind == IRREVERSIBLE:
        return f"BACKOUT_REQUIRE=reversible, but the verdict is {verdict.text}: {verdict.reason}"
    return None


def enforce(verdict: Verdict, require: str | None) -> None:
    """Raise PolicyViolation when `verdict` breaks `require`."""
    problem = violation(verdict, require)
    if problem:
        raise PolicyViolation(problem)
