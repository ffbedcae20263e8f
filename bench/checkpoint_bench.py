"""Checkpoint benchmark: our pg_dump checkpoint against bare pg_dump, and what a pitr checkpoint adds.

Builds (or reuses, with --keep) a database of at least --size-mb MB of realistic data that does
not compress much: text of random words (a 30,000-word vocabulary with Zipf-like frequencies),
e-mail addresses, uuids, numbers, jsonb documents, and btree indexes, in two large tables. pgbench's rows compress 50 to 1 and would flatter every dump. Then,
in the same run, it times:

  - a whole `backout` checkpoint with BACKOUT_BACKUP=pg_dump (dump, zstd, fsync, verify, ledger),
  - bare `pg_dump -Fc` (the default: gzip, one thread),
  - bare `pg_dump -Fd -j2` (directory format, two jobs),

best of --repeat runs each, and prints time, size and the ratios against `-Fc`, the machine, and
the median time of a whole checkpoint with BACKOUT_BACKUP=pitr. Target: ours at most 0.4x the
time of `-Fc` with an archive no larger; pitr at most 0.2 s.

    .venv/bin/python bench/checkpoint_bench.py [--size-mb 520] [--repeat 2] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout import checkpoint, ledger
from backout import settings as settings_module
from backout.backups import pg_dump
from backout.backups.libpq import client_args
from backout.migrations import get_adapter
from backout.output import human_bytes, table
from tests.support import SERVER_URL, database_url, drop_database  # noqa: E402

DATABASE = "backout_bench_checkpoint"
BATCH_ROWS = 20_000

SCHEMA = """
CREATE TABLE accounts (
    id int PRIMARY KEY, email text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL
);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    account_id int NOT NULL,
    created_at timestamptz NOT NULL,
    kind text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    payload jsonb NOT NULL
);
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    account_id int NOT NULL,
    sent_at timestamptz NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    headers jsonb NOT NULL
);
"""
INDEXES = """
CREATE INDEX events_account ON events (account_id, created_at);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_title ON events (title);
CREATE INDEX accounts_email ON accounts (email);
CREATE INDEX events_sku ON events ((payload ->> 'sku'));
CREATE INDEX messages_account ON messages (account_id, sent_at);
"""
KINDS = ("order", "refund", "signup", "login", "ticket", "review")
DOMAINS = ("example.com", "mail.test", "corp.example", "shop.test")


class Corpus:
    """Random words with a Zipf-like frequency, as in real text: a few words are everywhere, most
    are rare. Text of such words compresses about 2.5 to 1, like the issue's sample data."""

    def __init__(self, seed: int = 42, size: int = 30000) -> None:
        self.rng = random.Random(seed)
        letters = string.ascii_lowercase
        self.words = ["".join(self.rng.choices(letters, k=self.rng.randint(2, 11))) for _ in range(size)]
        weights = [1 / (rank + 1) ** 0.9 for rank in range(size)]
        self.cumulative = list(itertools.accumulate(weights))

    def text(self, count: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cumulative, k=count))

    def event(self, n: int) -> str:
        rng = self.rng
        payload = {
            "sku": f"{rng.getrandbits(40):010X}",
            "qty": rng.randint(1, 20),
            "price": round(rng.random() * 1000, 2),
            "ref": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ip": ".".join(str(rng.randint(0, 255)) for _ in range(4)),
            "tags": self.rng.choices(self.words[:500], k=rng.randint(1, 4)),
            "note": self.text(rng.randint(5, 15)),
        }
        created = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:" \
                  f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}+00"
        return "\t".join((str(n), str(rng.randint(1, 100000)), created, rng.choice(KINDS),
                          self.text(rng.randint(4, 10)), self.text(rng.randint(30, 90)),
                          json.dumps(payload))) + "\n"

    def message(self, n: int) -> str:
        rng = self.rng
        headers = {
            "message_id": f"<{uuid.UUID(int=rng.getrandbits(128), version=4)}@mail.test>",
            "from": f"{rng.choice(self.words)}@{rng.choice(DOMAINS)}",
            "to": [f"{rng.choice(self.words)}@{rng.choice(DOMAINS)}" for _ in range(rng.randint(1, 3))],
            "spam_score": round(rng.random() * 10, 3),
        }
        sent = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:00:00+00"
        return "\t".join((str(n), str(rng.randint(1, 100000)), sent, self.text(rng.randint(3, 9)),
                          self.text(rng.randint(40, 120)), json.dumps(headers))) + "\n"

    def account(self, n: int) -> str:
        first, last = self.rng.choice(self.words), self.rng.choice(self.words)
        return (f"{n}\t{first}.{last}{self.rng.randint(1, 999)}@{self.rng.choice(DOMAINS)}\t"
                f"{first.title()} {last.title()}\t2023-{self.rng.randint(1, 12):02d}-01 00:00:00+00\n")


def ensure_built(name: str, size_mb: int) -> str:
    """The URL of database `name` holding at least size_mb MB of the generated data and its
    indexes: the one an earlier --keep run left, else one built afresh."""
    url = database_url(name)
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            with psycopg.connect(url) as conn:
                ready = conn.execute("SELECT pg_database_size(current_database()) >= %s AND "
                                     "to_regclass('messages_account') IS NOT NULL", (size_mb * 1_000_000,)).fetchone()[0]
            if ready:
                return url
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    print(f"building {size_mb} MB of data in {name} (once; --keep keeps it for the next run)", flush=True)
    build(url, size_mb)
    return url


def build(url: str, size_mb: int) -> None:
    """Fill the database with COPY until it holds size_mb MB with its indexes."""
    started = time.monotonic()
    corpus = Corpus()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy("COPY accounts FROM STDIN") as copy:
            copy.write("".join(corpus.account(n) for n in range(1, 100001)))
        # Two large tables, so that a parallel dump (-Fd -j2) has something to share out. The
        # indexes add about a fifth; the tables are filled to the rest first.
        n = 0
        while _size(conn, "pg_database_size(current_database())") < size_mb * 1_000_000 * 0.80:
            _batch(conn, corpus, n)
            n += BATCH_ROWS
        conn.execute(INDEXES)
        while _size(conn, "pg_database_size(current_database())") < size_mb * 1_000_000:
            _batch(conn, corpus, n)
            n += BATCH_ROWS
        conn.execute("VACUUM ANALYZE")
        print(f"built {human_bytes(_size(conn, 'pg_database_size(current_database())'))}, {n} events and "
              f"{n // 2} messages, "
              f"in {time.monotonic() - started:.0f}s", flush=True)


def _batch(conn: psycopg.Connection, corpus: Corpus, n: int) -> None:
    with conn.cursor().copy("COPY events FROM STDIN") as copy:
        copy.write("".join(corpus.event(i) for i in range(n + 1, n + BATCH_ROWS + 1)))
    with conn.cursor().copy("COPY messages FROM STDIN") as copy:
        copy.write("".join(corpus.message(i) for i in range(n // 2 + 1, n // 2 + BATCH_ROWS // 2 + 1)))


def _size(conn: psycopg.Connection, expression: str) -> int:
    return conn.execute(f"SELECT {expression}").fetchone()[0]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bare_pg_dump(url: str, out: Path, *args: str) -> int:
    conninfo, env = client_args(url)
    subprocess.run(["pg_dump", *args, "--exclude-schema=backout", "-f", str(out), f"--dbname={conninfo}"],
                   env=env, check=True)
    return _bytes(out)


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def machine(url: str) -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                          if l.startswith("MemTotal")).split()[1])
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    with psycopg.connect(url) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        size = _size(conn, "pg_database_size(current_database())")
    client = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
    import zstandard

    return [
        f"machine: {os.cpu_count()} cores, {model}, {memory}, {platform.system()} {platform.release()}",
        f"postgres: server {server}; {client}; python-zstandard {zstandard.__version__} (level "
        f"{pg_dump.ZSTD_LEVEL}, {os.cpu_count()} threads)",
        f"database: {human_bytes(size)} ({size} bytes) of random-word text, jsonb, uuids and indexes",
    ]


def checkpoint_settings(url: str, strategy: str, backup_dir: Path) -> settings_module.Settings:
    return settings_module.load({
        "DATABASE_URL": url, "HEROKU_APP_NAME": "bench-app", "HEROKU_RELEASE_VERSION": "v1",
        "BACKOUT_BACKUP": strategy, "BACKOUT_BACKUP_DIR": str(backup_dir), "BACKOUT_MIGRATIONS": "none",
    })


def take_checkpoint(settings: settings_module.Settings, ledger_conn: psycopg.Connection) -> dict:
    release = checkpoint.Release(version=settings.release_version, commit="bench")
    adapter = get_adapter(settings.migrations, settings.migrations_path)
    return checkpoint.take(settings, ledger_conn, release, adapter=adapter)


def pitr_as_the_hook_does(work: Path, runs: int = 20) -> list[float]:
    """Time what BACKOUT_BACKUP=pitr adds to a release phase, Platform API included, against the
    sandbox on loopback: the round trips to api.heroku.com add their latency on top."""
    from backout.heroku import HerokuClient
    from backout_sandbox.server import start

    box = start(port=0, state_path=work / "sandbox.json", work_dir=work / "sandbox", postgres_url=SERVER_URL)
    try:
        with HerokuClient(box.token, box.url, box.url) as client:
            client.create_app("bench-pitr")
            client.create_addon("bench-pitr", "heroku-postgresql:essential-0")
            version = client.current_release("bench-pitr")["version"]
            settings = settings_module.load({
                "DATABASE_URL": client.config_vars("bench-pitr")["DATABASE_URL"], "HEROKU_APP_NAME": "bench-pitr",
                "HEROKU_RELEASE_VERSION": f"v{version}", "HEROKU_API_KEY": box.token,
                "BACKOUT_HEROKU_API_URL": box.url, "BACKOUT_HEROKU_DATA_URL": box.url,
                "BACKOUT_BACKUP": "pitr", "BACKOUT_MIGRATIONS": "none",
            })
            adapter = get_adapter("none")

            def hook_checkpoint() -> None:
                with ledger.connect(settings.database_url) as ledger_conn:
                    facts = checkpoint.lookup(settings, client, "bench-pitr", version, release=True, config=True,
                                              addon=True)
                    release = checkpoint.release_from_api(settings, facts, client)
                    checkpoint.take(settings, ledger_conn, release, heroku=client, adapter=adapter, facts=facts)

            hook_checkpoint()
            return [timed(hook_checkpoint) for _ in range(runs)]
    finally:
        box.stop(drop_databases=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=520, help="database size to build (default 520)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each dump; the best counts (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    parser.add_argument("--dir", help="where the dumps go (default a temporary directory)")
    args = parser.parse_args()

    try:
        return run(ensure_built(DATABASE, args.size_mb), args)
    finally:
        if not args.keep:
            drop_database(DATABASE)


def run(url: str, args: argparse.Namespace) -> int:
    work = Path(args.dir or tempfile.mkdtemp(prefix="backout-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url, autocommit=True) as conn:
        # Read every table once so that no contender pays for a cold cache.
        for name in ("events", "messages", "accounts"):
            conn.execute(f"SELECT count(*), sum(length(t::text)) FROM {name} t")

    results: dict[str, list[tuple[float, int]]] = {"ours": [], "fc": [], "fd": []}
    ours_settings = checkpoint_settings(url, "pg_dump", work / "ours")
    with ledger.connect(url) as ledger_conn:
        for attempt in range(args.repeat):
            _clear(work / "ours")
            fc, fd = work / "bare.dump", work / "bare.dir"
            _clear(fc)
            _clear(fd)
            row: dict = {}
            seconds = timed(lambda: row.update(take_checkpoint(ours_settings, ledger_conn)))
            assert row["status"] == "complete", row
            results["ours"].append((seconds, row["backup"]["size"]))
            size: list[int] = []
            results["fc"].append((timed(lambda: size.append(bare_pg_dump(url, fc, "-Fc"))), size[-1]))
            results["fd"].append((timed(lambda: size.append(bare_pg_dump(url, fd, "-Fd", "-j2"))), size[-1]))
            print(f"  run {attempt + 1}: ours {results['ours'][-1][0]:.2f}s, -Fc {results['fc'][-1][0]:.2f}s, "
                  f"-Fd -j2 {results['fd'][-1][0]:.2f}s", flush=True)

        pitr_settings = checkpoint_settings(url, "pitr", work / "pitr")
        take_checkpoint(pitr_settings, ledger_conn)  # first use pays for imports
        pitr_times = [timed(lambda: take_checkpoint(pitr_settings, ledger_conn)) for _ in range(20)]
        none_settings = checkpoint_settings(url, "none", work / "none")
        none_times = [timed(lambda: take_checkpoint(none_settings, ledger_conn)) for _ in range(20)]
    hook_times = pitr_as_the_hook_does(work)

    best = {name: min(runs) for name, runs in results.items()}
    fc_time, fc_size = best["fc"]
    labels = {
        "ours": "backout checkpoint (pg_dump -Fc -Z0 | zstd, verified)",
        "fc": "pg_dump -Fc (gzip, default)",
        "fd": "pg_dump -Fd -j2",
    }
    print()
    for line in machine(url):
        print(line)
    print()
    print(table(
        ["dump", "time", "size", "time vs -Fc", "size vs -Fc"],
        [[labels[name], f"{t:.2f}s", human_bytes(s), f"{t / fc_time:.2f}x", f"{s / fc_size:.2f}x"]
         for name, (t, s) in best.items()],
    ))
    print()
    pitr_median = statistics.median(pitr_times)
    print(f"pitr checkpoint (whole take: ledger rows, LSN, migration state, mark): median "
          f"{pitr_median * 1000:.1f} ms, max {max(pitr_times) * 1000:.1f} ms over {len(pitr_times)}; "
          f"none: median {statistics.median(none_times) * 1000:.1f} ms")
    hook_median = statistics.median(hook_times)
    print(f"pitr checkpoint as the hook takes it against the local sandbox (ledger and database "
          f"connections, Platform API release/current/config/add-on lookups, take): median "
          f"{hook_median * 1000:.1f} ms, max {max(hook_times) * 1000:.1f} ms over {len(hook_times)}")
    ok_time = best["ours"][0] <= 0.4 * fc_time
    ok_size = best["ours"][1] <= fc_size
    ok_pitr = max(pitr_median, hook_median) <= 0.2
    print(f"target: ours <= 0.4x the time of -Fc: {'met' if ok_time else 'NOT met'}; archive no larger: "
          f"{'met' if ok_size else 'NOT met'}; pitr <= 0.2 s: {'met' if ok_pitr else 'NOT met'}")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok_time and ok_size and ok_pitr else 1


if __name__ == "__main__":
    sys.exit(main())
