"""A conductor restart under 50 connected players: all come back, spread out, nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import time

import pytest

from devtools.devcluster import Proc
from tests.conftest import MakeCluster, job_json, submit

COUNT = 50


def _reconnect_times(log: str, after: float) -> dict[str, float]:
    times: dict[str, float] = {}
    for line in log.splitlines():
        if '"session_established"' not in line:
            continue
        event = json.loads(line)
        at = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        if at > after:
            times.setdefault(event["player"], at)
    return times


@pytest.mark.slow
def test_conductor_restart_with_50_players_all_reconnect_spread_out(make_cluster: MakeCluster) -> None:
    names = [f"n{n:02d}.test" for n in range(COUNT)]
    cluster = make_cluster(names, start=False, player_settings={"backoff_initial": 0.5,
                                                                "backoff_max": 4})
    cluster.start_conductor()
    swarm = Proc("swarm", [sys.executable, "-m", "tests.faults.swarm",
                           *(str(cluster.player_dir(n) / "player.toml") for n in names)],
                 cluster.root / "logs" / "swarm.log")
    swarm.start(cluster.env())
    cluster.procs["swarm"] = swarm
    cluster.wait_connected(names, timeout=60)

    code, out, err = submit(cluster, "--all-of", "sleep", "seconds=4", *names)
    assert code == 0, err
    job_id = out.strip()
    cluster.wait_for(lambda: {t["state"] for t in job_json(cluster, "getstatus", job_id)[1]["tasks"]}
                     == {"running"}, "all 50 running", timeout=60)

    cluster.conductor().stop(signal.SIGTERM)
    restarted_at = time.time()
    cluster.start_conductor()
    cluster.wait_connected(names, timeout=60)

    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "60", job_id)
    assert code == 0, [t for t in job["tasks"] if t["state"] != "ok"]
    assert "task_failed_over" not in cluster.log_text("conductor")

    times = sorted(_reconnect_times(cluster.log_text("swarm"), restarted_at).values())
    assert len(times) == COUNT
    spread = times[-1] - times[0]
    busiest = max(sum(1 for t in times if start <= t < start + 0.05) for start in times)
    assert spread >= 0.3, f"reconnects not spread out: {spread:.3f} s"
    assert busiest <= COUNT // 2, f"{busiest} of {COUNT} reconnected within 50 ms"
    swarm.stop()
