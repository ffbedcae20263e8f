"""Only backout's own job functions run in the worker.

RQ turns a job's `func_name` (and its callback names) into a callable with `import_attribute`,
which imports whatever dotted name the Redis hash holds. Anyone who can write to the queue's
Redis could otherwise make the worker call `os.system`. `AllowlistedJob` is the worker's job
class: it resolves a name only when it is a public function defined in a module under
`backout.jobs.`, and refuses (and logs) anything else, so the job fails without running.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from typing import Any, Callable

from rq.job import Job

log = logging.getLogger(__name__)

PREFIX = "backout.jobs."
# module.function directly under backout.jobs: no private names, no attribute chains.
_NAME = re.compile(r"backout\.jobs\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


class JobRefused(Exception):
    """A job named a function outside backout's own jobs; it was not run."""


def resolve(func_name: str | None) -> Callable[..., Any]:
    """The job function named `func_name`, or JobRefused when it is not one of backout's jobs."""
    if not isinstance(func_name, str) or not _NAME.fullmatch(func_name):
        raise JobRefused(f"refused to run {func_name!r}: only functions under {PREFIX} may run")
    module_name, _, attribute = func_name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise JobRefused(f"refused to run {func_name!r}: no such job module") from None
    func = getattr(module, attribute, None)
    # The function must be defined in that module, not imported into it from elsewhere.
    if not inspect.isfunction(func) or f"{func.__module__}.{func.__qualname__}" != func_name:
        raise JobRefused(f"refused to run {func_name!r}: not a job function of {module_name}")
    return func


class AllowlistedJob(Job):
    """An RQ job that runs only allowlisted functions and ignores foreign callbacks."""

    @property
    def func(self) -> Callable[..., Any]:
        if self.instance is not None:
            self._refused(f"refused to run a method of {type(self.instance).__name__}: only plain job functions run")
        for name in (self._success_callback_name, self._failure_callback_name, self._stopped_callback_name):
            if name:
                self._refused(f"refused job with callback {name!r}: backout jobs take no callbacks")
        try:
            return resolve(self.func_name)
        except JobRefused as exc:
            self._refused(str(exc))

    def _refused(self, reason: str) -> None:
        log.error("job %s from queue %s: %s", self.id, self.origin, reason)
        raise JobRefused(reason)

    # RQ resolves callbacks with import_attribute too (even for an abandoned job, when the
    # registry is cleaned), so a foreign callback is dropped rather than imported.
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None
