"""Restoring a pg_dump checkpoint beside the live data and swapping it in, on real PostgreSQL: each
mode brings back every table with the checkpoint's rows (per-table checksums), keeps the ledger as
it is now, keeps the old data under another name, and leaves the live data alone when it fails."""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from backout import ledger
from backout.backups import pg_dump
from backout.errors import BackoutError
from backout.rollback.database import stream, streamed, swap
from tests.rollback.support import checksums, schema
from tests.support import SERVER_URL, database_url, drop_database

pytestmark = pytest.mark.integration

APP_SCHEMA = """
CREATE SCHEMA reporting;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE,
                        token text NOT NULL DEFAULT left(md5(random()::text), 16));
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     total numeric(10, 2) NOT NULL, details jsonb NOT NULL DEFAULT '{}');
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW reporting.totals AS SELECT customer_id, sum(total) AS total FROM public.orders GROUP BY customer_id;
CREATE TABLE reporting.daily (day date PRIMARY KEY, orders int NOT NULL);
INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, total, details)
    SELECT 1 + g % 300, g * 1.5, jsonb_build_object('note', repeat(md5(g::text), 3), 'n', g)
    FROM generate_series(1, 4000) g;
INSERT INTO reporting.daily SELECT current_date - g, g FROM generate_series(1, 30) g;
"""

# An extension in the app's schema, used by a column default: a schema swap must move it along.
EXTENSION = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
ALTER TABLE customers ALTER COLUMN token SET DEFAULT encode(gen_random_bytes(8), 'hex');
"""

CHANGES_SINCE = """
INSERT INTO customers (email) VALUES ('late@example.com');
UPDATE orders SET total = total + 1 WHERE id % 7 = 0;
DELETE FROM orders WHERE id % 11 = 0;
DROP TABLE reporting.daily;
ALTER TABLE customers ADD COLUMN phone text;
CREATE TABLE public.newer (id int);
"""


class Owner:
    """A login role with a password that owns one database and is no superuser: what a Heroku
    Postgres credential is."""

    def __init__(self) -> None:
        self.name = f"backout_owner_{uuid.uuid4().hex[:10]}"
        self.password = uuid.uuid4().hex
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {self.name} LOGIN PASSWORD '{self.password}'")
            admin.execute(f"CREATE DATABASE {self.name} OWNER {self.name}")
        parts = urlsplit(database_url(self.name))
        self.url = urlunsplit(parts._replace(netloc=f"{self.name}:{self.password}@{parts.hostname}:{parts.port or 5432}"))

    def close(self) -> None:
        drop_database(self.name)
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                         [self.name + "%"]).fetchall():
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.execute(f"DROP ROLE {self.name}")


@pytest.fixture
def owner() -> Iterator[Owner]:
    role = Owner()
    yield role
    role.close()


def _prepare(url: str, tmp_path: Path, extension: bool = False) -> tuple[dict, dict, str]:
    """The app's data, a checkpoint of it (with the ledger beside it), then changes since."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(APP_SCHEMA)
        if extension:
            conn.execute(EXTENSION)
    with ledger.connect(url) as conn:
        cp = ledger.create_checkpoint(conn, app="shop", kind="deploy", release_version=4, release_id=None,
                                      slug_id=None, slug_commit=None, previous_release_version=3,
                                      backup_strategy="pg_dump", migration_tool="none")
    backup = pg_dump.dump(url, tmp_path / f"{cp['id']}.dump.zst")
    at_checkpoint = checksums(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CHANGES_SINCE)
    with ledger.connect(url) as conn:  # the ledger moves on after the checkpoint: it must not go back
        ledger.update_checkpoint(conn, cp["id"], status="complete", completed_at="now")
    return backup, at_checkpoint, cp["id"]


class Probe(threading.Thread):
    """The app: connects and reads every 10 ms while the restore runs, counting what worked."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.ok, self.failed = url, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT count(*) FROM orders").fetchone()
                self.ok += 1
            except psycopg.Error:
                self.failed += 1


def _restore(url: str, backup: dict, cp_id: str, mode: str, tmp_path: Path) -> tuple[dict, Probe, list[str]]:
    lines: list[str] = []
    probe = Probe(url)
    probe.start()
    try:
        result = swap.Restore(url, backup, cp_id, "k3y00001", lines.append, tmp_path / "work").run(
            mode, stream.read_toc(Path(backup["path"])))
    finally:
        probe.stop.set()
        probe.join()
    return result, probe, lines


def _ledger_rows(url: str, cp_id: str) -> dict:
    with ledger.connect(url) as conn:
        return ledger.get_checkpoint(conn, cp_id)


def test_schema_swap_as_the_database_owner_brings_the_checkpoint_back(owner: Owner, tmp_path: Path) -> None:
    backup, at_checkpoint, cp_id = _prepare(owner.url, tmp_path)
    with psycopg.connect(owner.url) as conn:
        choice = swap.choose(conn, ledger_here=True, archive=stream.read_toc(Path(backup["path"])))
    assert choice.mode == "schema", choice

    result, probe, lines = _restore(owner.url, backup, cp_id, "schema", tmp_path)

    assert checksums(owner.url) == at_checkpoint
    assert result["tables"] == {"public.customers": 300, "public.orders": 4000, "reporting.daily": 30}
    assert result["kept"]["schemas"] == {"public": f"public_before_{cp_id.lower()}",
                                         "reporting": f"reporting_before_{cp_id.lower()}"}
    assert probe.ok > 0  # the app read its data while the restore ran
    assert any("of archive read" in line for line in lines)
    # The ledger was not rewound: the checkpoint completed after the dump is still complete.
    assert _ledger_rows(owner.url, cp_id)["status"] == "complete"
    with psycopg.connect(owner.url, autocommit=True) as conn:
        # The old data is kept, the new copy works: defaults, the view, sequences, the grants.
        kept = f"public_before_{cp_id.lower()}"
        assert conn.execute(f"SELECT count(*) FROM {kept}.customers WHERE email = 'late@example.com'").fetchone() == (1,)
        assert conn.execute("SELECT to_regclass('public.newer')").fetchone() == (None,)
        assert conn.execute("INSERT INTO customers (email) VALUES ('new@example.com') RETURNING id").fetchone() == (301,)
        assert conn.execute("SELECT count(*) FROM reporting.totals").fetchone() == (300,)
        assert conn.execute("SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'").fetchone()[0] == \
            conn.execute(f"SELECT nspacl::text[] FROM pg_namespace WHERE nspname = '{kept}'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%restore%' OR nspname LIKE '%live%'"
                            ).fetchone() == (0,)


def test_schema_swap_moves_the_apps_extensions_along(database: str, tmp_path: Path) -> None:
    backup, at_checkpoint, cp_id = _prepare(database, tmp_path, extension=True)
    with psycopg.connect(database) as conn:
        assert swap.choose(conn, ledger_here=True, archive=stream.read_toc(Path(backup["path"]))).mode == "schema"
    _restore(database, backup, cp_id, "schema", tmp_path)
    assert checksums(database) == at_checkpoint
    with psycopg.connect(database, autocommit=True) as conn:
        token = conn.execute("INSERT INTO customers (email) VALUES ('n@example.com') RETURNING token").fetchone()[0]
        assert len(token) == 16
        assert conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                            " WHERE e.extname = 'pgcrypto'").fetchone() == ("public",)


def test_an_extension_the_role_may_not_move_means_in_place(owner: Owner, tmp_path: Path) -> None:
    backup, _, _ = _prepare(owner.url, tmp_path, extension=True)
    with psycopg.connect(owner.url) as conn:
        choice = swap.choose(conn, ledger_here=True, archive=stream.read_toc(Path(backup["path"])))
    assert choice.mode == "in-place"
    assert f"extension pgcrypto lives in schema public, and role {owner.name} may not move it" in choice.reason


def test_database_swap_restores_in_parallel_beside_the_live_database(database: str, tmp_path: Path) -> None:
    backup, at_checkpoint, cp_id = _prepare(database, tmp_path)
    name = urlsplit(database).path.lstrip("/")
    kept = f"{name}_before_{cp_id.lower()}"
    try:
        with psycopg.connect(database) as conn:
            assert swap.choose(conn, ledger_here=False).mode == "database"
        restore = swap.Restore(database, backup, cp_id, "k3y00002", lambda line: None, tmp_path / "work", jobs=2)
        probe = Probe(database)
        probe.start()
        try:
            result = restore.run("database", stream.read_toc(Path(backup["path"])))
        finally:
            probe.stop.set()
            probe.join()
        assert result["jobs"] == 2 and result["kept"] == {"database": kept}
        assert checksums(database) == at_checkpoint
        assert probe.ok > 0
        assert not list((tmp_path / "work").glob("*.dump"))  # the decompressed copy is gone
        with psycopg.connect(database_url(kept)) as conn:  # the old database, as it was
            assert conn.execute("SELECT count(*) FROM customers WHERE email = 'late@example.com'").fetchone() == (1,)
        with psycopg.connect(database, autocommit=True) as conn:
            assert conn.execute("INSERT INTO customers (email) VALUES ('n@example.com') RETURNING id").fetchone() == (301,)
    finally:
        drop_database(kept)


def test_a_parallel_restore_loads_as_it_decompresses_and_shares_a_large_table(
        database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A table that loads long after the others: the place they leave idle takes half its rows.
    monkeypatch.setattr(streamed, "SPLIT_FROM", 256 * 1024)
    monkeypatch.setattr(streamed, "STEP", 16 * 1024)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, body text NOT NULL, at timestamptz NOT NULL)")
        conn.execute("INSERT INTO big SELECT g, repeat(md5(g::text), 4), now() - g * interval '1 s' "
                     "FROM generate_series(1, 120000) g")
        conn.execute("CREATE INDEX big_at ON big (at)")
        conn.execute("GRANT SELECT ON big TO PUBLIC")
        conn.execute("COMMENT ON TABLE big IS 'the large one'")
        for n in range(30):  # small tables, loaded together
            conn.execute(f"CREATE TABLE small_{n:02} (id int PRIMARY KEY, note text)")
            conn.execute(f"INSERT INTO small_{n:02} SELECT g, 'row ' || g FROM generate_series(1, {n * 7}) g")
    backup, at_checkpoint, cp_id = _prepare(database, tmp_path)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP TABLE public.newer")
        conn.execute("ALTER TABLE customers DROP COLUMN phone")
        conn.execute("CREATE TABLE reporting.daily (day date PRIMARY KEY, orders int NOT NULL)")
    shape = schema(database)  # the checkpoint's schema again, its rows changed since
    kept = f"{urlsplit(database).path.lstrip('/')}_before_{cp_id.lower()}"
    lines: list[str] = []
    try:
        result = swap.Restore(database, backup, cp_id, "k3y00006", lines.append, tmp_path / "work", jobs=2).run(
            "database", stream.read_toc(Path(backup["path"])))
    finally:
        drop_database(kept)
    assert any("tables into" in line and "as they decompress" in line for line in lines)
    assert any(line.startswith("restore: public.big: the last") for line in lines), lines
    [loads] = [line for line in lines if line.startswith("restore: rows of ")]
    tables, sessions = map(int, re.findall(r"\d+", loads))
    assert tables == 34 and sessions < 10, loads  # big's two parts; the small tables a few at a time
    assert result["tables"]["public.big"] == 120000
    assert checksums(database) == at_checkpoint
    assert schema(database) == shape  # every index, key, default and view
    with psycopg.connect(database) as conn:  # grants and comments, which come last
        assert conn.execute("SELECT has_table_privilege('public', 'big', 'SELECT'), "
                            "obj_description('big'::regclass, 'pg_class')").fetchone() == (True, "the large one")


def test_in_place_restore_keeps_the_ledger_and_objects_made_since(database: str, tmp_path: Path) -> None:
    backup, at_checkpoint, cp_id = _prepare(database, tmp_path)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP TABLE public.newer")  # in place, --clean cannot drop what it does not know
    result, _, _ = _restore(database, backup, cp_id, "in-place", tmp_path)
    assert result["mode"] == "in-place" and "kept" not in result
    assert checksums(database) == at_checkpoint
    assert _ledger_rows(database, cp_id)["status"] == "complete"


@pytest.mark.parametrize("mode,jobs", [("schema", None), ("in-place", None), ("database", None), ("database", 2)])
def test_a_damaged_archive_changes_nothing(database: str, tmp_path: Path, mode: str, jobs: int | None) -> None:
    backup, _, cp_id = _prepare(database, tmp_path)
    now = checksums(database)
    data = bytearray(Path(backup["path"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(backup["path"]).write_bytes(bytes(data))
    with pytest.raises(BackoutError, match="corrupt|rolled back|failed"):
        swap.Restore(database, backup, cp_id, "k3y00003", lambda line: None, tmp_path / "work", jobs=jobs).run(
            mode, stream.read_toc(Path(backup["path"])))
    assert checksums(database) == now
    assert not list((tmp_path / "work").glob(".*.dump"))  # no decompressed copy left behind
    name = urlsplit(database).path.lstrip("/")
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [name + "_%"]).fetchone() == (0,)
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%k3y00003%'").fetchone() == (0,)


@pytest.mark.parametrize("mode,jobs", [("schema", None), ("in-place", None), ("database", None), ("database", 2)])
def test_a_row_count_that_differs_from_the_archive_fails_before_the_swap(database: str, tmp_path: Path,
                                                                          mode: str, jobs: int | None) -> None:
    backup, _, cp_id = _prepare(database, tmp_path)
    now = checksums(database)
    toc = stream.read_toc(Path(backup["path"]))
    # The checkpoint says the archive held one row more in orders than it did.
    backup["rows"]["public.orders"] += 1
    archive_counts = backup["rows"]
    with pytest.raises(BackoutError, match="public.orders has 4000 rows, the archive 4001"):
        swap.Restore(database, backup, cp_id, "k3y00004", lambda line: None, tmp_path / "work", jobs=jobs).run(
            mode, toc)
    assert archive_counts["public.orders"] == 4001
    assert checksums(database) == now


@pytest.mark.parametrize("mode", ["schema", "database"])
def test_a_checkpoint_without_recorded_rows_is_counted_from_the_archive(database: str, tmp_path: Path,
                                                                        mode: str) -> None:
    backup, at_checkpoint, cp_id = _prepare(database, tmp_path)
    del backup["rows"]  # as checkpoints taken before rows were recorded
    kept = f"{urlsplit(database).path.lstrip('/')}_before_{cp_id.lower()}"
    try:
        result = swap.Restore(database, backup, cp_id, "k3y00005", lambda line: None, tmp_path / "work",
                              jobs=2).run(mode, stream.read_toc(Path(backup["path"])))
    finally:
        drop_database(kept)
    assert result["tables"]["public.orders"] == 4000
    assert checksums(database) == at_checkpoint


def test_the_mode_follows_what_the_role_may_do(owner: Owner, database: str, tmp_path: Path) -> None:
    with psycopg.connect(database) as conn:
        assert swap.choose(conn, ledger_here=False).mode == "database"
        choice = swap.choose(conn, ledger_here=True)
        assert choice.mode == "schema" and "the ledger" in choice.problems[0]
    with psycopg.connect(owner.url) as conn:
        choice = swap.choose(conn, ledger_here=False)
        assert choice.mode == "schema" and f"role {owner.name} may not create databases" in choice.problems[0]
    # A schema the role does not own (made by someone else): only an in-place restore is possible.
    with psycopg.connect(database_url(owner.name), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA audit")
    with psycopg.connect(owner.url) as conn:
        choice = swap.choose(conn, ledger_here=True)
    assert choice.mode == "in-place"
    assert "schema audit belongs to postgres" in choice.reason and "the app waits for the whole restore" in choice.reason
