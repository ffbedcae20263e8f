"""backout: make Heroku deploys undoable."""

__version__ = "0.1.0"

from typing import Any

__all__ = ["enqueue_rollback"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import backout` (and `backout --help`) stays light.
    if name == "enqueue_rollback":
        from backout.rollback.enqueue import enqueue_rollback

        return enqueue_rollback
    raise AttributeError(f"module 'backout' has no attribute {name!r}")
