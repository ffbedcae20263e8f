"""File restore benchmark: backout's `--files restore` against `s3-pit-restore` (PyPI), on the same
versioned bucket, in the same run, paired (ours, theirs, ours, theirs, ...), same final state.

A prefix of --objects objects (default 10,000) is written, the checkpoint time is recorded as a
checkpoint records it, and then a few hundred objects are changed, created and deleted (--changes
of each). Each run starts from that changed state, restores the prefix to the checkpoint time, and
is checked: every key's content equals what it was at the checkpoint, and no key is extra. The
changes are then made again (new versions) for the next run. Both tools run as whole processes
against a real S3 HTTP endpoint on loopback (moto's standalone server); ours reports its plan time
separately. Target: ours at least 3x faster, same final state.

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

BUCKET = "bench-uploads"
PREFIX = "uploads/"


def child(files_json: str) -> None:
    """Our restore as a process of its own: plan, then restore; prints the times as JSON."""
    storage = config.load(os.environ.get)
    client = make_client(storage)
    files = json.loads(files_json)
    started = time.perf_counter()
    planned = restore.plan(client, files, "cp_bench")
    plan_seconds = time.perf_counter() - started
    done = restore.restore(client, files, lambda line: None)
    print(json.dumps({"plan": plan_seconds, "changed": planned["summary"], "result": done["summary"]}))


def contents(client, pool: ThreadPoolExecutor) -> dict[str, str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents") or []}


def write(client, pool: ThreadPoolExecutor, keys: list[str], tag: str) -> None:
    list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=f"{key} {tag}".encode() * 20), keys))


def change(client, pool: ThreadPoolExecutor, n: int, changes: int, round_: int) -> None:
    write(client, pool, [f"{PREFIX}{i:06d}" for i in range(changes)], f"changed {round_}")
    list(pool.map(lambda i: client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}{i:06d}"), range(changes, 2 * changes)))
    write(client, pool, [f"{PREFIX}new-{i:06d}" for i in range(changes)], f"created {round_}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    theirs_bin = Path(sys.executable).with_name("s3-pit-restore")
    if not theirs_bin.exists():
        print("s3-pit-restore is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    ours: list[float] = []
    plans: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="backout-bench-") as tmp, LocalS3(log=Path(tmp) / "s3.log") as s3, \
            ThreadPoolExecutor(32) as pool:
        env = {**os.environ, **s3.env(), "BACKOUT_FILES": f"s3://{BUCKET}/{PREFIX}"}
        storage = config.load(env.get)
        client = make_client(storage)
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        started = time.perf_counter()
        write(client, pool, [f"{PREFIX}{i:06d}" for i in range(args.objects)], "original")
        print(f"wrote {args.objects} objects in {time.perf_counter() - started:.1f}s", flush=True)
        time.sleep(1.1)  # S3 stamps versions to the second
        files = record.record(storage, client, lambda line: None)
        at = files["locations"][0]["time"]
        expected = contents(client, pool)
        time.sleep(1.1)
        for pair in range(args.pairs):
            for who in ("ours", "theirs"):
                change(client, pool, args.objects, args.changes, pair)
                started = time.perf_counter()
                if who == "ours":
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(files)], env=env,
                                          capture_output=True, text=True, check=True)
                    ours.append(time.perf_counter() - started)
                    plans.append(json.loads(done.stdout.strip().splitlines()[-1])["plan"])
                else:
                    subprocess.run([str(theirs_bin), "-b", BUCKET, "-B", BUCKET, "-p", PREFIX, "-t", at],
                                   env=env, capture_output=True, text=True, check=True)
                    theirs.append(time.perf_counter() - started)
                now = contents(client, pool)
                # Copies get new ETags only when content differs; compare what each key holds.
                same = set(now) == set(expected) and all(
                    client.get_object(Bucket=BUCKET, Key=k)["Body"].read() == f"{k} original".encode() * 20
                    for k in list(now)[: 50] + [f"{PREFIX}{i:06d}" for i in range(2 * args.changes)])
                if not same:
                    print(f"{who}: the final state differs from the checkpoint's "
                          f"({len(set(now) ^ set(expected))} keys differ)", file=sys.stderr)
                    return 1
                time.sleep(1.1)
            print(f"pair {pair + 1}: ours {ours[-1]:.2f}s (plan {plans[-1]:.2f}s), s3-pit-restore {theirs[-1]:.2f}s",
                  flush=True)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}s ({min(values):.2f}-{max(values):.2f})"

    ratio = [t / o for o, t in zip(ours, theirs)]
    touched = 3 * args.changes
    print()
    print(f"machine: {os.cpu_count()} cores; load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"prefix of {args.objects} objects; {args.changes} changed, {args.changes} deleted, {args.changes} created "
          "since the checkpoint; same final state checked after every run")
    print(table(["tool", "time, median (min-max)", "objects/s (whole prefix)", "plan"], [
        ["backout --files restore", spread(ours), f"{args.objects / statistics.median(ours):.0f}", spread(plans)],
        ["s3-pit-restore -B same bucket", spread(theirs), f"{args.objects / statistics.median(theirs):.0f}", "-"],
    ]))
    print(f"s3-pit-restore / backout, paired: median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x, "
          f"max {max(ratio):.2f}x); target at least 3x ({touched} objects rewritten by ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
