"""The sandbox's point-in-time-recoverable PostgreSQL cluster, on a real private cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest

from backout_sandbox import pitr
from backout_sandbox.core.errors import SandboxError
from backout_sandbox.pitr import PitrCluster

pytestmark = pytest.mark.integration


def server_processes(under: Path) -> list[int]:
    """postgres processes working in `under` or below it (server processes chdir to their data
    directory)."""
    root = os.path.realpath(under)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            exe = os.readlink(f"/proc/{entry.name}/exe")
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and os.path.basename(exe) == "postgres":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[PitrCluster]:
    # Not pytest's tmp_path: its 0700 parents are closed to the postgres OS user the server runs as.
    root = Path(tempfile.mkdtemp(prefix="backout-pitr-test-"))
    running = PitrCluster(root)
    running.start()
    yield running
    running.stop()
    assert server_processes(root) == []
    assert list((root / "restores").iterdir()) == []
    shutil.rmtree(root)


@pytest.fixture
def db_name(cluster: PitrCluster) -> Iterator[Callable[[str], str]]:
    """Unique database names; the databases are dropped after the test, so that the module's
    cluster (and with it every base backup and restore copy) stays small."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    with psycopg.connect(cluster.admin_url(), autocommit=True) as conn:
        for database in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def rows(url: str, query: str = "SELECT id, note FROM items ORDER BY id") -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def databases(cluster: PitrCluster) -> set[str]:
    with psycopg.connect(cluster.admin_url()) as conn:
        return {datname for (datname,) in conn.execute("SELECT datname FROM pg_database")}


Names = Callable[[str], str]


def test_fresh_base_backups_are_taken_and_pruned_and_older_times_stay_recoverable(
        cluster: PitrCluster, db_name: Names, monkeypatch: pytest.MonkeyPatch) -> None:
    # First in the module, while the WAL since the first backup is short: it gets replayed.
    monkeypatch.setattr(pitr, "BASE_BACKUP_EVERY_BYTES", 0)  # a fresh base backup at every start
    monkeypatch.setattr(pitr, "KEEP_RECENT_BACKUPS", 1)
    earliest = cluster.earliest_recoverable()
    history = db_name("history")
    url = cluster.create_database(history)
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)")
    moments = []
    for n in (1, 2):
        execute(url, f"INSERT INTO items VALUES ({n}, 'row {n}')")
        moments.append(datetime.now(timezone.utc))
        cluster.stop()
        cluster.start()
    monkeypatch.undo()

    backups = sorted(path.name for path in (cluster.root / "base").iterdir())
    assert len(backups) == 2  # the first, which fixes the earliest time, and the newest
    assert cluster.earliest_recoverable() == earliest
    # The backup taken after the first moment is gone, so the second is replayed from the first.
    assert rows(cluster.restore_to(history, moments[1], db_name("history_then"))) == [(1, "row 1"), (2, "row 2")]


def test_restore_gives_exactly_the_rows_as_of_each_time(cluster: PitrCluster, db_name: Names) -> None:
    shop = db_name("shop")
    url = cluster.create_database(shop)
    assert url == f"postgresql://postgres@127.0.0.1:{cluster.port}/{shop}"
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)",
            "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    first = datetime.now(timezone.utc)
    execute(url, "UPDATE items SET note = 'TWO' WHERE id = 2", "INSERT INTO items VALUES (4, 'four'), (5, 'five')")
    second = datetime.now(timezone.utc)
    execute(url, "DELETE FROM items WHERE id IN (1, 4)", "INSERT INTO items VALUES (6, 'six')",
            "CREATE TABLE later (id int)")

    at_first = cluster.restore_to(shop, first, db_name("shop_first"))
    at_second = cluster.restore_to(shop, second.astimezone(timezone(timedelta(hours=-7))), db_name("shop_second"))

    assert rows(at_first) == [(1, "one"), (2, "two"), (3, "three")]
    assert rows(at_second) == [(1, "one"), (2, "TWO"), (3, "three"), (4, "four"), (5, "five")]
    assert rows(at_second, "SELECT to_regclass('later') IS NULL") == [(True,)]
    assert rows(url) == [(2, "TWO"), (3, "three"), (5, "five"), (6, "six")]
    # The restored database is a database of its own: writing to it leaves the source alone.
    execute(at_first, "INSERT INTO items VALUES (7, 'seven')")
    assert rows(url) == [(2, "TWO"), (3, "three"), (5, "five"), (6, "six")]


def test_earliest_recoverable_is_the_first_base_backups_end_and_can_be_restored(
        cluster: PitrCluster, db_name: Names) -> None:
    earliest = cluster.earliest_recoverable()
    assert earliest.tzinfo is not None and earliest.utcoffset() == timedelta(0)
    assert earliest <= datetime.now(timezone.utc)
    copy = cluster.restore_to("postgres", earliest, db_name("postgres_then"))
    assert rows(copy, "SELECT current_database() LIKE 'postgres_then_%'") == [(True,)]


def test_times_out_of_range_and_bad_names_are_refused_and_change_nothing(cluster: PitrCluster, db_name: Names) -> None:
    source = db_name("src")
    execute(cluster.create_database(source), "CREATE TABLE items (id int PRIMARY KEY, note text)")
    now = datetime.now(timezone.utc)
    before = databases(cluster)
    with pytest.raises(ValueError, match="earliest recoverable time is"):
        cluster.restore_to(source, cluster.earliest_recoverable() - timedelta(seconds=1), db_name("early"))
    with pytest.raises(ValueError, match="in the future"):
        cluster.restore_to(source, now + timedelta(minutes=5), db_name("future"))
    with pytest.raises(ValueError, match="timezone-aware"):
        cluster.restore_to(source, now.replace(tzinfo=None), db_name("naive"))
    with pytest.raises(ValueError, match="already exists"):
        cluster.restore_to(source, now, source)
    with pytest.raises(ValueError, match="1 to 63 bytes"):
        cluster.restore_to(source, now, "x" * 64)
    with pytest.raises(ValueError, match="already exists"):
        cluster.create_database(source)
    assert databases(cluster) == before


def test_a_database_that_did_not_exist_yet_is_refused_and_one_dropped_since_comes_back(
        cluster: PitrCluster, db_name: Names) -> None:
    gone = db_name("gone")
    execute(cluster.create_database(gone), "CREATE TABLE items (id int PRIMARY KEY, note text)",
            "INSERT INTO items VALUES (1, 'kept')")
    before_newcomer = datetime.now(timezone.utc)
    newcomer = db_name("newcomer")
    cluster.create_database(newcomer)
    execute(cluster.admin_url(), f'DROP DATABASE "{gone}" WITH (FORCE)')
    names = databases(cluster)

    with pytest.raises(ValueError, match=f"'{newcomer}' did not exist at"):
        cluster.restore_to(newcomer, before_newcomer, db_name("nope"))
    assert databases(cluster) == names
    assert list((cluster.root / "restores").iterdir()) == []
    assert server_processes(cluster.root / "restores") == []

    back = cluster.restore_to(gone, before_newcomer, db_name("gone_back"))
    assert rows(back) == [(1, "kept")]


def test_each_of_several_databases_comes_back_with_only_its_own_content(cluster: PitrCluster, db_name: Names) -> None:
    orders, users = db_name("orders"), db_name("users")
    orders_url, users_url = cluster.create_database(orders), cluster.create_database(users)
    execute(orders_url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'order')")
    execute(users_url, "CREATE TABLE people (id int PRIMARY KEY, name text)", "INSERT INTO people VALUES (1, 'ada')")
    moment = datetime.now(timezone.utc)
    execute(orders_url, "TRUNCATE items")
    execute(users_url, "INSERT INTO people VALUES (2, 'grace')")

    # At the same time, as the sandbox's threaded server may ask.
    with ThreadPoolExecutor(2) as pool:
        orders_job = pool.submit(cluster.restore_to, orders, moment, db_name("orders_back"))
        users_job = pool.submit(cluster.restore_to, users, moment, db_name("users_back"))
    orders_back, users_back = orders_job.result(), users_job.result()

    assert rows(orders_back) == [(1, "order")]
    assert rows(users_back, "SELECT id, name FROM people ORDER BY id") == [(1, "ada")]
    assert rows(orders_back, "SELECT to_regclass('people') IS NULL") == [(True,)]
    assert rows(users_back, "SELECT to_regclass('items') IS NULL") == [(True,)]
    assert rows(orders_url) == []
    assert rows(users_url, "SELECT id, name FROM people ORDER BY id") == [(1, "ada"), (2, "grace")]


def test_one_process_at_a_time_drives_a_cluster(cluster: PitrCluster) -> None:
    with pytest.raises(SandboxError, match="in use by another process"):
        PitrCluster(cluster.root).start()
    assert rows(cluster.admin_url(), "SELECT 1") == [(1,)]


def test_restart_keeps_data_urls_and_history(cluster: PitrCluster, db_name: Names) -> None:
    durable = db_name("durable")
    url = cluster.create_database(durable)
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'before')")
    moment = datetime.now(timezone.utc)
    execute(url, "INSERT INTO items VALUES (2, 'after')")
    port = cluster.port

    cluster.stop()
    assert server_processes(cluster.root) == []
    cluster.start()
    cluster.start()  # idempotent

    assert cluster.port == port
    assert cluster.url(durable) == url
    assert rows(url) == [(1, "before"), (2, "after")]
    assert rows(cluster.restore_to(durable, moment, db_name("durable_then"))) == [(1, "before")]


def test_a_server_left_by_a_crashed_process_is_taken_over(cluster: PitrCluster, db_name: Names) -> None:
    orphaned = db_name("orphaned")
    execute(cluster.create_database(orphaned), "CREATE TABLE items (id int PRIMARY KEY, note text)",
            "INSERT INTO items VALUES (1, 'kept')")
    cluster.stop()
    # Another process starts the cluster and dies without stopping it: its postmaster lives on.
    crash = ("import os, sys; from backout_sandbox.pitr import PitrCluster; "
             "PitrCluster(sys.argv[1]).start(); os._exit(3)")
    assert subprocess.run([sys.executable, "-c", crash, str(cluster.root)], timeout=60).returncode == 3
    orphans = server_processes(cluster.root / "data")
    assert orphans

    cluster.start()

    assert not set(orphans) & set(server_processes(cluster.root))
    assert rows(cluster.url(orphaned)) == [(1, "kept")]


def test_a_stale_postmaster_pid_naming_another_live_process_is_handled(cluster: PitrCluster, db_name: Names) -> None:
    crashed = db_name("crashed")
    url = cluster.create_database(crashed)
    execute(url, "CREATE TABLE items (id int PRIMARY KEY, note text)", "INSERT INTO items VALUES (1, 'committed')")
    pidfile = cluster.root / "data" / "postmaster.pid"
    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server_processes(cluster.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The pid in the stale file now belongs to an unrelated live process, which must survive.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        lines = pidfile.read_text().split("\n")
        pidfile.write_text("\n".join([str(bystander.pid)] + lines[1:]))

        cluster.start()

        assert bystander.poll() is None
        assert rows(url) == [(1, "committed")]
        # WAL archiving carried on across the crash: a time after it can be restored.
        moment = datetime.now(timezone.utc)
        execute(url, "DELETE FROM items")
        assert rows(cluster.restore_to(crashed, moment, db_name("crashed_then"))) == [(1, "committed")]
    finally:
        bystander.kill()
        bystander.wait()


def test_a_root_the_server_user_cannot_reach_is_refused_with_the_fix(tmp_path: Path) -> None:
    closed = tmp_path / "pitr"  # pytest's base temp directory is 0700
    cluster = PitrCluster(closed)
    if os.geteuid() != 0:
        # Not root: the server runs as us, and our own 0700 directories are fine.
        cluster.start()
        cluster.stop()
        return
    with pytest.raises(SandboxError, match="cannot reach .* tempfile.mkdtemp"):
        cluster.start()
    assert not (closed / "data").exists()
