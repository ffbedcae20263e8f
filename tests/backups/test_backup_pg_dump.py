"""The pg_dump backup strategy against a real PostgreSQL: write, verify, read back, and its faults."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import resource
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from backout import backups
from backout.backups import pg_dump
from backout.backups.libpq import client_args
from backout.errors import BackoutError, BadInput, ConfigError

pytestmark = pytest.mark.integration


def _fill(url: str, rows: int = 20000) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS note,"
            " jsonb_build_object('n', g, 'tag', md5((g * 3)::text)) AS doc FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("CREATE INDEX orders_note ON orders (note)")
        conn.execute("CREATE SCHEMA backout")
        conn.execute("CREATE TABLE backout.checkpoints (id text)")


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _restore(archive: Path, url: str) -> None:
    conninfo, env = client_args(url)
    restore = subprocess.Popen(["pg_restore", "--no-owner", f"--dbname={conninfo}"], stdin=subprocess.PIPE, env=env)
    pg_dump.decompress_to(archive, restore.stdin)
    restore.stdin.close()
    assert restore.wait() == 0


def test_dump_writes_a_private_verified_archive_that_restores(make_database, tmp_path):
    source, target = make_database(), make_database()
    _fill(source)
    lines: list[str] = []
    path = tmp_path / "backups" / "cp_TEST.dump.zst"
    described = pg_dump.dump(source, path, progress=lines.append)

    assert _files(path.parent) == ["cp_TEST.dump.zst"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert described["size"] == len(data)
    assert described["sha256"] == hashlib.sha256(data).hexdigest()
    assert described["format"] == "custom" and described["compression"] == "zstd"
    assert described["dump_size"] > described["size"]
    assert described["path"] == str(path)
    assert any("verified" in line for line in lines)

    _restore(path, target)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*), sum(length(note)) FROM orders").fetchone() == (20000, 20000 * 64)
        # The ledger's schema is never in a backup.
        assert conn.execute("SELECT to_regnamespace('backout')").fetchone()[0] is None


def test_reading_side_decompresses_to_a_file_and_a_stream(database, tmp_path):
    _fill(database, rows=2000)
    path = tmp_path / "cp.dump.zst"
    described = pg_dump.dump(database, path)
    as_file = tmp_path / "plain.dump"
    assert pg_dump.decompress_to(path, as_file) == described["dump_size"]
    assert stat.S_IMODE(as_file.stat().st_mode) == 0o600
    stream = io.BytesIO()
    assert pg_dump.decompress_to(path, stream) == described["dump_size"]
    assert stream.getvalue() == as_file.read_bytes()
    with pg_dump.open_archive(path) as reader:
        assert reader.read(5) == b"PGDMP"
    listing = subprocess.run(["pg_restore", "--list", str(as_file)], capture_output=True, text=True, check=True)
    assert "TABLE DATA public orders" in listing.stdout
    assert pg_dump.verify(path, described["sha256"])["entries"] == described["entries"]


def test_a_damaged_archive_fails_verification(database, tmp_path):
    _fill(database, rows=5000)
    path = tmp_path / "cp.dump.zst"
    described = pg_dump.dump(database, path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.dump.zst"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackoutError, match="truncated"):
        pg_dump.verify(truncated)
    with pytest.raises(BackoutError, match="truncated"):
        pg_dump.decompress_to(truncated, io.BytesIO())

    flipped = tmp_path / "flipped.dump.zst"
    middle = len(data) // 2
    flipped.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:])
    with pytest.raises(BackoutError, match="corrupt"):
        pg_dump.verify(flipped)

    with pytest.raises(BackoutError, match="sha256"):
        pg_dump.verify(path, "0" * 64)

    not_a_dump = tmp_path / "other.dump.zst"
    import zstandard

    not_a_dump.write_bytes(zstandard.ZstdCompressor().compress(b"hello, not an archive" * 100))
    with pytest.raises(BackoutError, match="not a readable archive"):
        pg_dump.verify(not_a_dump)
    assert described["size"] == len(data)


def test_password_goes_in_the_environment_never_in_argv():
    argv, env = pg_dump.pg_dump_command("postgres://alice:s3cr%40t-pw@db.example.com:6543/shop?sslmode=require")
    assert env["PGPASSWORD"] == "s3cr@t-pw"
    joined = " ".join(argv)
    assert "s3cr" not in joined
    assert "host=db.example.com" in joined and "port=6543" in joined and "dbname=shop" in joined
    assert "user=alice" in joined and "sslmode=require" in joined
    assert "--exclude-schema=backout" in argv and "--compress=0" in argv and "--format=custom" in argv


def test_unreachable_database_fails_cleanly(tmp_path):
    directory = tmp_path / "backups"
    with pytest.raises(BackoutError) as info:
        pg_dump.dump("postgresql://postgres:hunter22@127.0.0.1:1/nowhere", directory / "cp.dump.zst")
    message = str(info.value)
    assert message.startswith("pg_dump failed") and "127.0.0.1" in message
    assert "hunter22" not in message and "\n" not in message
    assert _files(directory) == []


def test_pg_dump_failure_names_the_problem(database, tmp_path):
    missing = urlunsplit(urlsplit(database)._replace(path="/backout_no_such_db"))
    with pytest.raises(BackoutError, match='database "backout_no_such_db" does not exist'):
        pg_dump.dump(missing, tmp_path / "cp.dump.zst")
    assert _files(tmp_path) == []


def test_an_existing_archive_is_never_overwritten(database, tmp_path):
    path = tmp_path / "cp.dump.zst"
    path.write_bytes(b"keep me")
    with pytest.raises(BackoutError, match="already exists"):
        pg_dump.dump(database, path)
    assert path.read_bytes() == b"keep me"


def test_backup_dir_that_cannot_be_made(database, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(BackoutError, match="cannot create the backup directory .*BACKOUT_BACKUP_DIR"):
        pg_dump.dump(database, blocker / "sub" / "cp.dump.zst")


def test_file_size_limit_fails_cleanly_and_removes_the_temporary_file(database, tmp_path):
    """A disk that fills up mid-dump: the same write error path, made real with RLIMIT_FSIZE."""
    _fill(database, rows=20000)
    directory = tmp_path / "backups"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from backout.backups import pg_dump
        from backout.errors import BackoutError
        try:
            pg_dump.dump({database!r}, Path({str(directory)!r}) / "cp.dump.zst")
        except BackoutError as exc:
            print(exc)
            sys.exit(1)
    """)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=limit,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "the backup is larger than this process may write" in done.stdout
    assert _files(directory) == []


def test_strategies_are_chosen_by_name():
    assert backups.strategy("pg_dump") is pg_dump
    with pytest.raises(BadInput, match="unknown backup strategy 'tape'.*pg_dump, heroku, pitr, none"):
        backups.strategy("tape")


class _Addons:
    """The two Platform API answers the pitr strategy reads (the sandbox tests use the real API)."""

    def __init__(self, plan: str) -> None:
        self.plan = plan

    def attachments(self, app: str) -> list[dict]:
        return [{"name": "DATABASE", "id": "att-1", "addon": {"id": "addon-1", "name": "postgresql-x"}}]

    def addon_info(self, app: str, addon: str) -> dict:
        return {"id": addon, "name": "postgresql-x", "plan": {"name": f"heroku-postgresql:{self.plan}"}}


def test_none_and_pitr_strategies(database):
    lines: list[str] = []
    ctx = backups.BackupContext(checkpoint_id="cp_X", app="my-app", database_url=database, progress=lines.append)
    assert backups.take("none", ctx) == {"strategy": "none"}
    with pytest.raises(ConfigError, match="HEROKU_API_KEY is not set, and BACKOUT_BACKUP=pitr needs the Platform API"):
        backups.take("pitr", ctx)
    with pytest.raises(BadInput, match="postgresql-x is on heroku-postgresql:essential-0 .* use BACKOUT_BACKUP=heroku"):
        backups.take("pitr", dataclasses.replace(ctx, heroku=_Addons("essential-0")))
    ctx = dataclasses.replace(ctx, heroku=_Addons("standard-0"))
    mark = backups.take("pitr", ctx)
    assert mark["plan"] == "heroku-postgresql:standard-0" and mark["addon_id"] == "addon-1"
    assert mark["time"].endswith("Z") and "/" in mark["lsn"]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        later = conn.execute("SELECT pg_current_wal_lsn() > %s::pg_lsn", (mark["lsn"],)).fetchone()[0]
    assert later is True
    with pytest.raises(BackoutError, match="cannot connect"):
        backups.take("pitr", backups.BackupContext(checkpoint_id="cp_X", app="a", heroku=_Addons("standard-0"),
                                                   database_url="postgresql://127.0.0.1:1/x"))


def _children_of_this_process() -> list[str]:
    import os

    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()):
            found.append(fields.get("Name", "").strip())
    return found


def test_a_dump_started_before_its_destination_is_known_waits_in_memory_then_writes_it_whole(
        make_database, tmp_path, monkeypatch):
    """The release phase starts pg_dump first thing; its compressed output is held (up to the spool
    limit, then pg_dump waits) until the checkpoint names the file, and the archive is the same."""
    source, target = make_database(), make_database()
    _fill(source)
    monkeypatch.setattr(pg_dump, "SPOOL_LIMIT", 64 * 1024)  # far less than this archive: pg_dump must wait
    started = pg_dump.Dump(source)
    started.pump.join(1.0)
    assert started.pump.is_alive()  # held at the limit, not finished
    assert started.spool.size < 64 * 1024 + pg_dump.CHUNK
    path = tmp_path / "cp_EARLY.dump.zst"
    described = pg_dump.dump(source, path, started=started)
    assert described["rows"] == {"public.orders": 20000}
    assert described["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert pg_dump.verify(path, described["sha256"])["entries"] == described["entries"]
    _restore(path, target)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 20000


def test_a_dump_no_checkpoint_uses_is_stopped_and_leaves_nothing(database, tmp_path):
    _fill(database, rows=5000)
    started = pg_dump.Dump(database)
    assert {"pg_dump", "psql"} <= set(_children_of_this_process())
    started.stop()
    started.stop()  # a second stop (the release phase's `finally`) changes nothing
    assert not {"pg_dump", "psql"} & set(_children_of_this_process())
    assert not started.pump.is_alive()
    with psycopg.connect(database) as conn:  # the snapshot's transaction is gone with psql
        held = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND backend_xmin IS NOT NULL AND pid <> pg_backend_pid()").fetchone()[0]
    assert held == 0


def test_a_dump_that_cannot_connect_is_not_started_early(tmp_path):
    from backout import settings as settings_module

    settings = settings_module.load({"DATABASE_URL": "postgresql://postgres:hunter22@127.0.0.1:1/nowhere",
                                     "BACKOUT_BACKUP": "pg_dump", "BACKOUT_BACKUP_DIR": str(tmp_path)})
    assert pg_dump.start_early(settings) is None  # the checkpoint's own dump reports it, in order
    assert pg_dump.start_early(dataclasses.replace(settings, backup="heroku")) is None


@pytest.mark.parametrize("url", [
    "postgres://alice:s3cr%40t-pw@db.example.com:6543/shop?sslmode=require",
    "postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql",
    "postgresql://u:pw0rd@[::1]:5432,h2:5433/d%20b?application_name=a%20b's",
    "postgresql://h1,h2:5433/db",
    "postgresql://u:p+q@h/db?options=-c%20a%3Db+c&sslmode=",
    "host=x password='y z' dbname=shop",
])
def test_a_url_is_read_as_libpq_reads_it_without_its_password(url):
    """URIs are taken apart without psycopg (a release phase starts pg_dump before importing it):
    the result must be what libpq itself reads, minus the password."""
    from psycopg.conninfo import conninfo_to_dict

    conninfo, env = client_args(url, {})
    expected = conninfo_to_dict(url)
    password = expected.pop("password", None)
    assert conninfo_to_dict(conninfo) == expected
    assert env.get("PGPASSWORD") == password
    assert password is None or password not in conninfo
