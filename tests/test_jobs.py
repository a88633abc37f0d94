"""Job lifecycle features: deadlines, cancel, one-of failover, idempotent submit."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MakeCluster, job_json, submit
from tests.faults.helpers import assert_queue_invariants, marker_score, runs


def test_job_for_an_offline_player_expires_at_its_deadline(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    code, job = job_json(cluster, "submitjob", "--expires", "1", "--wait", "--timeout", "30",
                         "hello", "p2.test")
    assert code == 1
    assert job["tasks"][0]["state"] == "expired"
    assert "deadline" in job["tasks"][0]["reason"]


def test_cancel_ends_queued_tasks_at_once_and_kills_running_ones(make_cluster: MakeCluster,
                                                                tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    pidfile = tmp_path / "pid"
    cluster.add_score("stubborn", f"#!/bin/sh\necho $$ > {pidfile}\nsleep 300\n", "interface env\n")
    code, out, _ = submit(cluster, "--all-of", "stubborn", "p1.test", "p2.test")
    job_id = out.strip()
    cluster.wait_for(lambda: pidfile.exists(), "score running on p1")
    result = cluster.cli("canceljob", "--wait", "--timeout", "30", "--json", job_id)
    assert result.returncode == 1, result.stderr
    states = {t["player"]: t["state"] for t in job_json(cluster, "getstatus", job_id)[1]["tasks"]}
    assert states == {"p1.test": "cancelled", "p2.test": "cancelled"}
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    # p2 connects later: the cancelled task never reaches it.
    cluster.start_player("p2.test")
    cluster.wait_connected(["p2.test"])
    assert states == {t["player"]: t["state"] for t in job_json(cluster, "getstatus", job_id)[1]["tasks"]}
    assert cluster.cli("canceljob", "0" * 32).returncode == 5


def test_one_of_fails_over_when_the_chosen_player_refuses(make_cluster: MakeCluster,
                                                         tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    marker = tmp_path / "runs"
    cluster.add_score("only2", marker_score(marker), "interface env\n", ["p2.test"])
    for _ in range(4):
        code, job = job_json(cluster, "submitjob", "--one-of", "--wait", "--timeout", "30",
                             "only2", "p1.test", "p2.test")
        assert code == 0 and job["tasks"][0]["player"] == "p2.test"
    # No target has it, as both reported: refused at submit, nothing queued.
    code, out, err = submit(cluster, "--one-of", "missing-everywhere", "p1.test", "p2.test")
    assert code == 2 and "no target can run missing-everywhere" in err


def test_one_of_fails_over_when_the_chosen_player_dies_before_starting(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    marker = tmp_path / "runs"
    cluster.add_score("mark", marker_score(marker), "interface env\n")
    cluster.start_conductor()
    doomed = cluster.start_player("p1.test", extra_env={"ORCHESTRA_FAULT": "player.accepted"})
    cluster.wait_connected(["p1.test"])
    code, out, _ = submit(cluster, "--one-of", "mark", "p1.test", "p2.test")
    job_id = out.strip()
    cluster.wait_for(lambda: not doomed.running, "p1 killed after accepting")
    cluster.start_player("p2.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    assert code == 0 and job["tasks"][0]["player"] == "p2.test"
    # p1 comes back with the task in its spool: it is told to drop it, never runs it.
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    cluster.wait_for(lambda: "result_ignored" in cluster.log_text("conductor"), "stale copy dropped")
    assert runs(marker) == {job["tasks"][0]["task_id"]: 1}
    assert_queue_invariants(cluster, marker, [job_id])


def test_idempotency_key_returns_the_first_job(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    first = submit(cluster, "--idempotency-key", "deploy-42", "hello", "p1.test")
    again = submit(cluster, "--idempotency-key", "deploy-42", "hello", "p1.test")
    other = submit(cluster, "--idempotency-key", "deploy-43", "hello", "p1.test")
    assert first[0] == again[0] == other[0] == 0
    assert first[1] == again[1] != other[1]
    code, reply = job_json(cluster, "submitjob", "--idempotency-key", "deploy-42", "hello", "p1.test")
    assert reply == {"job_id": first[1].strip(), "existing": True}


def test_finished_jobs_are_purged_after_the_retention_period(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(conductor_settings={"job_retention": 1})
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert code == 0
    cluster.wait_for(lambda: cluster.cli("getstatus", job["job_id"]).returncode == 5, "purge", timeout=15)
