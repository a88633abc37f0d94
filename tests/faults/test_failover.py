"""Two conductors on one PostgreSQL queue: the leader killed (-9), frozen (SIGSTOP) or cut
off from the database during a burst of submissions; the standby takes over.

Every scenario counts exactly: each acknowledged job is in the queue and ran once on
each of its targets, no task ran twice, nothing is left open, and a ``getstatus --wait``
started before the failure carries on to the job's end. A frozen leader that wakes up
finds itself fenced and steps down without committing anything more.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.devcluster import Cluster
from devtools.tcpproxy import Proxy, proxied_dsn
from tests.conftest import MakeCluster, queue_rows, store_dsn
from tests.faults.helpers import assert_queue_invariants, marker_score, runs

pytestmark = pytest.mark.backends("postgresql")
PLAYERS = ["p1.test", "p2.test"]
BURST = 40
# Far above the documented bound (README, "Two conductors"): a hang fails, a slow run does not.
TAKEOVER_LIMIT = 60.0


def events(cluster: Cluster, name: str, event: str) -> list[dict[str, Any]]:
    return cluster.log_events(name, event)


def two_conductors(make_cluster: MakeCluster, leader_dsn: Callable[[str], str] | None = None) -> Cluster:
    """conductor leads (its dsn through leader_dsn, if given) and conductor2 stands by;
    both players and the ops.test audience list both addresses."""
    # At debug, the logs say what each player's leader watches heard, should a scenario fail.
    cluster = make_cluster(PLAYERS, start=False, log_level="debug", audience_names=["ops.test"], conductor_settings={
        "audience": {"ops.test": {"scores": ["*"], "targets": ["*"]}}})
    if leader_dsn is not None:  # the leader's own [store] dsn; the rest keep the direct one
        own = {"store": {"dsn": leader_dsn(str(cluster.store_table["dsn"]))}}
        cluster._write_conductor(cluster.conductors()["conductor"], own)  # noqa: SLF001
    cluster.add_conductor("conductor2")
    cluster.start_conductor()
    for name in PLAYERS:
        cluster.start_player(name)
    cluster.wait_connected(PLAYERS)
    cluster.start_conductor(name="conductor2", wait=False)
    cluster.wait_for(lambda: events(cluster, "conductor2", "conductor_state"), "conductor2 standing by",
                     proc=cluster.conductor("conductor2"))
    return cluster


class Burst:
    """Submissions from a client that lists both conductors and, when a submission ends
    without an answer (exit 4), sends it again with the same idempotency key until one
    answers: so every job of the burst ends acknowledged exactly once."""

    def __init__(self, cluster: Cluster, count: int) -> None:
        self.cluster, self.count = cluster, count
        self.config = cluster.remote_audience_config("ops.test")
        self.acknowledged: dict[str, str] = {}  # key -> job id
        self.retried = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        for number in range(self.count):
            key = f"burst-{number}"
            deadline = time.monotonic() + TAKEOVER_LIMIT
            while time.monotonic() < deadline:
                result = self.cluster.cli("submitjob", "--idempotency-key", key, "--all-of", "mark", *PLAYERS,
                                          config=self.config, timeout=60)
                if result.returncode == 0:
                    self.acknowledged[key] = result.stdout.strip()
                    break
                if result.returncode != 4:
                    self.errors.append(result.stderr)
                    return
                self.retried += 1
                time.sleep(0.2)
            else:
                self.errors.append(f"{key}: no conductor answered for {TAKEOVER_LIMIT} s")
                return

    def join(self) -> None:
        self.thread.join(timeout=TAKEOVER_LIMIT * 3)
        assert not self.thread.is_alive(), "the burst never finished"
        assert not self.errors, self.errors


def run_failover(make_cluster: MakeCluster, tmp_path: Path, fail: Callable[[Cluster], None],
                 leader_dsn: Callable[[str], str] | None = None) -> Cluster:
    cluster = two_conductors(make_cluster, leader_dsn)
    marker = tmp_path / "runs"
    cluster.add_score("mark", marker_score(marker, sleep=0.2), "interface env\ntimeout 60\n")
    # A wait begun before the failure, on a job that outlives it.
    config = cluster.remote_audience_config("ops.test")
    long = cluster.cli("submitjob", "--all-of", "mark", *PLAYERS, config=config)
    assert long.returncode == 0, long.stderr
    waiter = threading.Thread(target=lambda: setattr(waiter, "result", cluster.cli(
        "getstatus", "--wait", "--timeout", str(TAKEOVER_LIMIT * 2), long.stdout.strip(), config=config)))
    waiter.start()
    burst = Burst(cluster, BURST)
    burst.start()
    cluster.wait_for(lambda: len(burst.acknowledged) >= BURST // 4, "a quarter of the burst acknowledged", timeout=60)
    failed_at = time.monotonic()
    fail(cluster)
    cluster.wait_for(lambda: events(cluster, "conductor2", "leadership_taken"), "conductor2 taking over",
                     timeout=TAKEOVER_LIMIT, proc=cluster.conductor("conductor2"))
    took = time.monotonic() - failed_at
    burst.join()
    # The burst straddled the failover: both conductors committed some of it.
    for name in ("conductor", "conductor2"):
        assert any(not event["existing"] for event in events(cluster, name, "job_submitted")), name
    assert took < TAKEOVER_LIMIT
    waiter.join(timeout=TAKEOVER_LIMIT * 3)
    assert waiter.result.returncode == 0, waiter.result.stdout + waiter.result.stderr  # type: ignore[attr-defined]
    acknowledged = [long.stdout.strip(), *burst.acknowledged.values()]
    assert len(set(acknowledged)) == BURST + 1  # one job per key: none submitted twice
    for job_id in [row["id"] for row in queue_rows(cluster, "jobs")]:
        result = cluster.cli("getstatus", "--wait", "--timeout", "60", str(job_id), via="conductor2")
        assert result.returncode == 0, (job_id, result.stdout, result.stderr)
    assert_queue_invariants(cluster, marker, acknowledged)
    counted = runs(marker)
    # acknowledged = executed once on each target: nothing lost, nothing run twice
    tasks = queue_rows(cluster, "tasks")
    assert {str(task["job_id"]) for task in tasks} >= set(acknowledged)
    assert all(counted[str(task["id"])] == 1 for task in tasks if task["job_id"] in acknowledged)
    assert sum(counted.values()) == len(tasks)
    return cluster


@pytest.mark.slow
def test_leader_killed_during_a_burst_the_standby_takes_over(make_cluster: MakeCluster, tmp_path: Path) -> None:
    def kill(cluster: Cluster) -> None:
        cluster.conductor().send_signal(signal.SIGKILL)

    cluster = run_failover(make_cluster, tmp_path, kill)
    [taken] = events(cluster, "conductor2", "leadership_taken")
    assert int(taken["epoch"]) == 2  # type: ignore[call-overload]


@pytest.mark.slow
def test_frozen_leader_is_fenced_and_steps_down_when_it_wakes(make_cluster: MakeCluster, tmp_path: Path) -> None:
    def freeze(cluster: Cluster) -> None:
        cluster.conductor().send_signal(signal.SIGSTOP)

    cluster = run_failover(make_cluster, tmp_path, freeze)
    dsn = store_dsn(cluster)
    assert dsn is not None
    with psycopg.connect(dsn) as pg:
        row = pg.execute("SELECT count(*) FROM task_events").fetchone()
        assert row is not None
        history = row[0]
    old = cluster.conductor()
    old.send_signal(signal.SIGCONT)
    cluster.wait_for(lambda: not old.running, "the old leader stepping down", timeout=30)
    assert old.popen is not None and old.popen.returncode == 1
    [lost] = events(cluster, "conductor", "leadership_lost")
    assert any(words in str(lost["reason"]) for words in ("ran out", "took the lease over", "fenced"))
    with psycopg.connect(dsn) as pg:  # nothing more was committed by the old leader
        row = pg.execute("SELECT count(*) FROM task_events").fetchone()
        assert row is not None and row[0] == history
    result = cluster.cli("listplayers", via="conductor2")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_leader_cut_off_from_the_database_steps_down_and_the_standby_takes_over(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    proxies: list[Proxy] = []

    def through_proxy(dsn: str) -> str:
        proxy, proxied = proxied_dsn(dsn)
        proxies.append(proxy)
        return proxied

    def cut(cluster: Cluster) -> None:
        proxies[0].cut()

    try:
        cluster = run_failover(make_cluster, tmp_path, cut, through_proxy)
        old = cluster.conductor()
        cluster.wait_for(lambda: not old.running, "the cut-off leader stepping down", timeout=30)
        [lost] = events(cluster, "conductor", "leadership_lost")
        assert "renew" in str(lost["reason"]) or "database" in str(lost["reason"])
    finally:
        for proxy in proxies:
            proxy.close()


def test_a_standby_refuses_naming_the_leader_and_stops_cleanly(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.add_conductor("conductor2")
    cluster.start_conductor()
    standby = cluster.start_conductor(name="conductor2", wait=False)
    cluster.wait_for(lambda: events(cluster, "conductor2", "standing_by"), "conductor2 standing by", proc=standby)
    result = cluster.cli("listplayers", via="conductor2")
    assert result.returncode == 4
    assert result.stderr.strip().endswith(f"is not the leader: the leader is {cluster.conductor_addresses()[0]}")
    assert standby.stop() == 0
    assert events(cluster, "conductor2", "conductor_stopped")
    assert not events(cluster, "conductor2", "leadership_taken")
