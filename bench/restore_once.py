"""One whole restore process, as the worker runs it: the checkpoint's archive restored beside the
live database (database mode), verified, swapped in. For bench/restore_bench.py. Prints when the
swap began and ended (time.monotonic(), the same clock in every process), read off the restore's
own progress lines.

    python bench/restore_once.py LIVE_URL BACKUP_JSON WORK_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.rollback.database import stream, swap  # noqa: E402

CHECKPOINT = "cp_bench"


def main(url: str, backup_json: str, work: str) -> int:
    backup = json.loads(Path(backup_json).read_text())
    toc = stream.read_toc(Path(backup["path"]))
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        if "verified; swapping" in line:
            marks["swap_began"] = time.monotonic()
        elif "is the restored copy" in line:
            marks["swap_ended"] = time.monotonic()

    swap.Restore(url, backup, CHECKPOINT, "b3nch000", progress, Path(work)).run("database", toc)
    print(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
