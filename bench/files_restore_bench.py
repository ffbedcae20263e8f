"""File restore benchmark: backout's `--files restore` against `s3-pit-restore` (PyPI), in the same
run, paired (ours, theirs, ours, theirs, ...), same final state.

Each tool gets a versioned bucket of its own, prepared alike: a prefix of --objects objects (default
10,000) is written, the checkpoint time is recorded as a checkpoint records it, and then a few
hundred objects are changed, created and deleted (--changes of each). Each run starts from that
changed state, restores the prefix to the checkpoint time, and is checked: every key's content
equals what it was at the checkpoint, and no key is extra. The changes are then made again (new
versions) for the next run. (One bucket for both would time ours against the 10,000 versions
s3-pit-restore writes on every run: listing versions slows with every one of them.)

Both tools run as whole processes against a real S3 HTTP endpoint on loopback (moto's standalone
server). Ours runs as a user meets it: `plan` (what `backout rollback --files restore` shows before
the confirmation) and `restore` (the worker's step, which lists the versions again) are processes
of their own, timed apart. Target: the restore at least 3x faster than s3-pit-restore, same final
state; the plan is reported beside it.

    .venv/bin/python bench/files_restore_bench.py [--objects 10000] [--changes 300] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.files import record, restore  # noqa: E402
from backout.output import table  # noqa: E402
from backout.storage import config  # noqa: E402
from backout.storage.client import make_client  # noqa: E402
from backout_sandbox.s3 import LocalS3  # noqa: E402

BUCKETS = {"ours": "bench-uploads-ours", "theirs": "bench-uploads-theirs"}
PREFIX = "uploads/"


def child(step: str, files_json: str) -> None:
    """One step of ours as a process of its own: `plan` or `restore`."""
    storage = config.load(os.environ.get)
    client = make_client(storage)
    files = json.loads(files_json)
    if step == "plan":
        restore.plan(client, files, "cp_bench")
    else:
        restore.restore(client, files, lambda line: None)


def contents(client, pool: ThreadPoolExecutor, bucket: str) -> dict[str, str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents") or []}


def write(client, pool: ThreadPoolExecutor, bucket: str, keys: list[str], tag: str) -> None:
    list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=f"{key} {tag}".encode() * 20), keys))


def change(client, pool: ThreadPoolExecutor, bucket: str, changes: int, round_: int) -> None:
    write(client, pool, bucket, [f"{PREFIX}{i:06d}" for i in range(changes)], f"changed {round_}")
    list(pool.map(lambda i: client.delete_object(Bucket=bucket, Key=f"{PREFIX}{i:06d}"), range(changes, 2 * changes)))
    write(client, pool, bucket, [f"{PREFIX}new-{i:06d}" for i in range(changes)], f"created {round_}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    theirs_bin = Path(sys.executable).with_name("s3-pit-restore")
    if not theirs_bin.exists():
        print("s3-pit-restore is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    plans: list[float] = []
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="backout-bench-") as tmp, LocalS3(log=Path(tmp) / "s3.log") as s3, \
            ThreadPoolExecutor(32) as pool:
        base = {**os.environ, **s3.env()}
        client = make_client(config.load(base.get))
        checkpointed: dict[str, dict] = {}
        for who, bucket in BUCKETS.items():
            client.create_bucket(Bucket=bucket)
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            started = time.perf_counter()
            write(client, pool, bucket, [f"{PREFIX}{i:06d}" for i in range(args.objects)], "original")
            print(f"{who}: wrote {args.objects} objects in {time.perf_counter() - started:.1f}s", flush=True)
        time.sleep(1.1)  # S3 stamps versions to the second
        for who, bucket in BUCKETS.items():
            storage = config.load({**base, "BACKOUT_FILES": f"s3://{bucket}/{PREFIX}"}.get)
            checkpointed[who] = record.record(storage, client, lambda line: None)
        expected = contents(client, pool, BUCKETS["ours"])
        time.sleep(1.1)

        def timed(argv: list[str], env: dict[str, str]) -> float:
            started = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            return time.perf_counter() - started

        for pair in range(args.pairs):
            for who, bucket in BUCKETS.items():
                change(client, pool, bucket, args.changes, pair)
                files = checkpointed[who]
                if who == "ours":
                    env = {**base, "BACKOUT_FILES": f"s3://{bucket}/{PREFIX}"}
                    ours_argv = [sys.executable, __file__, "--child"]
                    plans.append(timed([*ours_argv, "plan", json.dumps(files)], env))
                    ours.append(timed([*ours_argv, "restore", json.dumps(files)], env))
                else:
                    at = files["locations"][0]["time"]
                    theirs.append(timed([str(theirs_bin), "-b", bucket, "-B", bucket, "-p", PREFIX, "-t", at], base))
                now = contents(client, pool, bucket)
                # Copies get new ETags only when content differs; compare what each key holds.
                same = set(now) == set(expected) and all(
                    client.get_object(Bucket=bucket, Key=k)["Body"].read() == f"{k} original".encode() * 20
                    for k in list(now)[: 50] + [f"{PREFIX}{i:06d}" for i in range(2 * args.changes)])
                if not same:
                    print(f"{who}: the final state differs from the checkpoint's "
                          f"({len(set(now) ^ set(expected))} keys differ)", file=sys.stderr)
                    return 1
                time.sleep(1.1)
            print(f"pair {pair + 1}: ours plan {plans[-1]:.2f}s, restore {ours[-1]:.2f}s; "
                  f"s3-pit-restore {theirs[-1]:.2f}s", flush=True)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}s ({min(values):.2f}-{max(values):.2f})"

    ratio = [t / o for o, t in zip(ours, theirs)]
    whole = [t / (o + p) for o, p, t in zip(ours, plans, theirs)]
    touched = 3 * args.changes
    print()
    print(f"machine: {os.cpu_count()} cores; load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"prefix of {args.objects} objects; {args.changes} changed, {args.changes} deleted, {args.changes} created "
          "since the checkpoint; same final state checked after every run")
    print(table(["tool", "restore, median (min-max)", "objects/s (whole prefix)", "plan, median (min-max)"], [
        ["backout --files restore", spread(ours), f"{args.objects / statistics.median(ours):.0f}", spread(plans)],
        ["s3-pit-restore -B same bucket", spread(theirs), f"{args.objects / statistics.median(theirs):.0f}", "-"],
    ]))
    print(f"s3-pit-restore / backout's restore, paired: median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x, "
          f"max {max(ratio):.2f}x), target at least 3x ({touched} objects rewritten by ours); with the plan: median "
          f"{statistics.median(whole):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
