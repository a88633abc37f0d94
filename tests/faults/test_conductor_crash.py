"""kill -9 of the conductor at every step of submit -> dispatch -> grant -> result -> ack."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from tests.conftest import MakeCluster, queue_rows, submit
from tests.faults.helpers import assert_queue_invariants, marker_score

POINTS = ["submit.committed", "dispatch.claimed", "grant.committed", "result.committed"]
RUNS_PER_BATCH = 6
BATCHES = 4  # 24 seeded runs in all


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(BATCHES))
def test_conductor_killed_at_each_step_loses_nothing_and_runs_nothing_twice(
        make_cluster: MakeCluster, tmp_path: Path, batch: int) -> None:
    players = ["p1.test", "p2.test"]
    cluster = make_cluster(players)
    marker = tmp_path / "runs"
    cluster.add_score("mark", marker_score(marker, sleep=0.1), "interface env\ntimeout 30\n")
    acknowledged: list[str] = []
    for seed in range(batch * RUNS_PER_BATCH, (batch + 1) * RUNS_PER_BATCH):
        rng = random.Random(seed)
        point, nth = POINTS[seed % len(POINTS)], rng.randint(1, 3)
        cluster.conductor().stop()
        doomed = cluster.start_conductor(extra_env={"ORCHESTRA_FAULT": f"{point}:{nth}"})
        cluster.wait_connected(players)
        for _ in range(3):
            code, out, err = submit(cluster, "--all-of", "mark", *players, timeout=30)
            if code == 0:
                acknowledged.append(out.strip())
            else:
                assert code == 4, err  # the conductor died before acknowledging
        try:
            cluster.wait_for(lambda: not doomed.running, f"fault {point}:{nth}", timeout=15)
        except TimeoutError:
            pytest.fail(f"seed {seed}: the conductor never reached {point}:{nth}")
        assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
        cluster.start_conductor()
        # Every job in the queue, acknowledged or not (a submit killed after its commit
        # is in the queue though its client saw an error), must run to an end.
        for job_id in [row["id"] for row in queue_rows(cluster, "jobs")]:
            result = cluster.cli("getstatus", "--wait", "--timeout", "60", job_id)
            assert result.returncode in (0, 1), (seed, point, result.stdout, result.stderr)
        assert_queue_invariants(cluster, marker, acknowledged)
    assert len(acknowledged) >= RUNS_PER_BATCH
