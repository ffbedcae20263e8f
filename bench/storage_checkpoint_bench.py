"""Durable checkpoint benchmark: `backout release` checkpointing to object storage, against the same
checkpoint to local disk and against bare `pg_dump -Fc`, in the same run, paired (A/B/C, A/B/C...).

The database is the benchmarks' realistic data (bench.data: random-word text, jsonb, uuids,
indexes; built once, kept with --keep). Storage is a real S3 HTTP endpoint on loopback (moto's
standalone server, `backout_sandbox.s3`), so the upload's HTTP, multipart and hashing costs are
all there; a network to AWS adds its own bandwidth. Every contender is a whole process timed
under GNU time for its peak memory. Prints medians with min and max, the paired ratio storage /
local disk (target at most 1.15x), the peak memory of the checkpoint (target under 200 MB
whatever the size), the machine and its load.

    .venv/bin/python bench/storage_checkpoint_bench.py [--size-mb 600] [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.backups.libpq import client_args, program  # noqa: E402
from backout.output import human_bytes, table  # noqa: E402
from backout.storage import config  # noqa: E402
from backout.storage.client import make_client  # noqa: E402
from backout_sandbox.s3 import LocalS3  # noqa: E402
from bench.data import built, name_for  # noqa: E402
from bench.timing import Contender, Run, fsynced, machine, pair, processes  # noqa: E402
from tests.support import drop_database  # noqa: E402

BACKOUT = str(Path(sys.executable).with_name("backout"))
BUCKET = "bench-archives"


def contenders(url: str, work: Path, s3: LocalS3) -> list[Contender]:
    conninfo, env = client_args(url)
    version = itertools.count(int(time.time()))  # a release the ledger has not seen
    local_dir, fc_file = work / "local", work / "fc.dump"
    client = make_client(config.load(s3.env().get))
    client.create_bucket(Bucket=BUCKET)

    def release(extra: dict[str, str]) -> Run:
        hook_env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "HEROKU_", "REDIS", "AWS_"))}
        hook_env.update(DATABASE_URL=url, HEROKU_APP_NAME="bench", HEROKU_RELEASE_VERSION=f"v{next(version)}",
                        BACKOUT_BACKUP="pg_dump", BACKOUT_MIGRATIONS="none", **extra)
        return processes([BACKOUT, "release"], env=hook_env)

    def to_storage() -> Run:
        run = release({**s3.env(), "BACKOUT_STORAGE_URL": f"s3://{BUCKET}/checkpoints"})
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        run.facts["size"] = max(item["Size"] for page in pages for item in page.get("Contents") or [])
        return run

    def to_disk() -> Run:
        run = release({"BACKOUT_BACKUP_DIR": str(local_dir)})
        [archive] = list(local_dir.glob("*.dump.zst"))
        run.facts["size"] = archive.stat().st_size
        return run

    def fc() -> Run:
        run = processes([program("pg_dump"), "-Fc", "--exclude-schema=backout", "-f", str(fc_file), f"--dbname={conninfo}"],
                        env=env)
        return fsynced(run, fc_file)

    def clear() -> None:
        for path in [*local_dir.glob("*"), fc_file]:
            path.unlink(missing_ok=True)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in [i for page in pages for i in page.get("Contents") or []]:
            client.delete_object(Bucket=BUCKET, Key=item["Key"])

    return [Contender("checkpoint to S3", to_storage, clear), Contender("checkpoint to disk", to_disk, clear),
            Contender("pg_dump -Fc", fc, clear)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=600, help="database size in MB (default 600, shared with the other benchmarks)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the built database for the next run")
    args = parser.parse_args()
    [(_, url)] = built(str(args.size_mb))
    try:
        with tempfile.TemporaryDirectory(prefix="backout-bench-") as tmp, LocalS3(log=Path(tmp) / "s3.log") as s3:
            cs = contenders(url, Path(tmp), s3)
            pair(cs, args.rounds)
            facts = machine(url)
    finally:
        if not args.keep:
            drop_database(name_for(args.size_mb))
    stored, disk, fc = cs
    ratios = [a.seconds / b.seconds for a, b in zip(stored.runs, disk.runs)]
    print()
    print("\n".join(facts))
    print(table(["what", "time, median (min-max)", "archive", "peak memory"],
                [[c.name, c.spread(), human_bytes(c.runs[-1].facts["size"]), human_bytes(c.peak())] for c in cs]))
    print(f"to S3 / to disk, paired: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max "
          f"{max(ratios):.2f}x), target at most 1.15x; peak memory of the S3 checkpoint {human_bytes(stored.peak())}, "
          "target under 200 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
