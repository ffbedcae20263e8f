"""Realistic data for the benchmarks, built once and kept between runs.

Text of random words (a 30,000-word vocabulary with Zipf-like frequencies), e-mail addresses,
uuids, numbers, jsonb documents and btree indexes, in two large tables and a small one. pgbench's
rows compress 50 to 1 and would flatter every dump; these compress about 2.5 to 1, like real text.
"""

from __future__ import annotations

import itertools
import json
import random
import string
import time
import uuid

import psycopg

from backout.output import human_bytes
from tests.support import SERVER_URL, database_url

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
