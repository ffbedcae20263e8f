"""Checkpoint benchmark: a whole `backout release` taking a pg_dump checkpoint, against the plain
pipe any user could type, pg_dump's default, and a template copy; and what a pitr checkpoint adds.

For each size (default ~100 MB and ~600 MB of realistic data, built once by bench/data.py and kept
with --keep), it runs these whole processes round-robin, --rounds times (A/B/C/D, A/B/C/D, ...):

  - ours: `backout release` with BACKOUT_BACKUP=pg_dump (interpreter start, imports, ledger rows,
    pg_dump -Fc -Z0 through zstd into a file, fsync, verification, row counts);
  - pipe: `pg_dump -Fc -Z0 | zstd -T2 -3 -o FILE`, then fsync (the best bare equivalent);
  - `pg_dump -Fc` (its default gzip, one thread), then fsync;
  - `createdb -T` (a template copy inside the server: the physical floor, not a backup);

PostgreSQL's programs run directly (/usr/lib/postgresql/N/bin on Debian), not through Debian's
pg_wrapper (a Perl script, about 0.15 s a run), as backout runs them. It prints medians with min and max, archive sizes, peak memory (each process's maximum resident
set, summed over a pipeline's processes), the machine and its load before and after. Targets (the
design's): ours at most 1.05x the pipe plus 0.15 s, no larger than the pipe's archive, peak memory
at most 2x the pipe's processes'; a pitr checkpoint adds at most 0.2 s to the release phase.

    .venv/bin/python bench/checkpoint_bench.py [--sizes 100,600] [--rounds 5] [--keep]
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout import checkpoint, ledger  # noqa: E402
from backout import settings as settings_module  # noqa: E402
from backout.backups.libpq import client_args, program  # noqa: E402
from backout.migrations import get_adapter  # noqa: E402
from backout.output import human_bytes, table  # noqa: E402
from bench.data import built, name_for  # noqa: E402
from bench.timing import Contender, Run, fsynced, load, machine, pair, parser, processes  # noqa: E402
from tests.support import SERVER_URL, drop_database  # noqa: E402

BACKOUT = str(Path(sys.executable).with_name("backout"))
PIPE_FIXED = 0.15  # seconds allowed for the interpreter, imports and the ledger


def contenders(url: str, work: Path) -> list[Contender]:
    conninfo, env = client_args(url)
    name = url.rsplit("/", 1)[1]
    version = itertools.count(int(time.time()))  # a release the ledger has not seen
    ours_dir, pipe_file, fc_file = work / "ours", work / "pipe.dump.zst", work / "fc.dump"
    copy = f"{name}_copy"

    def ours() -> Run:
        hook_env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKOUT_", "HEROKU_", "REDIS"))}
        hook_env.update(DATABASE_URL=url, HEROKU_APP_NAME="bench", HEROKU_RELEASE_VERSION=f"v{next(version)}",
                        BACKOUT_BACKUP="pg_dump", BACKOUT_BACKUP_DIR=str(ours_dir), BACKOUT_MIGRATIONS="none")
        run = processes([BACKOUT, "release"], env=hook_env)
        [archive] = list(ours_dir.glob("*.dump.zst"))
        run.facts["size"] = archive.stat().st_size
        return run

    def pipe() -> Run:
        run = processes([program("pg_dump"), "-Fc", "-Z0", "--exclude-schema=backout", f"--dbname={conninfo}"],
                        ["zstd", "-q", "-T2", "-3", "-f", "-o", str(pipe_file)], env=env, pipe=True)
        return fsynced(run, pipe_file)

    def fc() -> Run:
        run = processes([program("pg_dump"), "-Fc", "--exclude-schema=backout", "-f", str(fc_file), f"--dbname={conninfo}"],
                        env=env)
        return fsynced(run, fc_file)

    def template() -> Run:
        return processes([program("createdb"), "-h", "127.0.0.1", "-U", "postgres", "-T", name, copy], env=env)

    def clear() -> None:
        shutil.rmtree(ours_dir, ignore_errors=True)
        for path in (pipe_file, fc_file):
            path.unlink(missing_ok=True)

    return [
        Contender("ours", ours, clear),
        Contender("pipe", pipe, clear),
        Contender("pg_dump -Fc", fc, clear),
        Contender("createdb -T", template, lambda: drop_database(copy)),
    ]


def pitr_overhead(work: Path, runs: int = 20) -> float:
    """The median time a pitr checkpoint adds to a release phase, Platform API lookups included,
    against the sandbox on loopback (the round trips to api.heroku.com add their latency)."""
    from backout.heroku import HerokuClient
    from backout_sandbox.server import start

    box = start(port=0, state_path=work / "sandbox.json", work_dir=work / "sandbox", postgres_url=SERVER_URL)
    try:
        with HerokuClient(box.token, box.url, box.url) as client:
            client.create_app("bench-pitr")
            client.create_addon("bench-pitr", "heroku-postgresql:standard-0")
            version = client.current_release("bench-pitr")["version"]
            settings = settings_module.load({
                "DATABASE_URL": client.config_vars("bench-pitr")["DATABASE_URL"], "HEROKU_APP_NAME": "bench-pitr",
                "HEROKU_RELEASE_VERSION": f"v{version}", "HEROKU_API_KEY": box.token,
                "BACKOUT_HEROKU_API_URL": box.url, "BACKOUT_HEROKU_DATA_URL": box.url,
                "BACKOUT_BACKUP": "pitr", "BACKOUT_MIGRATIONS": "none",
            })
            adapter = get_adapter("none")
            times = []
            for _ in range(runs + 1):  # the first pays for imports
                started = time.perf_counter()
                with ledger.connect(settings.database_url or "") as ledger_conn:
                    facts = checkpoint.lookup(settings, client, "bench-pitr", version, release=True, config=True,
                                              addon=True)
                    release = checkpoint.release_from_api(settings, facts, client)
                    checkpoint.take(settings, ledger_conn, release, heroku=client, adapter=adapter, facts=facts)
                times.append(time.perf_counter() - started)
            return statistics.median(times[1:])
    finally:
        box.stop(drop_databases=True)


def report(size_mb: int, url: str, cs: list[Contender]) -> bool:
    ours, pipe = cs[0], cs[1]
    rows = []
    for c in cs:
        size = c.runs[-1].facts.get("size")
        rows.append([c.name, c.spread(), f"{c.median() / pipe.median():.2f}x",
                     human_bytes(size) if size else "-", human_bytes(c.peak())])
    print(table(["~" + f"{size_mb} MB", "MEDIAN (MIN–MAX)", "VS PIPE", "ARCHIVE", "PEAK MEMORY"], rows))
    limit = 1.05 * pipe.median() + PIPE_FIXED
    ok_time = ours.median() <= limit
    ok_size = ours.runs[-1].facts["size"] <= pipe.runs[-1].facts["size"]
    ok_memory = ours.peak() <= 2 * pipe.peak()
    print(f"target: ours <= 1.05x the pipe + {PIPE_FIXED} s = {limit:.2f} s: {ours.median():.2f} s "
          f"({'met' if ok_time else 'MISSED'}); archive no larger: {'met' if ok_size else 'MISSED'}; "
          f"peak memory <= 2x the pipe's: {ours.peak() / pipe.peak():.2f}x ({'met' if ok_memory else 'MISSED'})")
    print(f"ours is {ours.median() / cs[2].median():.2f}x the time of pg_dump -Fc")
    return ok_time and ok_size and ok_memory


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    work = Path(tempfile.mkdtemp(prefix="backout-checkpoint-bench-"))
    databases = built(args.sizes)
    ok = True
    try:
        for line in machine(databases[0][1]):
            print(line)
        for size, url in databases:
            cs = contenders(url, work)
            # One untimed run creates the ledger's schema and warms the cache for everyone.
            cs[0].prepare()
            cs[0].run()
            print(f"\n~{size} MB ({url.rsplit('/', 1)[1]}), {args.rounds} rounds:")
            pair(cs, args.rounds)
            ok = report(size, url, cs) and ok
        pitr = pitr_overhead(work)
        print(f"\npitr checkpoint added to the release phase (ledger, API lookups against the sandbox, mark): "
              f"median {pitr * 1000:.1f} ms ({'met' if pitr <= 0.2 else 'MISSED'} <= 0.2 s)")
        print(f"load average after: {load()}")
        return 0 if ok and pitr <= 0.2 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for size, _ in databases:
            drop_database(f"{name_for(size)}_copy")
            if not args.keep:
                drop_database(name_for(size))


if __name__ == "__main__":
    sys.exit(main())
