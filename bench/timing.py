"""Fair timing for the benchmarks: whole processes, runs paired round-robin with the bare tools'
(A/B/A/B...), medians with min and max, peak memory, the machine and its load.

A user waits for a whole process, start-up included, so every contender is a command line (or
a short chain of them) started afresh. Pairing the runs spreads whatever else the machine does
over all contenders alike instead of over whichever ran during it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import psycopg

from backout.output import human_bytes

GNU_TIME = "/usr/bin/time"  # Debian's package `time`


@dataclass
class Run:
    """One run of a contender: its wall time, the peak memory of its processes (each process's
    own maximum resident set, summed over the processes of a pipeline), and anything it reports."""

    seconds: float
    peak_rss: int = 0
    facts: dict = field(default_factory=dict)


@dataclass
class Contender:
    name: str
    run: Callable[[], Run]
    prepare: Callable[[], None] = lambda: None  # untimed: fresh target databases and the like
    runs: list[Run] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def spread(self) -> str:
        times = [r.seconds for r in self.runs]
        return f"{statistics.median(times):.2f} s ({min(times):.2f}–{max(times):.2f})"

    def peak(self) -> int:
        return max(r.peak_rss for r in self.runs)


def parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every paired benchmark takes: --sizes, --rounds, --keep."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--sizes", default="100,600", help="database sizes in MB (default 100,600)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each contender, paired (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the databases for the next run")
    return p


def pair(contenders: Sequence[Contender], rounds: int, say: Callable[[str], None] = print) -> None:
    """Run every contender once per round, in the same order each round (A, B, C, A, B, C, ...)."""
    for n in range(1, rounds + 1):
        for contender in contenders:
            contender.prepare()
            contender.runs.append(contender.run())
        say(f"  round {n}: " + ", ".join(f"{c.name} {c.runs[-1].seconds:.2f}s" for c in contenders))


def processes(*argvs: Sequence[str], env: dict[str, str] | None = None, pipe: bool = False) -> Run:
    """Run the commands one after the other (or, with `pipe`, as one pipeline, each one's output
    feeding the next; the last one's output is discarded), timing them whole; each must exit 0.

    Each runs under GNU time for its peak memory: a child forked from this Python process would
    report this process's resident set as its own (Linux keeps the high-water mark across exec).
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        reports = [Path(tmp, str(i)) for i in range(len(argvs))]
        timed = [[GNU_TIME, "-f", "%M", "-o", str(report), *argv] for report, argv in zip(reports, argvs)]
        if pipe:
            procs: list[subprocess.Popen] = []
            for i, argv in enumerate(timed):
                last = i == len(timed) - 1
                procs.append(subprocess.Popen(argv, env=env, stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL if last else subprocess.PIPE))
                if len(procs) > 1:
                    procs[-2].stdout.close()  # type: ignore[union-attr]
            for proc in procs:
                _check(proc, proc.wait())
        else:
            for argv in timed:
                proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                _check(proc, proc.wait())
        seconds = time.perf_counter() - started
        peak = sum(int(report.read_text().split()[-1]) * 1024 for report in reports)
    return Run(seconds, peak)


def _check(proc: subprocess.Popen, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"{' '.join(map(str, proc.args[5:]))[:200]} exited with status {status}")


def fsynced(run: Run, path: Path) -> Run:
    """`run`, which wrote `path`, with the file's fsync added to its time (an archive counts once it
    is on disk) and the file's size in its facts."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    run.seconds += time.perf_counter() - started
    run.facts["size"] = path.stat().st_size
    return run


def machine(url: str) -> list[str]:
    """What the figures were measured on: cores, CPU model, memory, PostgreSQL, load now."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
    with psycopg.connect(url) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    zstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    return [
        f"machine: {os.cpu_count()} cores, {model}, {human_bytes(mem_kb * 1024)}, {platform.system()} {platform.release()}",
        f"software: PostgreSQL {server}; {zstd}; Python {platform.python_version()}",
        f"load average: {load()}",
    ]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"

