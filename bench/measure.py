"""What both benchmarks measure the same way: /proc figures of a process, and the floors
(an asyncio spawn of /bin/true, one durable SQLite commit) taken in the same run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestra.db import connect  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid (every thread, not its children), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise KeyError(f"{key} not in /proc/{pid}/status")


def memory_bytes(pid: int, key: str = "VmRSS") -> int:
    return int(status_field(pid, key).split()[0]) * 1024  # "12345 kB"


def catches(pid: int, signum: int) -> bool:
    """True if pid has a handler for signum (without one, SIGUSR1 would kill it)."""
    return bool(int(status_field(pid, "SigCgt"), 16) >> (signum - 1) & 1)


async def floor_spawn(count: int) -> list[float]:
    """Seconds of each asyncio spawn+wait of /bin/true."""
    samples: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("/bin/true")
        await proc.wait()
        samples.append(time.perf_counter() - start)
    return samples


def floor_commit(path: Path, count: int) -> list[float]:
    """Seconds of each durable SQLite insert+commit (orchestra.db: WAL, synchronous=FULL)."""
    conn = connect(path)
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        samples: list[float] = []
        for n in range(count):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (f"row {n}",))
            conn.execute("COMMIT")
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        conn.close()


def timed_cli(argv: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a command line to its end: its wall-clock seconds and its stdout; a failure
    raises with the end of its stderr (a benchmark of a failing command measures nothing)."""
    start = time.perf_counter()
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=120,
                            stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:]) or argv[0]} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed, result.stdout
