"""One whole restore process, as the worker runs it: the checkpoint's archive restored beside the
live database (database mode), verified, swapped in. For bench/restore_bench.py.

    python bench/restore_once.py LIVE_URL BACKUP_JSON WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.rollback.database import stream, swap  # noqa: E402

CHECKPOINT = "cp_bench"


def main(url: str, backup_json: str, work: str) -> int:
    backup = json.loads(Path(backup_json).read_text())
    toc = stream.read_toc(Path(backup["path"]))
    swap.Restore(url, backup, CHECKPOINT, "b3nch000", lambda line: None, Path(work)).run("database", toc)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
