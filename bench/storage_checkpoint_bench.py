"""Durable checkpoint benchmark: a pg_dump checkpoint to object storage against the same checkpoint
to local disk and against bare `pg_dump -Fc`, in the same run, paired (A/B/C, A/B/C, ...).

The database is checkpoint_bench's realistic data (random-word text, jsonb, uuids, indexes; built
once, kept with --keep). Storage is a real S3 HTTP endpoint on loopback (moto's standalone server,
`backout_sandbox.s3`), so the upload's HTTP, multipart and hashing costs are all there; a network
to AWS adds its own bandwidth on top. Each checkpoint runs in a process of its own (the whole
process is timed) that reports its peak resident memory: pg_dump is a child with its own memory,
the same in every variant, and is left out. Prints medians with min and max, the ratio storage /
local disk (target at most 1.15x) and the peak memory of the checkpoint process (target under
200 MB whatever the size), with the machine and its load.

    .venv/bin/python bench/storage_checkpoint_bench.py [--size-mb 520] [--pairs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.output import human_bytes, table  # noqa: E402
from backout_sandbox.s3 import LocalS3  # noqa: E402
from bench.checkpoint_bench import bare_pg_dump, ensure_built, machine  # noqa: E402
from tests.support import drop_database  # noqa: E402

DATABASE = "backout_bench_storage"


def child(kind: str, url: str, work: str) -> None:
    """One checkpoint, in this process; prints {"size", "maxrss"} as JSON."""
    from backout import checkpoint, ledger
    from backout import settings as settings_module

    env = {"DATABASE_URL": url, "HEROKU_APP_NAME": "bench-app", "HEROKU_RELEASE_VERSION": "v1",
           "BACKOUT_BACKUP": "pg_dump", "BACKOUT_BACKUP_DIR": str(Path(work) / "backups"), "BACKOUT_MIGRATIONS": "none"}
    if kind == "storage":
        env.update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "BACKOUT_S3", "BACKOUT_STORAGE"))})
    settings = settings_module.load(env)
    with ledger.connect(url) as conn:
        cp = checkpoint.take(settings, conn, checkpoint.Release(version=1, commit="bench"))
    print(json.dumps({"size": cp["backup"]["size"], "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_child(kind: str, url: str, work: Path, env: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", kind, url, str(work)], env=env, capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], unit: str = "s") -> str:
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=520)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the built database for the next run")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "URL", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    url = ensure_built(DATABASE, args.size_mb)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"storage": [], "local": [], "bare": []}
    memory: dict[str, list[int]] = {"storage": [], "local": []}
    sizes: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="backout-bench-") as tmp, LocalS3(log=Path(tmp) / "s3.log") as s3:
            work = Path(tmp)
            env = {**os.environ, **s3.env(), "BACKOUT_STORAGE_URL": "s3://bench-archives/checkpoints"}
            from backout.storage import config
            from backout.storage.client import make_client

            make_client(config.load(env.get)).create_bucket(Bucket="bench-archives")
            for pair in range(args.pairs):
                for kind in ("storage", "local"):
                    seconds, out = run_child(kind, url, work, env)
                    times[kind].append(seconds)
                    memory[kind].append(out["maxrss"])
                    sizes[kind] = out["size"]
                    for path in (work / "backups").glob("*"):
                        path.unlink()
                started = time.perf_counter()
                sizes["bare"] = bare_pg_dump(url, work / "bare.dump", "-Fc")
                times["bare"].append(time.perf_counter() - started)
                (work / "bare.dump").unlink()
                print(f"pair {pair + 1}: storage {times['storage'][-1]:.2f}s, local {times['local'][-1]:.2f}s, "
                      f"pg_dump -Fc {times['bare'][-1]:.2f}s", flush=True)
    finally:
        if not args.keep:
            drop_database(DATABASE)
    ratio = [s / l for s, l in zip(times["storage"], times["local"])]
    print()
    for line in machine(url) if args.keep else []:
        print(line)
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(table(["what", "time, median (min-max)", "size", "peak memory of the checkpoint process"], [
        ["checkpoint to S3 (loopback)", spread(times["storage"]), human_bytes(sizes["storage"]),
         human_bytes(max(memory["storage"]))],
        ["checkpoint to local disk", spread(times["local"]), human_bytes(sizes["local"]), human_bytes(max(memory["local"]))],
        ["pg_dump -Fc", spread(times["bare"]), human_bytes(sizes["bare"]), "-"],
    ]))
    print(f"storage / local disk, paired: median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x, "
          f"max {max(ratio):.2f}x); target at most 1.15x; peak memory target under 200 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
