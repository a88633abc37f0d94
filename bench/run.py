"""Benchmarks against a floor measured in the same run (``.venv/bin/python bench/run.py``).

Starts the real daemons on loopback and prints:
  * submit -> result latency p50/p99 of a trivial score with 1 player (one job at a time),
  * tasks/s with 1 and with 4 players (many jobs in flight),
  * the floor: spawning /bin/true with asyncio, and one durable SQLite insert+commit
    (WAL, synchronous=FULL), since every task costs a few of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from orchestra.db import connect  # noqa: E402
from devtools.devcluster import Cluster  # noqa: E402
from orchestra.wire import audience_pb2, audience_pb2_grpc  # noqa: E402

NOOP = "#!/bin/sh\nexit 0\n"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def floor_spawn(count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec("/bin/true")
        await proc.wait()
    return (time.perf_counter() - start) / count


def floor_sqlite(path: Path, count: int) -> float:
    conn = connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    start = time.perf_counter()
    for n in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (f"row {n}",))
        conn.execute("COMMIT")
    elapsed = (time.perf_counter() - start) / count
    conn.close()
    return elapsed


def latency(stub: audience_pb2_grpc.AudienceStub, player: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        reply = stub.Submit(audience_pb2.SubmitRequest(score="noop", targets=[player]))
        job = next(iter(stub.WaitJob(audience_pb2.WaitRequest(job_id=reply.job_id, timeout_seconds=30))))
        assert job.status == "ok", job
        samples.append(time.perf_counter() - start)
    return samples


def throughput(stub: audience_pb2_grpc.AudienceStub, players: list[str], jobs: int) -> float:
    start = time.perf_counter()
    ids = [stub.Submit(audience_pb2.SubmitRequest(
        score="noop", targets=players, scope=audience_pb2.SCOPE_ALL_OF)).job_id
        for _ in range(jobs)]
    for job_id in ids:
        job = next(iter(stub.WaitJob(audience_pb2.WaitRequest(job_id=job_id, timeout_seconds=120))))
        assert job.status == "ok", job
    return jobs * len(players) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        root = Path(tmp)
        spawn = asyncio.run(floor_spawn(args.samples))
        commit = floor_sqlite(root / "floor.db", args.samples)
        players = [f"p{n}.bench" for n in range(1, 5)]
        cluster = Cluster(root / "cluster", players, log_level="warning",
                          player_settings={"max_concurrent": 4})
        for name in players:
            cluster.add_score("noop", NOOP, "interface env\ntimeout 30\n", [name])
        try:
            cluster.start()
            channel = grpc.insecure_channel(f"unix:{cluster.socket}")
            stub = audience_pb2_grpc.AudienceStub(channel)
            latency(stub, players[0], 10)  # warm up
            samples = latency(stub, players[0], args.samples)
            one = throughput(stub, players[:1], args.jobs)
            four = throughput(stub, players, args.jobs // 4 or 1)
            channel.close()
        finally:
            cluster.stop()
    out = sys.stdout.write
    out("floor (same machine, same run)\n")
    out(f"  asyncio spawn+wait of /bin/true   {spawn * 1000:8.2f} ms   ({1 / spawn:8.0f} /s)\n")
    out(f"  durable SQLite insert+commit      {commit * 1000:8.2f} ms   ({1 / commit:8.0f} /s)\n")
    out("orchestra (conductor + players on loopback, mTLS, trivial score)\n")
    out(f"  submit->result latency, 1 player  p50 {percentile(samples, 0.5) * 1000:7.2f} ms"
        f"   p99 {percentile(samples, 0.99) * 1000:7.2f} ms   (n={len(samples)},"
        f" mean {statistics.mean(samples) * 1000:.2f} ms)\n")
    out(f"  throughput, 1 player              {one:8.1f} tasks/s\n")
    out(f"  throughput, 4 players             {four:8.1f} tasks/s\n")
    out(f"  latency p50 / (spawn + 4 commits) {percentile(samples, 0.5) / (spawn + 4 * commit):8.1f} x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
