"""Dynos as real local processes, supervised the way Heroku supervises them.

Each dyno is one shell process running its process type's command from the release's slug, in
the slug's directory, with the app's config vars. A web dyno gets a free loopback port in `PORT`
and is `starting` until something listens there (`crashed` with R10 if nothing does within the
boot timeout); other dynos are `up` once started. A process that exits, whatever its status, is
`crashed` and is started again: the first time at once, then after growing delays, and the count
starts over once a dyno has stayed up for a while (Heroku: up to 20 minutes between restarts;
the sandbox defaults are shorter, see `Backoff`).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backout_sandbox import processes
from backout_sandbox.core.store import new_id, now


@dataclass
class DynoSpec:
    """What one dyno runs: a change of any field (a new release, new config) means a restart."""

    name: str  # web.1
    type: str
    command: str
    cwd: Path
    env: dict[str, str] = field(repr=False)
    release_id: str
    release_version: int
    size: str = "Basic"


@dataclass
class Backoff:
    """Delays before restarting a crashed dyno: none for the first crash, then base, 2 x base, ...
    up to `cap`; a dyno that stayed up `reset_after` seconds has its crash count reset."""

    base: float = 1.0
    cap: float = 20.0
    reset_after: float = 60.0

    def delay(self, crashes: int) -> float:
        return 0.0 if crashes <= 1 else min(self.cap, self.base * 2 ** (crashes - 2))


Listener = Callable[[str, dict[str, Any]], None]  # (app id, dyno info) on every state change


class Dyno:
    def __init__(self, app_id: str, spec: DynoSpec, log: processes.AppLog, listener: Listener,
                 backoff: Backoff, stop_timeout: float, boot_timeout: float) -> None:
        self.app_id = app_id
        self.spec = spec
        self.id = new_id()
        self.state = "starting"
        self.port: int | None = None
        self.created_at = self.updated_at = now()
        self._log = log
        self._listener = listener
        self._backoff = backoff
        self._stop_timeout = stop_timeout
        self._boot_timeout = boot_timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dyno {spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the dyno to stop (SIGTERM, then SIGKILL after the stop timeout); returns at once."""
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.spec.name, "type": self.spec.type, "command": self.spec.command,
            "state": self.state, "size": self.spec.size, "port": self.port,
            "release_id": self.spec.release_id, "release_version": self.spec.release_version,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }

    def _system(self, message: str) -> None:
        self._log.write(f"heroku[{self.spec.name}]", message)

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self._system(f"State changed from {self.state} to {state}")
        self.state = state
        self.updated_at = now()
        self._listener(self.app_id, self.info())

    def _run(self) -> None:
        crashes = 0
        self._listener(self.app_id, self.info())
        while not self._stopping.is_set():
            self._set_state("starting")
            started = time.monotonic()
            status = self._run_once()
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= self._backoff.reset_after:
                crashes = 0
            crashes += 1
            self._system(f"Process exited with status {status}")
            self._set_state("crashed")
            if self._stopping.wait(self._backoff.delay(crashes)):
                break
        self.state = "down"
        self.updated_at = now()

    def _run_once(self) -> int:
        """Start the process and watch it until it exits or the dyno is stopped; its exit status."""
        spec = self.spec
        extra = {"DYNO": spec.name, "HEROKU_DYNO_ID": self.id}
        if spec.type == "web":
            self.port = processes.free_port()
            extra["PORT"] = str(self.port)
        env = processes.dyno_env(spec.env, extra)
        self._system(f"Starting process with command `{spec.command}`")
        try:
            proc = processes.spawn(spec.command, spec.cwd, env, subprocess.PIPE)
        except OSError as exc:
            self._system(f"Error: cannot start the process: {exc}")
            return 127
        spawned = time.monotonic()
        assert proc.stdout is not None
        pump = self._log.pump(proc.stdout, f"app[{spec.name}]")
        up = spec.type != "web"
        if up:
            self._set_state("up")
        try:
            while True:
                if self._stopping.is_set():
                    self._system("Stopping all processes with SIGTERM")
                    status = processes.terminate(proc, self._stop_timeout)
                    self._system(f"Process exited with status {status}")
                    return status
                try:
                    return processes.exit_status(proc.wait(0.2 if up else 0.05))
                except subprocess.TimeoutExpired:
                    pass
                if not up:
                    if self.port is not None and processes.port_open(self.port):
                        up = True
                        self._set_state("up")
                    elif time.monotonic() - spawned > self._boot_timeout:
                        self._system(f"Error R10 (Boot timeout) -> Web process failed to bind to $PORT "
                                     f"within {self._boot_timeout:g} seconds of launch")
                        processes.signal_group(proc, signal.SIGKILL)
                        return processes.exit_status(proc.wait())
        finally:
            processes.terminate(proc, 0)
            pump.join(2)


class DynoManager:
    """Every app's dynos: started, scaled, restarted, listed, and stopped with the sandbox."""

    def __init__(self, logs_dir: Path, listener: Listener, backoff: Backoff | None = None,
                 stop_timeout: float = 10.0, boot_timeout: float = 60.0) -> None:
        self.logs_dir = logs_dir
        self.listener = listener
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.boot_timeout = boot_timeout
        self._lock = threading.Lock()
        self._apps: dict[str, dict[str, Dyno]] = {}
        self._retiring: list[Dyno] = []
        self._logs: dict[str, processes.AppLog] = {}

    def log(self, app_name: str) -> processes.AppLog:
        with self._lock:
            if app_name not in self._logs:
                self._logs[app_name] = processes.AppLog(self.logs_dir / f"{app_name}.log")
            return self._logs[app_name]

    def converge(self, app_id: str, app_name: str, specs: list[DynoSpec], restart: bool = False) -> None:
        """Make the app's dynos these: start missing ones, stop extra ones, restart changed ones
        (all of them when `restart`)."""
        log = self.log(app_name)
        with self._lock:
            current = self._apps.setdefault(app_id, {})
            wanted = {spec.name: spec for spec in specs}
            for name, dyno in list(current.items()):
                if restart or name not in wanted or dyno.spec != wanted[name]:
                    self._retire(dyno)
                    del current[name]
            for name, spec in sorted(wanted.items()):
                if name not in current:
                    dyno = Dyno(app_id, spec, log, self.listener, self.backoff, self.stop_timeout, self.boot_timeout)
                    current[name] = dyno
                    dyno.start()

    def restart(self, app_id: str, app_name: str, which: str | None = None, type_: str | None = None) -> bool:
        """Restart one dyno (by name or id), every dyno of a process type, or all; False if none matched."""
        log = self.log(app_name)
        with self._lock:
            current = self._apps.get(app_id, {})
            chosen = [d for d in current.values()
                      if (which is None or which in (d.spec.name, d.id)) and (type_ is None or d.spec.type == type_)]
            for dyno in chosen:
                self._retire(dyno)
                fresh = Dyno(app_id, dyno.spec, log, self.listener, self.backoff, self.stop_timeout, self.boot_timeout)
                current[dyno.spec.name] = fresh
                fresh.start()
            return bool(chosen)

    def _retire(self, dyno: Dyno) -> None:
        dyno.stop()
        self._retiring = [d for d in self._retiring if d.alive] + [dyno]

    def dynos(self, app_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d.info() for _, d in sorted(self._apps.get(app_id, {}).items(), key=lambda kv: _order(kv[0]))]

    def web_ports(self, app_id: str) -> list[int]:
        """Ports of the app's web dynos that are up, for its router."""
        with self._lock:
            return [d.port for d in self._apps.get(app_id, {}).values()
                    if d.spec.type == "web" and d.state == "up" and d.port is not None]

    def has_crashed_web(self, app_id: str) -> bool:
        with self._lock:
            return any(d.spec.type == "web" and d.state == "crashed" for d in self._apps.get(app_id, {}).values())

    def forget(self, app_id: str) -> None:
        with self._lock:
            for dyno in self._apps.pop(app_id, {}).values():
                self._retire(dyno)

    def stop_all(self) -> None:
        """Stop every dyno and wait until they have exited."""
        with self._lock:
            everything = [d for dynos in self._apps.values() for d in dynos.values()] + self._retiring
            self._apps.clear()
            self._retiring = []
        for dyno in everything:
            dyno.stop()
        for dyno in everything:
            dyno.join(self.stop_timeout + 5)


def _order(name: str) -> tuple[str, int]:
    kind, _, number = name.partition(".")
    return kind, int(number) if number.isdigit() else 0
