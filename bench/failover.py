"""Failover benchmark: two conductors on one PostgreSQL queue, the leader failed mid-burst.

Run ``.venv/bin/python bench/failover.py`` (``--runs``, ``--players``, ``--lease-seconds``,
``--json``; ``--help`` lists them). For each way of failing the leader, each run builds a
fresh cluster on loopback (devtools.devcluster): a real PostgreSQL server (one for the
whole run, a fresh database per run), two conductors with the default settings but
``lease_seconds``, ``--players`` real players listing both, and a client listing both
that submits all-of jobs one after the other (each with its own idempotency key, sent
again with the same key until a conductor acknowledges it). Once the burst is going, the
leader is failed:

kill       ``kill -9`` of the leader;
stop       ``SIGSTOP`` of the leader (it is woken with SIGCONT after the run, and must
           step down);
partition  the leader's connection to the database cut (a proxy stops forwarding).

Figures, per way of failing (median and worst over the runs):

takeover          from the failure to the standby's ``leadership_taken``;
submissions held  the longest wait for an acknowledgement across the failure;
players back      from the failure until every player has a session with the new leader;
acknowledged      jobs the client was told were queued (all runs);
lost              acknowledged jobs missing from the queue or not ended ok;
run twice         tasks whose score ran more than once (a marker file counts every run).

Floors, measured in the same run: ``lease_seconds`` (a standby may not take over before
the lease lapses: kill and stop cannot beat it) and a cold start (a conductor started on
the same queue until it answers, with nobody else holding the lease), so the takeover's
ratio to lease + cold start says what the failover adds to waiting out the lease.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from audience.client import Client  # noqa: E402
from devtools.devcluster import Cluster  # noqa: E402
from devtools.pgserver import PgServer, find_bindir  # noqa: E402
from devtools.tcpproxy import Proxy, proxied_dsn  # noqa: E402
from orchestra.config import load_audience  # noqa: E402
from orchestra.wire import audience_pb2  # noqa: E402

WAYS = ("kill", "stop", "partition")
SCORE_CONF = "interface env\ntimeout 60\n"
FAST: dict[str, object] = {"heartbeat_seconds": 0.5, "liveness_timeout": 4}
PLAYER_FAST: dict[str, object] = {"heartbeat_seconds": 0.5, "liveness_timeout": 4}
AUDIENCE = "bench.ops"
SETTLE_SECONDS = 120.0


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def log_time(cluster: Cluster, name: str, event: str) -> float | None:
    """The wall-clock time of the first ``event`` in conductor ``name``'s log."""
    for record in cluster.log_events(name, event):
        return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()
    return None


class Burst:
    """All-of jobs one after the other from one client listing both conductors; each
    submission sent again, same key, until acknowledged."""

    def __init__(self, cluster: Cluster, players: Sequence[str]) -> None:
        self.client = Client(load_audience(cluster.remote_audience_config(AUDIENCE), True))
        self.players = list(players)
        self.acknowledged: list[tuple[float, str]] = []  # (when, job id)
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            request = audience_pb2.SubmitRequest(score="mark", targets=self.players, scope=audience_pb2.SCOPE_ALL_OF,
                                                 idempotency_key=f"bench-{number}")
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                try:
                    reply = self.client.submit(request)
                except Exception as err:  # noqa: BLE001 - unanswered: send it again, same key
                    if time.monotonic() > deadline:
                        self.errors.append(f"bench-{number}: {err}")
                        return
                    time.sleep(0.05)
                    continue
                self.acknowledged.append((time.time(), reply.job_id))
                break
            number += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=SETTLE_SECONDS)
        self.client.close()

    def longest_wait(self, since: float) -> float:
        """The longest gap between acknowledgements around ``since`` (the failure)."""
        times = [when for when, _ in self.acknowledged]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False) if later >= since]
        return max(gaps, default=0.0)


def cluster_for(root: Path, server: PgServer, players: Sequence[str], lease: float,
                leader_dsn: Callable[[str], str] | None = None) -> Cluster:
    name = f"b{os.urandom(6).hex()}"
    dsn = server.create_database(name)
    cluster = Cluster(root, players, audience_names=[AUDIENCE], log_level="info",
                      store={"backend": "postgresql", "dsn": dsn, "lease_seconds": lease},
                      conductor_settings={**FAST, "audience": {AUDIENCE: {"scores": ["*"], "targets": ["*"]}}},
                      player_settings=PLAYER_FAST)
    if leader_dsn is not None:
        cluster._write_conductor(cluster.conductors()["conductor"],  # noqa: SLF001
                                 {"store": {"dsn": leader_dsn(dsn)}})
    cluster.add_conductor("conductor2")
    return cluster


def runs_of(marker: Path) -> Counter[str]:
    if not marker.exists():
        return Counter()
    return Counter(line.split()[0] for line in marker.read_text().splitlines() if line.strip())


def one_run(root: Path, server: PgServer, way: str, players: Sequence[str], lease: float) -> dict[str, Any]:
    proxies: list[Proxy] = []

    def through_proxy(dsn: str) -> str:
        proxy, proxied = proxied_dsn(dsn)
        proxies.append(proxy)
        return proxied

    cluster = cluster_for(root, server, players, lease, through_proxy if way == "partition" else None)
    marker = root / "runs"
    try:
        cluster.start_conductor()
        for name in players:
            cluster.start_player(name)
        cluster.wait_connected(players)
        cluster.add_score("mark", f"#!/bin/sh\necho \"$ORC_TASK_ID\" >> {marker}\n", SCORE_CONF)
        cluster.start_conductor(name="conductor2", wait=False)
        cluster.wait_for(lambda: log_time(cluster, "conductor2", "standing_by") is not None, "the standby")
        burst = Burst(cluster, players)
        cluster.wait_for(lambda: len(burst.acknowledged) >= 20, "the burst under way", timeout=60)
        failed_at = time.time()
        leader = cluster.conductor()
        if way == "kill":
            leader.send_signal(signal.SIGKILL)
        elif way == "stop":
            leader.send_signal(signal.SIGSTOP)
        else:
            proxies[0].cut()
        cluster.wait_for(lambda: log_time(cluster, "conductor2", "leadership_taken") is not None, "the takeover",
                         timeout=SETTLE_SECONDS)
        taken = log_time(cluster, "conductor2", "leadership_taken") or 0.0
        cluster.wait_for(lambda: set(players) <= cluster.connected(via="conductor2"), "players back",
                         timeout=SETTLE_SECONDS)
        back = time.time()
        cluster.wait_for(lambda: sum(1 for when, _ in burst.acknowledged if when > back) >= 20,
                         "the burst after the failover", timeout=SETTLE_SECONDS)
        burst.stop()
        if burst.errors:
            raise RuntimeError(burst.errors[0])
        if way == "stop":
            leader.send_signal(signal.SIGCONT)
        acknowledged = [job_id for _, job_id in burst.acknowledged]
        dsn = str(cluster.store_table["dsn"])
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:  # every acknowledged job to its end
            with psycopg.connect(dsn) as pg:
                open_jobs = pg.execute("SELECT count(*) FROM jobs WHERE finished_at IS NULL").fetchone()
            if open_jobs is not None and open_jobs[0] == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{open_jobs} jobs never finished")
            time.sleep(0.2)
        with psycopg.connect(dsn) as pg:
            status: dict[str, str] = {str(row[0]): str(row[1]) for row in pg.execute("SELECT id, status FROM jobs")}
            tasks = [row[0] for row in pg.execute("SELECT id FROM tasks").fetchall()]
        counted = runs_of(marker)
        stepped_down = True
        if way != "kill":
            try:
                cluster.wait_for(lambda: not leader.running, "the old leader stepping down", timeout=60)
            except TimeoutError:
                stepped_down = False
        return {
            "way": way, "takeover_seconds": taken - failed_at, "held_seconds": burst.longest_wait(failed_at),
            "players_back_seconds": back - failed_at, "acknowledged": len(acknowledged),
            "distinct": len(set(acknowledged)),
            "lost": sum(1 for job_id in acknowledged if status.get(job_id) != "ok"),
            "run_twice": sum(1 for task in tasks if counted[task] > 1),
            "never_ran": sum(1 for task in tasks if counted[task] == 0),
            "old_leader_stepped_down": stepped_down,
        }
    finally:
        cluster.stop()
        for proxy in proxies:
            proxy.close()


def cold_start(root: Path, server: PgServer, lease: float) -> float:
    """A conductor started on a fresh queue until it answers on its socket."""
    cluster = cluster_for(root, server, ["p1.bench"], lease)
    try:
        started = time.monotonic()
        cluster.start_conductor()
        return time.monotonic() - started
    finally:
        cluster.stop()


def seconds(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} s (worst {max(values):.2f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="bench/failover.py")
    parser.add_argument("--runs", type=int, default=3, help="runs of each way of failing (3)")
    parser.add_argument("--players", type=int, default=3, help="real players (3)")
    parser.add_argument("--lease-seconds", type=float, default=5.0, help="[store] lease_seconds (5, the default)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"which failures ({','.join(WAYS)})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every run as JSON")
    args = parser.parse_args(argv)
    if find_bindir() is None:
        print("bench/failover.py: PostgreSQL is not installed (Debian package postgresql)", file=sys.stderr)
        return 2
    ways = [way.strip() for way in args.ways.split(",") if way.strip()]
    players = [f"p{n}.bench" for n in range(1, args.players + 1)]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestra-failover-") as tmp, PgServer() as server:
        progress("cold start floor")
        floors = [cold_start(Path(tmp) / f"cold{n}", server, args.lease_seconds) for n in range(3)]
        floor = statistics.median(floors)
        for way in ways:
            for run in range(args.runs):
                progress(f"{way}, run {run + 1} of {args.runs}")
                results.append(one_run(Path(tmp) / f"{way}{run}", server, way, players, args.lease_seconds))
    print(f"floors: lease_seconds {args.lease_seconds:g} s; cold start of a conductor {floor:.2f} s"
          f" (median of {len(floors)})")
    header = ("failure", "takeover", "ratio to lease + cold start", "submissions held", "players back",
              "acknowledged", "lost", "run twice", "old leader stepped down")
    rows = []
    for way in ways:
        mine = [r for r in results if r["way"] == way]
        takeover = [r["takeover_seconds"] for r in mine]
        rows.append((way, seconds(takeover), f"{statistics.median(takeover) / (args.lease_seconds + floor):.2f}x",
                     seconds([r["held_seconds"] for r in mine]), seconds([r["players_back_seconds"] for r in mine]),
                     str(sum(r["acknowledged"] for r in mine)), str(sum(r["lost"] for r in mine)),
                     str(sum(r["run_twice"] for r in mine)),
                     f"{sum(1 for r in mine if r['old_leader_stepped_down'])} of {len(mine)}"))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if args.json:
        args.json.write_text(json.dumps({"lease_seconds": args.lease_seconds, "cold_start_seconds": floors,
                                         "runs": results}, indent=2))
    bad = sum(r["lost"] + r["run_twice"] + (r["acknowledged"] - r["distinct"]) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
