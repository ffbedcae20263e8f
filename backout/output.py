"""What people read: progress lines with elapsed time, tables, and stable JSON documents."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, Sequence, TextIO


class Progress:
    """Progress lines with the time elapsed since start: `[   4.2s] dumping: 120.0 MB`."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "backout") -> None:
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        self.stream.write(f"{self.prefix} [{self.elapsed:7.1f}s] {message}\n")
        self.stream.flush()


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def dump_json(document: Any, stream: TextIO | None = None) -> None:
    """One JSON document, keys sorted so the output is stable."""
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
