"""Restore benchmark: our restore of a pg_dump checkpoint against bare pg_restore of the same archive,
and the downtime the app sees during it against an in-place `--clean` restore.

Builds (or reuses, with --keep) a database of at least --size-mb MB of realistic data with
`bench/checkpoint_bench.py`'s generator (random-word text, jsonb, uuids, indexes), takes a
backout pg_dump checkpoint archive of it (`<id>.dump.zst`), then, in the same run:

  restore time, each into a fresh empty database:
  - bare `zstd -dc | pg_restore -j1` (streamed) and bare `zstd -d` then `pg_restore -j2` (the
    archive is zstd-compressed, so a bare restore decompresses it first), also timed without
    the decompression;
  - ours, database mode (`backout.rollback.database.swap`, restore into a new database beside the
    live one, verify every table's row count against the archive, swap the names), with the app
    connected to the live database;
  - ours, schema mode (the ledger living in the app's database: one transaction into new
    schemas, verify, swap the schema names).

  downtime the app sees: in another run of each, a probe connects and runs a primary-key lookup
  every 10 ms throughout; the downtime is the longest time between two successful probes while
  the restore runs. The same for bare `pg_restore --clean --if-exists --single-transaction` into
  the live database (in place). (Restore times come from runs without the probe, which costs CPU.)

Prints the table with the machine. Targets: ours at most 1.10x the best bare pg_restore of the same
archive; at most 1 s of downtime.

    .venv/bin/python bench/restore_bench.py [--size-mb 520] [--repeat 1] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_bench import ensure_built, machine, timed  # noqa: E402

from backout.backups import pg_dump
from backout.backups.libpq import client_args
from backout.output import human_bytes, table
from backout.rollback.database import stream, swap
from tests.support import SERVER_URL, database_url, drop_database  # noqa: E402

SOURCE = "backout_bench_restore_src"
LIVE = "backout_bench_restore_live"
TARGET = "backout_bench_restore_bare"
PROBE_EVERY = 0.01


class Probe(threading.Thread):
    """The app: connect, look a row up by primary key, disconnect; every 10 ms."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.successes: list[float] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as conn:
                    conn.execute("SELECT email FROM accounts WHERE id = 4242").fetchone()
                self.successes.append(time.monotonic())
            except psycopg.Error:
                self.failures += 1
            time.sleep(PROBE_EVERY)

    def downtime(self, start: float, end: float) -> float:
        """The longest time without a successful probe between start and end."""
        marks = [start] + [t for t in self.successes if start < t < end] + [end]
        return max(b - a for a, b in zip(marks, marks[1:]))


def fresh(name: str, template: str | None = None) -> str:
    drop_database(name)
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return database_url(name)


def bare_stream(archive: Path, url: str) -> None:
    conninfo, env = client_args(url)
    unzstd = subprocess.Popen(["zstd", "-dcq", str(archive)], stdout=subprocess.PIPE)
    subprocess.run(["pg_restore", "--exit-on-error", f"--dbname={conninfo}"], stdin=unzstd.stdout, env=env, check=True)
    unzstd.stdout.close()
    assert unzstd.wait() == 0


def bare_file(plain: Path, url: str, jobs: int, *extra: str) -> None:
    conninfo, env = client_args(url)
    subprocess.run(["pg_restore", "--exit-on-error", f"--jobs={jobs}", *extra, f"--dbname={conninfo}", str(plain)],
                   env=env, check=True)


def ours(backup: dict, mode: str, work: Path, probed: bool) -> tuple[float, float | None, dict]:
    """Our restore into a copy of the source: (seconds, downtime the probing app saw, result). The
    probe costs CPU (a connection every 10 ms), so restore times are taken without it."""
    url = fresh(LIVE, SOURCE)
    probe = Probe(url) if probed else None
    if probe:
        probe.start()
        time.sleep(0.3)
    toc = stream.read_toc(Path(backup["path"]))
    started = time.monotonic()
    result = swap.Restore(url, backup, "cp_bench", "b3nch000", lambda line: None, work).run(mode, toc)
    ended = time.monotonic()
    downtime = None
    if probe:
        time.sleep(0.3)
        probe.halt.set()
        probe.join()
        downtime = probe.downtime(started, ended)
    if mode == "database":
        drop_database(result["kept"]["database"])
    return ended - started, downtime, result


def in_place(plain: Path) -> tuple[float, float]:
    url = fresh(LIVE, SOURCE)
    probe = Probe(url)
    probe.start()
    time.sleep(0.3)
    started = time.monotonic()
    bare_file(plain, url, 1, "--clean", "--if-exists", "--single-transaction")
    ended = time.monotonic()
    time.sleep(0.3)
    probe.halt.set()
    probe.join()
    return ended - started, probe.downtime(started, ended)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=520, help="database size to build (default 520)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each restore; the best counts (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the source database for the next run")
    parser.add_argument("--dir", help="where the archives go (default a temporary directory)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="backout-restore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = ensure_built(SOURCE, args.size_mb)
    try:
        return run(source, work, args)
    finally:
        for name in (LIVE, TARGET):
            drop_database(name)
        if not args.keep:
            drop_database(SOURCE)
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


def run(source: str, work: Path, args: argparse.Namespace) -> int:
    archive = work / "cp_bench.dump.zst"
    archive.unlink(missing_ok=True)
    backup = pg_dump.dump(source, archive)
    plain = work / "plain.dump"
    print(f"archive: {human_bytes(backup['size'])} zstd of {human_bytes(backup['dump_size'])}", flush=True)

    times: dict[str, list[float]] = {k: [] for k in ("stream", "j1", "j2", "unzstd", "db", "schema")}
    downtimes: dict[str, list[float]] = {"db": [], "schema": [], "in-place": []}
    details: dict[str, dict] = {}
    for attempt in range(args.repeat):
        times["unzstd"].append(timed(lambda: subprocess.run(["zstd", "-dqf", str(archive), "-o", str(plain)], check=True)))
        times["stream"].append(timed(lambda: bare_stream(archive, fresh(TARGET))))
        times["j1"].append(timed(lambda: bare_file(plain, fresh(TARGET), 1)))
        times["j2"].append(timed(lambda: bare_file(plain, fresh(TARGET), 2)))
        for mode, key in (("database", "db"), ("schema", "schema")):
            seconds, _, details[key] = ours(backup, mode, work / "restore", probed=False)
            times[key].append(seconds)
            downtimes[key].append(ours(backup, mode, work / "restore", probed=True)[1])
        seconds, downtime = in_place(plain)
        times.setdefault("in-place", []).append(seconds)
        downtimes["in-place"].append(downtime)
        print(f"  run {attempt + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    best = {k: min(v) for k, v in times.items()}
    unzstd = best["unzstd"]
    bare = {"zstd -dc | pg_restore -j1": best["stream"], "zstd -d, pg_restore -j1": unzstd + best["j1"],
            "zstd -d, pg_restore -j2": unzstd + best["j2"]}
    best_bare_name = min(bare, key=bare.get)
    best_bare = bare[best_bare_name]
    best_restore_only = min(best["j1"], best["j2"])
    rows = [[name, f"{seconds:.2f}", f"{seconds / best_bare:.2f}x", f"{seconds / best_restore_only:.2f}x", "-"]
            for name, seconds in bare.items()]
    rows += [[f"pg_restore -j{j} alone (already decompressed)", f"{best[f'j{j}']:.2f}",
              f"{best[f'j{j}'] / best_bare:.2f}x", f"{best[f'j{j}'] / best_restore_only:.2f}x", "-"] for j in (1, 2)]
    jobs = details["db"].get("jobs")
    rows.append([f"ours: database swap (pg_restore -j{jobs}, verify, swap)", f"{best['db']:.2f}",
                 f"{best['db'] / best_bare:.2f}x", f"{best['db'] / best_restore_only:.2f}x",
                 f"{min(downtimes['db']):.3f}s"])
    rows.append(["ours: schema swap (one transaction, verify, swap)", f"{best['schema']:.2f}",
                 f"{best['schema'] / best_bare:.2f}x", f"{best['schema'] / best_restore_only:.2f}x",
                 f"{min(downtimes['schema']):.3f}s"])
    rows.append(["bare pg_restore --clean --single-transaction, in place", f"{best['in-place']:.2f}",
                 f"{best['in-place'] / best_bare:.2f}x", f"{best['in-place'] / best_restore_only:.2f}x",
                 f"{min(downtimes['in-place']):.3f}s"])
    print()
    for line in machine(source):
        print(line)
    print(f"archive: {human_bytes(backup['size'])} zstd of {human_bytes(backup['dump_size'])} pg_dump -Fc -Z0; "
          f"best of {args.repeat} run(s)")
    print()
    print(table(["RESTORE", "SECONDS", f"VS BEST BARE ({best_bare_name})", "VS PG_RESTORE ALONE", "APP DOWNTIME"], rows))
    print()
    ratio = best["db"] / best_bare
    print(f"target: ours at most 1.10x the best bare restore of the same archive: {ratio:.2f}x "
          f"({'met' if ratio <= 1.10 else 'missed'}); against pg_restore alone on a decompressed copy: "
          f"{best['db'] / best_restore_only:.2f}x")
    down = max(min(downtimes["db"]), min(downtimes["schema"]))
    print(f"target: at most 1 s without a usable database: {down:.3f}s ({'met' if down <= 1.0 else 'missed'}); "
          f"in place: {min(downtimes['in-place']):.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
