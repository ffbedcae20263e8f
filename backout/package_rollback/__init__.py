"""Taking back a bad package release: the GitHub tag and release, PyPI, the changelog, the users.

The runbook (`backout package-rollback`, or `enqueue_package_rollback` for the worker):
1. find the last good version (`plan`), 2. delete the bad GitHub release and tag, 3. publish the
next patch version built from the good tag, 4. check PyPI and show how to yank the bad version,
5. record the rollback in the changelog and the release notes, 6. tell the users.
"""

from typing import Any

__all__ = ["enqueue_package_rollback"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the command line does not need RQ loaded to run a rollback itself.
    if name == "enqueue_package_rollback":
        from backout.package_rollback.enqueue import enqueue_package_rollback

        return enqueue_package_rollback
    raise AttributeError(name)
