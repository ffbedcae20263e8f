"""The fault suite's scaffolding: each test injects one fault several times and counts the tries
in which backout held.

`scripts/test tests/faults --repeat 20` makes every test try its fault 20 times; without
`--repeat` each test makes its own small count, which keeps the suite short enough for CI. The
summary has a line per test: `tried N, held N`.
"""

from __future__ import annotations

import traceback
from typing import Callable

import pytest

from tests.rollback.conftest import shop  # noqa: F401 - the sandbox app `shop`, a fixture here too


class Trials:
    """Runs one trial of a fault again and again; a trial holds when it returns without raising."""

    def __init__(self, node: pytest.Item, repeat: int | None) -> None:
        self._node = node
        self._repeat = repeat

    def run(self, trial: Callable[[int], None], default: int = 2) -> None:
        """Call `trial(i)` for each try, then fail the test with the first try that did not hold."""
        count = self._repeat or default
        held = 0
        first: BaseException | None = None
        for i in range(count):
            try:
                trial(i)
            except Exception as exc:  # noqa: BLE001 - a try that did not hold is counted, then reported
                first = first or exc
                continue
            held += 1
        self._node.user_properties.append(("fault", f"tried {count}, held {held}"))
        if first is not None:
            raise AssertionError(f"held {held} of {count} tries; the first that did not hold:\n"
                                 + "".join(traceback.format_exception(first))) from first


@pytest.fixture
def trials(request: pytest.FixtureRequest) -> Trials:
    return Trials(request.node, request.config.getoption("--repeat"))
