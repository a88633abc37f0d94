"""kill -9 of a player: mid-run, before its result is acknowledged, around the start."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.conftest import MakeCluster, job_json, submit
from tests.faults.helpers import assert_queue_invariants, marker_score, runs


def _state(cluster, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return job_json(cluster, "getstatus", job_id)[1]["tasks"][0]["state"]


def test_player_killed_mid_run_reports_lost_and_never_reruns(make_cluster: MakeCluster,
                                                              tmp_path: Path) -> None:
    cluster = make_cluster()
    marker = tmp_path / "runs"
    finished = tmp_path / "finished"
    cluster.add_score("long", marker_score(marker, sleep=3) + f"touch {finished}\n", "interface env\n")
    code, out, _ = submit(cluster, "long", "p1.test")
    job_id = out.strip()
    cluster.wait_for(lambda: _state(cluster, job_id) == "running", "running")
    cluster.wait_for(lambda: marker.exists(), "score started")
    cluster.player("p1.test").stop(signal.SIGKILL)
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    task = job["tasks"][0]
    assert code == 1 and task["state"] == "lost"
    assert "player restarted while the score ran" in task["reason"]
    assert finished.exists(), "the score should have run to its end, not been killed"
    assert "done" in task["stdout"]  # its output survived the player's death
    assert runs(marker)[task["task_id"]] == 1
    assert_queue_invariants(cluster, marker, [job_id])


def _crash_player_at(cluster, point: str, marker: Path) -> str:  # type: ignore[no-untyped-def]
    """Submit a marker job to a player that kills itself at point; restart it; job id."""
    cluster.add_score("mark", marker_score(marker), "interface env\n")
    cluster.start_conductor()
    doomed = cluster.start_player("p1.test", extra_env={"ORCHESTRA_FAULT": point})
    cluster.wait_connected(["p1.test"])
    code, out, _ = submit(cluster, "mark", "p1.test")
    assert code == 0
    cluster.wait_for(lambda: not doomed.running, f"player killed at {point}")
    return out.strip()


def test_player_killed_before_its_result_is_acknowledged_delivers_it_after_restart(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(start=False)
    marker = tmp_path / "runs"
    job_id = _crash_player_at(cluster, "player.finished", marker)
    assert _state(cluster, job_id) == "running"
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    assert code == 0 and job["tasks"][0]["stdout"] == "done\n"
    assert_queue_invariants(cluster, marker, [job_id])


def test_player_killed_after_accepting_runs_the_task_once_after_restart(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(start=False)
    marker = tmp_path / "runs"
    job_id = _crash_player_at(cluster, "player.accepted", marker)
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    assert code == 0
    assert_queue_invariants(cluster, marker, [job_id])


def test_player_killed_between_recording_the_start_and_spawning_reports_lost(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(start=False)
    marker = tmp_path / "runs"
    job_id = _crash_player_at(cluster, "player.started", marker)
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    assert code == 1 and job["tasks"][0]["state"] == "lost"
    assert "before the score was spawned" in job["tasks"][0]["reason"]
    assert runs(marker) == {}
    assert_queue_invariants(cluster, marker, [job_id])


def test_player_sigterm_leaves_running_scores_alone(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    marker = tmp_path / "runs"
    cluster.add_score("long", marker_score(marker, sleep=2), "interface env\n")
    code, out, _ = submit(cluster, "long", "p1.test")
    cluster.wait_for(lambda: marker.exists(), "score started")
    assert cluster.player("p1.test").stop(signal.SIGTERM) == 0
    time.sleep(0.5)
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", out.strip())
    assert job["tasks"][0]["state"] == "lost" and "done" in job["tasks"][0]["stdout"]
    assert_queue_invariants(cluster, marker, [out.strip()])
