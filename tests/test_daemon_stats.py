"""What an operator reads from a running daemon: SIGUSR1 stats, and the open-files limit
the conductor raises for itself (real daemons, real signals, real rlimits)."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from typing import Any

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster, job_json


def stats_of(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return cluster.log_events(name, "stats")


def test_sigusr1_logs_commit_counters_without_stopping_either_daemon(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(log_level="warning")  # stats are written whatever the level
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0
    for proc, name in ((cluster.conductor(), "conductor"), (cluster.player("p1.test"), "player-p1.test")):
        proc.send_signal(signal.SIGUSR1)
        cluster.wait_for(lambda name=name: stats_of(cluster, name), f"{name} stats line")
        [stats] = stats_of(cluster, name)
        # One job: the conductor committed it, the claim, the grant and the result; the
        # player its accept, start, pid and result (some may have shared a commit).
        assert isinstance(stats["commits"], int) and 1 <= stats["commits"] <= stats["writes"]  # type: ignore[operator]
        assert stats["writes"] >= 4 and stats["cpu_seconds"] > 0  # type: ignore[operator]
        assert proc.running
    [conductor] = stats_of(cluster, "conductor")
    assert conductor["sessions"] == 1 and conductor["queued"] == 0
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0


def test_the_conductor_raises_its_open_files_soft_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    script = ("import resource; from orchestra.daemon import raise_fd_limit;"
              f" resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}));"
              " print(raise_fd_limit('conductor'), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    reported, now = (int(word) for word in out.split())
    wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard  # all the hard limit allows
    assert reported == now == wanted
