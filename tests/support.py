"""Scaffolding the tests and the benchmarks share: throwaway databases and a private redis-server,
polling until something holds, slugs of files deployed to the sandbox (a local Heroku), requests
against the sandbox's HTTP API, and `backout worker` processes.

No pytest in here, so that the benchmarks (which put the repository's root on sys.path and import
`tests.support`) can use it too; tests import it as `support`, as they do `stub_http`.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import requests

from backout.heroku import ACCEPT, HerokuClient

SERVER_URL = os.environ.get("BACKOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# What a child process needs from our environment to run at all; the rest it is given explicitly.
HOST_ENV = ("PATH", "HOME", "LANG", "TMPDIR")


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", poll: float = 0.05) -> Any:
    """Call `check` until it returns something true, and return that; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# --- PostgreSQL and Redis -------------------------------------------------------------------------


def database_url(name: str) -> str:
    """SERVER_URL pointed at another database on the same server."""
    return urlunsplit(urlsplit(SERVER_URL)._replace(path="/" + name))


def create_database(prefix: str) -> str:
    """A fresh, empty database with a unique name starting with `prefix`; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_redis_server() -> tuple[subprocess.Popen, str]:
    """A private redis-server on a free loopback port, without persistence, once it answers; the
    process and its URL (no database number). The caller terminates the process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return proc, url
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError("redis-server did not start; is it installed (scripts/setup)?") from None
                time.sleep(0.05)
    finally:
        client.close()


def ledger_queue_names(ledger_url: str) -> tuple[str, str]:
    """The rollback and routine queues of the ledger at `ledger_url` (each ledger has its own)."""
    from backout import ledger
    from backout.worker.queues import ledger_queues

    with ledger.connect(ledger_url) as conn:
        return ledger_queues(conn)


# --- slugs and deploys ----------------------------------------------------------------------------


def slug_tarball(files: Mapping[str, str]) -> bytes:
    """A slug: the files (path relative to the app: text) under ./app/, gzipped, as Heroku unpacks it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./app/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deploy_slug(client: HerokuClient, app: str, process_types: Mapping[str, str], files: Mapping[str, str],
                commit: str | None = None, timeout: float = 60.0, poll: float = 0.1) -> dict:
    """Deploy the files as a new slug and release of `app`, as a git push does; the release once its
    release phase has ended (its status says how)."""
    slug = client.create_slug(app, process_types, commit=commit)
    client.upload_slug(slug["blob"]["url"], slug_tarball(files))
    release = client.create_release(app, slug["id"])
    return client.wait_release(app, release["id"], timeout=timeout, poll=poll)


# The standard-library HTTP server of the test apps' web processes: it answers every GET with the
# app's `answer()`, which returns (status, headers, body bytes).
_WEB_SERVER = """
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, headers, body = answer()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def web_process(app: str) -> str:
    """The source of a test app's web process (`python web.py`, on $PORT): `app` is Python that
    defines `answer()` (json, os and sys are imported)."""
    return "import http.server, json, os, sys\n" + textwrap.dedent(app) + _WEB_SERVER


# A web process whose health its code decides: "good" answers 200, "bad" 500, "crash" never starts.
# The file named by HEALTH_MODE_FILE, when it says anything but "ok", fails every release (an outage
# the code cannot fix). Each answer names the release in X-Release.
HEALTH_WEB = web_process("""
    code = open("VERSION").read().strip()
    if code == "crash":
        sys.exit("boom: this release cannot start")
    release = os.environ.get("HEROKU_RELEASE_VERSION", "")
    mode_file = os.environ.get("HEALTH_MODE_FILE", "")

    def answer():
        mode = open(mode_file).read().strip() if mode_file and os.path.exists(mode_file) else "ok"
        ok = code == "good" and mode == "ok"
        body = json.dumps({"status": "ok" if ok else "broken", "code": code}).encode()
        return 200 if ok else 500, {"X-Release": release}, body
""")


def health_app_files(code: str) -> dict[str, str]:
    """The slug files of HEALTH_WEB's app at `code` (good, bad, crash); its web process: `python web.py`."""
    return {"web.py": HEALTH_WEB, "VERSION": code}


class SandboxApi:
    """requests against a sandbox's HTTP API with its token and Heroku's Accept header."""

    def __init__(self, box: Any) -> None:
        self.base = box.url
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {box.token}", "Accept": ACCEPT})

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=60, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self(method, path, **kwargs)
        assert answer.status_code < 300, (answer.status_code, answer.text)
        return answer.json()

    def app(self, name: str) -> dict[str, Any]:
        return self.ok("POST", "/apps", json={"name": name})

    def deploy(self, app: str, files: dict[str, str], process_types: dict[str, str], commit: str | None = None,
               wait: bool = True) -> dict[str, Any]:
        slug = self.ok("POST", f"/apps/{app}/slugs", json={"process_types": process_types, "commit": commit})
        assert slug["blob"]["method"] == "put"
        put = requests.put(slug["blob"]["url"], data=slug_tarball(files), headers={"Content-Type": ""}, timeout=30)
        assert put.status_code == 200, put.text
        release = self.ok("POST", f"/apps/{app}/releases", json={"slug": slug["id"]})
        return self.settled(app, release["id"]) if wait else release

    def settled(self, app: str, release_id: str) -> dict[str, Any]:
        return wait_for(lambda: (r := self.ok("GET", f"/apps/{app}/releases/{release_id}"))["status"] != "pending" and r,
                        what="the release phase to end")

    def web(self, app: str) -> dict[str, Any]:
        """The app's answer through its web_url, once a web dyno of the current release is up."""
        url = self.ok("GET", f"/apps/{app}")["web_url"]

        def answer() -> Any:
            current = next(r for r in reversed(self.ok("GET", f"/apps/{app}/releases")) if r["current"])
            dynos = self.ok("GET", f"/apps/{app}/dynos")
            if not any(d["type"] == "web" and d["state"] == "up" and d["release"]["id"] == current["id"] for d in dynos):
                return None
            reply = requests.get(url, timeout=10)
            return reply.json() if reply.status_code == 200 else None

        return wait_for(answer, what="the web dyno to answer")

    def finished(self, app: str, transfer: dict[str, Any]) -> dict[str, Any]:
        """The Data API transfer (backup or restore) once it has finished."""
        return wait_for(lambda: (t := self.ok("GET", f"/client/v11/apps/{app}/transfers/{transfer['uuid']}?verbose=true"))
                        ["finished_at"] and t, timeout=60, what="the transfer")


# --- backout worker processes ---------------------------------------------------------------------


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` over the few variables of ours (HOST_ENV) that any child process needs."""
    return {**{k: v for k, v in os.environ.items() if k in HOST_ENV}, **env}


def start_worker(env: Mapping[str, str], log: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`backout worker ARGS` with exactly `env`, its output to `log`. Each worker leads its own
    process group, as each dyno is, so that killing the group kills its RQ scheduler too."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "backout", "worker", *args], env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)


def stop_workers(workers: Iterable[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM (a warm shutdown) to every worker still running, then SIGKILL to the process group
    of any that has not exited within `timeout`."""
    workers = list(workers)
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class S3:
    """One test's bucket on the loopback S3 endpoint, with what a process needs to use it."""

    def __init__(self, server: Any, versioned: bool = False) -> None:
        from backout.storage import config
        from backout.storage.client import make_client

        self.bucket = f"backout-{uuid.uuid4().hex[:12]}"
        self.server_env = server.env()
        self.client = make_client(config.load(self.server_env.get))
        self.client.create_bucket(Bucket=self.bucket)
        if versioned:
            self.version()

    def version(self) -> None:
        self.client.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})

    def env(self, prefix: str = "checkpoints") -> dict[str, str]:
        """The variables that make backout keep its archives under s3://<bucket>/<prefix>/."""
        return {**self.server_env, "BACKOUT_STORAGE_URL": f"s3://{self.bucket}/{prefix}"}

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents") or []]

    def uploads(self) -> list[dict]:
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads") or []

    def fetch(self, backup: dict, directory: Path) -> Path:
        """A stored checkpoint archive downloaded into `directory`, for the checks a local file gets."""
        path = directory / backup["key"].rsplit("/", 1)[-1]
        self.client.download_file(backup["bucket"], backup["key"], str(path))
        return path
