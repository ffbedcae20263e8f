"""`backout sandbox`: serves until SIGTERM, prints what a client needs, stops its dynos."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psycopg
import pytest
import requests

from backout.heroku import ACCEPT
from tests.support import SERVER_URL

pytestmark = pytest.mark.integration


def run_sandbox(tmp_path: Path, token: str | None) -> tuple[subprocess.Popen[str], dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if k != "HEROKU_API_KEY"}
    if token:
        env["HEROKU_API_KEY"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "backout", "sandbox", "--port", "0", "--state", str(tmp_path / "state.json"),
         "--postgres-url", SERVER_URL],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    while not lines or "Ctrl-C" not in lines[-1]:
        line = proc.stdout.readline()
        assert line, "backout sandbox exited early:\n" + "".join(lines)
        lines.append(line)
    text = "".join(lines)
    exports = dict(re.findall(r"^  export (\w+)=(\S+)$", text, re.M))
    return proc, exports, text


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_the_sandbox_command_prints_exports_serves_and_stops_its_dynos(tmp_path: Path) -> None:
    proc, exports, text = run_sandbox(tmp_path, token=None)
    try:
        url, token = exports["BACKOUT_HEROKU_API_URL"], exports["HEROKU_API_KEY"]
        assert exports["BACKOUT_HEROKU_DATA_URL"] == url and re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        http = requests.Session()
        http.headers.update({"Authorization": f"Bearer {token}", "Accept": ACCEPT})
        assert http.post(f"{url}/apps", json={"name": "sbx-cli"}, timeout=10).status_code == 201
        pidfile = tmp_path / "worker.pid"
        http.patch(f"{url}/apps/sbx-cli/config-vars", json={"PIDFILE": str(pidfile)}, timeout=10).raise_for_status()
        slug = http.post(f"{url}/apps/sbx-cli/slugs", json={"process_types": {"worker": "echo $$ > $PIDFILE; exec sleep 600"}},
                         timeout=10).json()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            folder = tarfile.TarInfo("./app")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        requests.put(slug["blob"]["url"], data=buf.getvalue(), timeout=10).raise_for_status()
        http.post(f"{url}/apps/sbx-cli/releases", json={"slug": slug["id"]}, timeout=10).raise_for_status()
        http.patch(f"{url}/apps/sbx-cli/formation/worker", json={"quantity": 1}, timeout=10).raise_for_status()
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the worker dyno never started"
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        os.kill(pid, 0)  # running
        database = http.post(f"{url}/apps/sbx-cli/addons", json={"plan": "heroku-postgresql:essential-0"},
                             timeout=30).json()
        database_url = http.get(f"{url}/apps/sbx-cli/config-vars", timeout=10).json()["DATABASE_URL"]
    finally:
        status, out = stop(proc)
    assert status == 0, out
    assert "stopping dynos" in out
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/apps", timeout=2)
    # Stopping keeps the state and the databases for the next start; this test drops its own.
    assert database["name"] in (tmp_path / "state.json").read_text()
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE "{name}"')


def test_the_sandbox_command_accepts_the_token_in_heroku_api_key_and_no_other(tmp_path: Path) -> None:
    proc, exports, text = run_sandbox(tmp_path, token="my-own-sandbox-token")
    try:
        assert "HEROKU_API_KEY" not in exports and "my-own-sandbox-token" not in text
        url = exports["BACKOUT_HEROKU_API_URL"]
        good = requests.get(f"{url}/apps", headers={"Authorization": "Bearer my-own-sandbox-token", "Accept": ACCEPT},
                            timeout=10)
        bad = requests.get(f"{url}/apps", headers={"Authorization": "Bearer another", "Accept": ACCEPT}, timeout=10)
        assert (good.status_code, bad.status_code) == (200, 401)
    finally:
        status, out = stop(proc)
    assert status == 0, out


def test_a_taken_port_is_refused_with_the_fix(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "backout", "sandbox", "--port", str(port), "--state",
                              str(tmp_path / "s.json"), "--postgres-url", SERVER_URL],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "--port 0" in out.stderr
