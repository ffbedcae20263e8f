"""Running dyno commands as local processes: their environment, start, stop, and logs.

A dyno sees only its app's config vars, the dyno metadata, and a few variables of the machine
(PATH, HOME, locale), never the sandbox's own environment: a token or a database URL set for the
sandbox must not leak into an app. The directory of the Python running the sandbox goes first on
PATH, so that `python` and `backout` in a Procfile command are the ones installed with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Mapping

MACHINE_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


def dyno_env(config: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a dyno: machine basics, then config vars, then `extra` (metadata, PORT)."""
    env = {name: os.environ[name] for name in MACHINE_VARIABLES if name in os.environ}
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([python_bin, env.get("PATH", os.defpath)])
    # Heroku's Python buildpack sets it, so dyno output reaches the logs line by line.
    env["PYTHONUNBUFFERED"] = "true"
    env.update(config)
    env.update(extra)
    return env


def spawn(command: str, cwd: Path, env: Mapping[str, str], output: IO[bytes] | int) -> subprocess.Popen[bytes]:
    """Run a Procfile command with the shell, as Heroku does, in a process group of its own so that
    stopping it stops everything it started."""
    return subprocess.Popen(
        ["/bin/sh", "-c", command], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
        stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM to the process group, SIGKILL after `timeout` seconds (Heroku waits 30); the exit status."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
    # Children that outlived the shell would keep pipes and ports open.
    signal_group(proc, signal.SIGKILL)
    return exit_status(proc.returncode)


def exit_status(returncode: int) -> int:
    """A status as a shell reports it: killed by signal N is 128 + N (SIGTERM: 143)."""
    return 128 - returncode if returncode < 0 else returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class AppLog:
    """An app's log file, lines written the way `heroku logs` shows them:
    `2024-01-01T12:00:00.000000+00:00 app[web.1]: listening`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, source: str, line: str) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._lock, open(self.path, "a", encoding="utf-8", errors="replace") as out:
            out.write(f"{stamp} {source}: {line.rstrip()}\n")

    def pump(self, stream: IO[bytes], source: str, copy: IO[bytes] | None = None) -> threading.Thread:
        """Copy a process's output into the log, line by line, in a thread; also into `copy` if given."""

        def run() -> None:
            for raw in iter(stream.readline, b""):
                if copy is not None:
                    copy.write(raw)
                    copy.flush()
                self.write(source, raw.decode("utf-8", "replace"))
            stream.close()

        thread = threading.Thread(target=run, name=f"log {source}", daemon=True)
        thread.start()
        return thread
