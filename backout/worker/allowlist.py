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


def refusal(job: Job) -> str | None:
    """Why the worker must not run `job`, or None when it is one of backout's own.

    Checked before RQ's machinery touches the job, because a refused job must also fire none of
    what RQ does around a job: callbacks, RQ webhooks (an HTTP request to any URL the job names,
    with its traceback) and the worker's exception handlers (Sentry).
    """
    try:
        func_name, instance = job.func_name, job.instance
    except Exception as exc:  # noqa: BLE001 - a pickle or garbage: whatever it is, it does not run
        return f"refused a job that is not backout's JSON ({type(exc).__name__})"
    if instance is not None:
        return f"refused to run a method of {type(instance).__name__}: only plain job functions run"
    for name in (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name):
        if name:
            return f"refused job with callback {name!r}: backout jobs take no callbacks"
    if job.webhooks:
        return "refused job with RQ webhooks: backout jobs send none"
    try:
        resolve(func_name)
    except JobRefused as exc:
        return str(exc)
    return None


class AllowlistedJob(Job):
    """An RQ job that runs only allowlisted functions and ignores foreign callbacks and webhooks."""

    @property
    def func(self) -> Callable[..., Any]:
        reason = refusal(self)
        if reason is not None:
            log.error("job %s from queue %s: %s", self.id, self.origin, reason)
            raise JobRefused(reason)
        return resolve(self.func_name)

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        """backout's jobs carry no webhooks; a crafted one's are never sent."""

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
