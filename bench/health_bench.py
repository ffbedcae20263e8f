"""Health monitor benchmarks: how fast a bad release is rolled back, and what watching costs.

    .venv/bin/python bench/health_bench.py [--interval 1] [--trials 3] [--targets 1000] [--measure 60]

1. Failure to rollback request: a sandbox app (real dynos), the real release hook, a real
   `backout worker`; a good release is verified, then a bad one deployed. Measured: from the first
   counted failed probe (the probe's start) to the rollback request's row in the ledger.
   Target: at most threshold x interval + 1 s.
2. Crash to rollback request: a release whose web dyno exits at boot. Measured: from the first
   "State changed from up to crashed" in the sandbox's log to the rollback request.
   Target: at most one interval (grace is 10 intervals, so probes cannot be what catches it).
3. Watching cost: one `backout worker` watching TARGETS local HTTP targets (each its own port,
   like separate apps) at a 10 s interval. Measured: the worker's CPU time (user + system, all
   its threads) over MEASURE seconds, after two intervals of warm-up, as a share of one core.
   Target: under 25%.

Needs PostgreSQL and Redis as for the tests (BACKOUT_TEST_POSTGRES_URL, a redis-server binary).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backout import ledger
from backout.health.watches import WatchRegistry, new_record
from backout.heroku import HerokuClient
from backout_sandbox.server import start as start_sandbox
from tests.support import (  # noqa: E402
    SERVER_URL,
    child_env,
    create_database,
    database_url,
    deploy_slug,
    drop_database,
    health_app_files,
    start_redis_server,
    start_worker,
    stop_workers,
    wait_for,
)

# Many loopback targets in one asyncio process: each port is an app's health endpoint.
TARGETS = textwrap.dedent("""
    import asyncio, signal, sys
    count = 0
    async def handle(reader, writer):
        global count
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                path = line.split(b" ")[1] if b" " in line else b"/"
                while (await reader.readline()) not in (b"\\r\\n", b""):
                    pass
                count += 1
                body = b"[]" if path.endswith(b"/dynos") else b'{"status":"ok"}'
                writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                             % (len(body), body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()
    async def main():
        servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(int(sys.argv[1]))]
        print(",".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: print(count, flush=True))
        await asyncio.Event().wait()
    asyncio.run(main())
""")


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1e6
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GB RAM, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class Services:
    """A private redis-server, a throwaway ledger database and a sandbox."""

    def __init__(self, tmp: Path) -> None:
        self.redis_proc, redis_server = start_redis_server()
        self.redis_url = redis_server + "/0"
        self.db_name = create_database("backout_bench")
        self.ledger_url = database_url(self.db_name)
        self.sandbox = start_sandbox(port=0, state_path=tmp / "sandbox.json", work_dir=tmp / "sandbox",
                                     postgres_url=SERVER_URL, stop_timeout=5)

    def close(self) -> None:
        self.sandbox.stop(drop_databases=True)
        self.redis_proc.terminate()
        self.redis_proc.wait(10)
        drop_database(self.db_name)


class App:
    def __init__(self, services: Services, name: str, health: dict[str, str], tmp: Path) -> None:
        self.services, self.name = services, name
        box = services.sandbox
        self.client = HerokuClient(box.token, box.url, box.url)
        web_url = self.client.create_app(name)["web_url"]
        self.client.update_config_vars(name, {
            "DATABASE_URL": services.ledger_url, "REDIS_URL": services.redis_url, "BACKOUT_BACKUP": "none",
            "BACKOUT_MIGRATIONS": "none", **box.env, **health})
        self.env = child_env({**box.env, **health, "BACKOUT_DATABASE_URL": services.ledger_url,
                              "REDIS_URL": services.redis_url, "BACKOUT_HEALTH_URL": web_url + "health",
                              "BACKOUT_LOG_LEVEL": "WARNING"})
        self.tmp = tmp

    def deploy(self, code: str) -> dict:
        done = deploy_slug(self.client, self.name, {"web": "python web.py", "release": "backout release -- true"},
                           health_app_files(code), commit=f"{code}{time.time_ns()}", timeout=120, poll=0.05)
        if done["status"] != "succeeded":
            raise SystemExit(f"release v{done['version']} of {self.name} failed its release phase")
        return done

    def events(self, version: int) -> list[dict]:
        with ledger.connect(self.services.ledger_url) as conn:
            return [e for e in reversed(ledger.health_events(conn, self.name, limit=1000))
                    if e["release_version"] == version]

    def request_after(self, after: float) -> dict | None:
        with ledger.connect(self.services.ledger_url) as conn:
            rows = [r for r in ledger.list_requests(conn, self.name) if epoch(r["created_at"]) > after]
        return rows[-1] if rows else None

    def wait_settled(self) -> None:
        """Until the latest request has finished and the rollback release's watch is over."""
        def settled() -> bool:
            with ledger.connect(self.services.ledger_url) as conn:
                requests = ledger.list_requests(conn, self.name)
            return all(r["status"] in ("succeeded", "failed", "refused") for r in requests)

        wait_for(settled, 120, "the rollback to finish", poll=0.2)


def bench_failure(services: Services, tmp: Path, interval: float, trials: int) -> list[float]:
    threshold = 3
    health = {"BACKOUT_HEALTH_INTERVAL": str(interval), "BACKOUT_HEALTH_THRESHOLD": str(threshold),
              "BACKOUT_HEALTH_GRACE": str(max(2.0, 2 * interval)), "BACKOUT_HEALTH_WINDOW": str(2 * interval),
              "BACKOUT_HEALTH_TIMEOUT": "2", "BACKOUT_HEALTH_COOLDOWN": "0",
              "BACKOUT_HEALTH_RELEASE_HEADER": "X-Release"}
    app = App(services, f"bad-{int(interval * 1000)}ms", health, tmp)
    proc = start_worker(app.env, tmp / f"worker-failure-{interval}.log")
    results = []
    try:
        good = app.deploy("good")
        wait_for(lambda: any(e["kind"] == "verified" for e in app.events(good["version"])), 120, "the good release verified", 0.1)
        for _ in range(trials):
            deployed_at = time.time()
            bad = app.deploy("bad")
            request = wait_for(lambda: app.request_after(deployed_at), 120, "the rollback request", 0.05)
            failed = wait_for(lambda: next((e for e in app.events(bad["version"]) if e["kind"] == "failed"), None), 30,
                              "the failed event")
            results.append(epoch(request["created_at"]) - failed["detail"]["first_counted_at"])
            app.wait_settled()
            rollback = app.client.current_release(app.name)
            wait_for(lambda: any(e["kind"] in ("verified", "suppressed") for e in app.events(rollback["version"])), 120,
                     "the rollback release's watch to end", 0.1)
    finally:
        stop_workers([proc], timeout=20)
        app.client.close()
    return results


def first_crash(log_path: Path, after: float) -> float | None:
    if not log_path.exists():
        return None
    for line in log_path.read_text(errors="replace").splitlines():
        if "State changed from" in line and line.rstrip().endswith("to crashed"):
            at = epoch(line.split(" ", 1)[0])
            if at > after:
                return at
    return None


def bench_crash(services: Services, tmp: Path, interval: float, trials: int, webhook: bool) -> list[float]:
    health = {"BACKOUT_HEALTH_INTERVAL": str(interval), "BACKOUT_HEALTH_GRACE": str(10 * interval),
              "BACKOUT_HEALTH_WINDOW": str(interval), "BACKOUT_HEALTH_COOLDOWN": "0"}
    name = f"crash-{'hook' if webhook else 'poll'}-{int(interval * 1000)}ms"
    app = App(services, name, health, tmp)
    if webhook:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app.env.update(BACKOUT_HEALTH_WEBHOOK_PORT=str(port), BACKOUT_HEALTH_WEBHOOK_SECRET=uuid.uuid4().hex * 2,
                       BACKOUT_HEALTH_WEBHOOK_URL=f"http://127.0.0.1:{port}/dyno-events")
    proc = start_worker(app.env, tmp / f"worker-{name}.log")
    results = []
    log_path = services.sandbox.log_path(name)
    try:
        for _ in range(trials):
            good = app.deploy("good")
            wait_for(lambda: any(e["kind"] == "watch_started" for e in app.events(good["version"])), 60, "the watch")
            with ledger.connect(services.ledger_url) as conn:
                ledger.mark_release_verified(conn, name, good["version"])
            deployed_at = time.time()
            app.deploy("crash")
            request = wait_for(lambda: app.request_after(deployed_at), 120, "the rollback request", 0.05)
            crashed = wait_for(lambda: first_crash(log_path, deployed_at), 10, "the crash in the log")
            results.append(epoch(request["created_at"]) - crashed)
            app.wait_settled()
    finally:
        stop_workers([proc], timeout=20)
        app.client.close()
    return results


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def bench_watch_cost(services: Services, tmp: Path, targets: int, interval: float, measure: float) -> dict:
    server = subprocess.Popen([sys.executable, "-c", TARGETS, str(targets)], stdout=subprocess.PIPE, text=True)
    ports = [int(p) for p in server.stdout.readline().split(",")]

    def served() -> int:
        server.send_signal(signal.SIGUSR1)
        return int(server.stdout.readline())

    conn = redis.Redis.from_url(services.redis_url)
    conn.flushdb()
    registry = WatchRegistry(conn)
    now = time.time()
    for i, port in enumerate(ports):
        # Past their grace, with a window longer than the run: every probe counts, none ends a watch.
        registry.register(new_record(f"target-{i:04d}", 2, now - 120 + (i % 100) * interval / 100,
                                     [f"http://127.0.0.1:{port}/health"]))
    env = child_env({
        "BACKOUT_DATABASE_URL": services.ledger_url, "REDIS_URL": services.redis_url,
        # The Platform API (for dyno listings, rationed to 0.5 a second) is the targets' server too.
        "HEROKU_API_KEY": "bench-token", "BACKOUT_HEROKU_API_URL": f"http://127.0.0.1:{ports[0]}",
        "BACKOUT_HEALTH_INTERVAL": str(interval), "BACKOUT_HEALTH_GRACE": "60",
        "BACKOUT_HEALTH_WINDOW": "86400", "BACKOUT_LOG_LEVEL": "WARNING",
    })
    proc = start_worker(env, tmp / "worker-cost.log")
    try:
        owner_keys = lambda: sum(1 for _ in conn.scan_iter("backout:health:owner:*", count=1000))  # noqa: E731
        wait_for(lambda: owner_keys() == targets, 60, "all watches held", 0.2)
        time.sleep(2 * interval)  # every target probed twice: connections open, steady state
        cpu0, wall0, served0 = cpu_seconds(proc.pid), time.monotonic(), served()
        time.sleep(measure)
        cpu1, wall1, served1 = cpu_seconds(proc.pid), time.monotonic(), served()
    finally:
        stop_workers([proc], timeout=20)
        server.terminate()
        server.wait(10)
        conn.flushdb()
    wall = wall1 - wall0
    return {"targets": targets, "interval": interval, "seconds": wall, "cpu": cpu1 - cpu0,
            "share": (cpu1 - cpu0) / wall, "probes": served1 - served0,
            "expected": targets * wall / interval}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval for benches 1 and 2 (s)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--measure", type=float, default=60.0, help="seconds of CPU measurement for bench 3")
    parser.add_argument("--only", choices=("failure", "crash", "cost"), help="run one bench only")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="backout-health-bench-") as tmp_name:
        tmp = Path(tmp_name)
        services = Services(tmp)
        try:
            if args.only in (None, "failure"):
                times = bench_failure(services, tmp, args.interval, args.trials)
                target = 3 * args.interval + 1
                print(f"\n1. first counted failed probe -> rollback request (threshold 3, interval {args.interval:g}s)")
                print(f"   trials {len(times)}: median {statistics.median(times):.3f}s, max {max(times):.3f}s; "
                      f"target <= {target:g}s: {'met' if max(times) <= target else 'MISSED'}")
                print("   each: " + ", ".join(f"{t:.3f}s" for t in times))
            if args.only in (None, "crash"):
                print(f"\n2. first dyno crash -> rollback request (interval {args.interval:g}s, grace {10 * args.interval:g}s)")
                for webhook in (True, False):
                    times = bench_crash(services, tmp, args.interval, args.trials, webhook)
                    how = "dyno webhook + listing" if webhook else "dyno listing only"
                    print(f"   {how:24s} trials {len(times)}: median {statistics.median(times):.3f}s, "
                          f"max {max(times):.3f}s; target <= {args.interval:g}s: "
                          f"{'met' if max(times) <= args.interval else 'MISSED'}")
            if args.only in (None, "cost"):
                cost = bench_watch_cost(services, tmp, args.targets, 10.0, args.measure)
                print(f"\n3. one worker watching {cost['targets']} targets every {cost['interval']:g}s, "
                      f"measured over {cost['seconds']:.0f}s")
                print(f"   CPU {cost['cpu']:.2f}s = {100 * cost['share']:.1f}% of one core; target < 25%: "
                      f"{'met' if cost['share'] < 0.25 else 'MISSED'}")
                print(f"   probes answered {cost['probes']} (expected {cost['expected']:.0f}); "
                      f"CPU per probe {1e3 * cost['cpu'] / max(1, cost['probes']):.2f} ms")
        finally:
            services.close()


if __name__ == "__main__":
    main()
