"""Restore benchmark: a whole backout restore of a pg_dump checkpoint (restore beside the live
database, verify, swap) against the best bare restore of the same archive, a template copy, and
the downtime the app sees.

For each size (default ~100 MB and ~600 MB of realistic data, built once by bench/data.py and kept
with --keep), it takes one checkpoint archive, then runs these whole processes round-robin,
--rounds times:

  - ours: bench/restore_once.py (interpreter start, imports, restore into a new database beside
    the live one with pg_restore -j2, verify every table's rows against the checkpoint's, swap the
    database names);
  - bare: `zstd -d` then `pg_restore -j2` into a fresh empty database (the archive is zstd, so a
    bare restore decompresses it first; the database is created untimed);
  - `createdb -T` (a template copy inside the server: the physical floor);

PostgreSQL's programs run directly, not through Debian's pg_wrapper, as backout runs them;
then, in --probed further runs of ours, an app that connects and looks a row up every 10 ms: the
downtime is the swap's, from the app's last success before the swap began to its first success
after it ended (the slowest gap anywhere in the run is printed too: on two busy cores a connection
can wait for the CPU while the restore loads, with the database there all along). Prints medians with min and max, the
machine and its load. Targets (the design's): ours at most 1.0x the bare restore; the app without
a usable database for under 0.1 s.

    .venv/bin/python bench/restore_bench.py [--sizes 100,600] [--rounds 5] [--probed 3] [--keep]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.backups import pg_dump  # noqa: E402
from backout.backups.libpq import client_args, program  # noqa: E402
from backout.output import human_bytes, table  # noqa: E402
from bench.data import built, name_for  # noqa: E402
from bench.restore_once import CHECKPOINT  # noqa: E402
from bench.timing import Contender, Run, load, machine, pair, parser, processes  # noqa: E402
from tests.support import SERVER_URL, database_url, drop_database  # noqa: E402

PROBE_EVERY = 0.01
RESTORE_ONCE = str(Path(__file__).resolve().with_name("restore_once.py"))


class Probe(threading.Thread):
    """The app: connect, look a row up by primary key, disconnect; every 10 ms."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.successes: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as conn:
                    conn.execute("SELECT email FROM accounts WHERE id = 4242").fetchone()
                self.successes.append(time.monotonic())
            except psycopg.Error:
                pass
            time.sleep(PROBE_EVERY)

    def downtime(self, start: float, end: float, swap: dict[str, float]) -> tuple[float, float]:
        """The swap's downtime (see the module's doc), and the longest time without a successful
        probe between start and end."""
        marks = [start] + [t for t in self.successes if start < t < end] + [end]
        before = max(t for t in marks if t <= swap["swap_began"])
        after = min(t for t in marks if t >= swap["swap_ended"])
        return after - before, max(b - a for a, b in zip(marks, marks[1:]))


def fresh(name: str, template: str | None = None) -> str:
    drop_database(name)
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return database_url(name)


def contenders(source: str, archive: Path, backup_json: Path, work: Path) -> list[Contender]:
    name = source.rsplit("/", 1)[1]
    live, kept, bare, copy = f"{name}_live", f"{name}_live_before_{CHECKPOINT}", f"{name}_bare", f"{name}_copy"
    plain = work / "plain.dump"
    _, env = client_args(source)

    def prepare_ours() -> None:
        drop_database(kept)
        fresh(live)

    def ours() -> Run:
        return processes([sys.executable, RESTORE_ONCE, database_url(live), str(backup_json), str(work / "restore")])

    def prepare_bare() -> None:
        plain.unlink(missing_ok=True)
        fresh(bare)

    def bare_restore() -> Run:
        conninfo, _ = client_args(database_url(bare))
        return processes(["zstd", "-q", "-d", "-f", str(archive), "-o", str(plain)],
                         [program("pg_restore"), "--exit-on-error", "--jobs=2", f"--dbname={conninfo}", str(plain)], env=env)

    def template() -> Run:
        return processes([program("createdb"), "-h", "127.0.0.1", "-U", "postgres", "-T", name, copy], env=env)

    return [Contender("ours", ours, prepare_ours), Contender("bare", bare_restore, prepare_bare),
            Contender("createdb -T", template, lambda: drop_database(copy))]


def downtime(source: str, backup_json: Path, work: Path) -> tuple[float, float]:
    """One probed run of ours into a copy of the source (the app's data is there to be read)."""
    name = source.rsplit("/", 1)[1]
    live, kept = f"{name}_live", f"{name}_live_before_{CHECKPOINT}"
    drop_database(kept)
    url = fresh(live, name)
    probe = Probe(url)
    probe.start()
    time.sleep(0.3)
    started = time.monotonic()
    swap = json.loads(subprocess.run([sys.executable, RESTORE_ONCE, url, str(backup_json), str(work / "restore")],
                                     check=True, capture_output=True, text=True).stdout)
    ended = time.monotonic()
    time.sleep(0.3)
    probe.halt.set()
    probe.join()
    return probe.downtime(started, ended, swap)


def same_schema(a: str, b: str) -> bool:
    def schema(url: str) -> list[str]:
        conninfo, env = client_args(url)
        text = subprocess.run([program("pg_dump"), "--schema-only", "--exclude-schema=backout", f"--dbname={conninfo}"],
                              env=env, capture_output=True, text=True, check=True).stdout
        # pg_dump guards each dump with a random \restrict key: not part of the schema.
        return [line for line in text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
    return schema(a) == schema(b)


def main() -> int:
    arguments = parser(__doc__ or "")
    arguments.add_argument("--probed", type=int, default=3, help="further runs of ours with the app probing (default 3)")
    args = arguments.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backout-restore-bench-"))
    databases = built(args.sizes)
    ok = True
    try:
        for line in machine(databases[0][1]):
            print(line)
        for size, source in databases:
            archive = work / f"{CHECKPOINT}.dump.zst"
            archive.unlink(missing_ok=True)
            backup = pg_dump.dump(source, archive)
            backup_json = work / "backup.json"
            backup_json.write_text(json.dumps(backup))
            cs = contenders(source, archive, backup_json, work)
            print(f"\n~{size} MB: archive {human_bytes(backup['size'])} zstd of {human_bytes(backup['dump_size'])}, "
                  f"{args.rounds} rounds:")
            pair(cs, args.rounds)
            ours, bare = cs[0], cs[1]
            fidelity = same_schema(source, database_url(f"{source.rsplit('/', 1)[1]}_live"))
            probed = [downtime(source, backup_json, work) for _ in range(args.probed)]
            gaps, slowest = [swap for swap, _ in probed], max(gap for _, gap in probed)
            print(table(["~" + f"{size} MB", "MEDIAN (MIN–MAX)", "VS BARE", "APP DOWNTIME (MAX)"], [
                [c.name, c.spread(), f"{c.median() / bare.median():.2f}x",
                 f"{max(gaps):.3f} s" if c is ours else "-"] for c in cs]))
            ok_time = ours.median() <= bare.median()
            ok_down = max(gaps) < 0.1
            print(f"target: ours <= 1.0x the bare restore: {ours.median() / bare.median():.2f}x "
                  f"({'met' if ok_time else 'MISSED'}); downtime < 0.1 s: {max(gaps):.3f} s "
                  f"(slowest gap anywhere in the run: {slowest:.3f} s) "
                  f"({'met' if ok_down else 'MISSED'}); schema equal to the source: {'yes' if fidelity else 'NO'}")
            ok = ok and ok_time and ok_down and fidelity
        print(f"\nload average after: {load()}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for name in (name_for(size) for size, _ in databases):
            for suffix in ("_live", f"_live_before_{CHECKPOINT}", "_bare", "_copy"):
                drop_database(name + suffix)
            if not args.keep:
                drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
