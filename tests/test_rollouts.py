"""Rolling out across a fleet, with real daemons: canary then a sliding window, the
failure limit, a conductor killed mid-rollout, priorities, the scores' fleet-wide and
per-host limits, and automatic retries. Each score run appends its start and end to a
log file, so the tests see what really ran, where, when and how often."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

from tests.conftest import MakeCluster, job_json, queue_rows, submit

# Appends "start PLAYER ATTEMPT T" and "end PLAYER T" to $ORC_LOG; sleeps $ORC_SLEEP; fails
# on the players named in $ORC_FAIL_ON, or on its first attempt with ORC_FAIL_FIRST=yes.
LOGGING_SCORE = """#!/bin/sh
echo "start $ORC_PLAYER $ORC_ATTEMPT $(date +%s.%N) $ORC_JOB_ID" >> "$ORC_LOG"
sleep "${ORC_SLEEP:-0.3}"
echo "end $ORC_PLAYER $(date +%s.%N) $ORC_JOB_ID" >> "$ORC_LOG"
case " $ORC_FAIL_ON " in *" $ORC_PLAYER "*) exit 1;; esac
if [ "$ORC_FAIL_FIRST" = yes ] && [ "$ORC_ATTEMPT" = 1 ]; then exit 3; fi
exit 0
"""
CONF = "interface env\ntimeout 60\n"


def runs(log: Path) -> list[dict[str, object]]:
    """Each run: player, attempt, start, end (None while it runs), job."""
    found: list[dict[str, object]] = []
    if not log.exists():
        return found
    for line in log.read_text().splitlines():
        words = line.split()
        if words[0] == "start":
            found.append({"player": words[1], "attempt": int(words[2]), "start": float(words[3]),
                          "end": None, "job": words[4]})
        else:
            run = next(r for r in found if r["player"] == words[1] and r["job"] == words[3] and r["end"] is None)
            run["end"] = float(words[2])
    return found


def most_at_once(found: list[dict[str, object]]) -> int:
    events = sorted([(r["start"], 1) for r in found] + [(r["end"] or 9e99, -1) for r in found],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_a_canary_runs_first_then_a_sliding_window_of_tasks(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = [f"p{n}.test" for n in range(1, 7)]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "--canary", "1", "--batch", "2",
                         "step", f"LOG={log}", "SLEEP=0.4", *players)
    assert code == 0, job
    found = runs(log)
    assert sorted(r["player"] for r in found) == players  # each once
    canary = next(r for r in found if r["player"] == "p1.test")
    assert all(r["start"] >= canary["end"] for r in found if r is not canary)  # type: ignore[operator]
    assert most_at_once(found) == 2  # the window, never more
    assert job["rollout"] == {"canary": 1, "batch": 2, "max_failures": None, "phase": "done",
                              "phase_reason": "", "failures": 0}


def test_a_failed_canary_skips_every_other_target(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test", "p3.test"]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "--canary", "1", "step", f"LOG={log}",
                         "FAIL_ON=p1.test", *players)
    assert code == 1
    assert [r["player"] for r in runs(log)] == ["p1.test"]
    assert [t["state"] for t in job["tasks"]] == ["failed", "skipped", "skipped"]  # type: ignore[index]
    assert job["rollout"]["phase"] == "stopped"  # type: ignore[index]
    assert job["rollout"]["phase_reason"] == "canary task 0 ended failed"  # type: ignore[index]
    assert job["tasks"][1]["reason"] == "rollout stopped: canary task 0 ended failed"  # type: ignore[index]
    human = cluster.cli("getstatus", job["job_id"])  # type: ignore[arg-type]
    assert "stopped" in human.stdout and "skipped" in human.stdout


def test_max_failures_stops_starting_new_tasks(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = [f"p{n}.test" for n in range(1, 6)]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "--batch", "1", "--max-failures", "2",
                         "step", f"LOG={log}", "SLEEP=0.1", "FAIL_ON=p2.test p3.test", *players)
    assert code == 1
    assert [r["player"] for r in runs(log)] == ["p1.test", "p2.test", "p3.test"]
    states = [t["state"] for t in job["tasks"]]  # type: ignore[index]
    assert states == ["ok", "failed", "failed", "skipped", "skipped"]
    assert job["rollout"]["failures"] == 2 and job["rollout"]["phase"] == "stopped"  # type: ignore[index]
    assert job["status"] == "partial_fail"


def test_a_conductor_killed_mid_rollout_continues_where_it_was(make_cluster: MakeCluster,
                                                               tmp_path: Path) -> None:
    players = [f"p{n}.test" for n in range(1, 7)]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    code, out, err = submit(cluster, "--all-of", "--batch", "2", "step", f"LOG={log}", "SLEEP=1.5", *players)
    assert code == 0, err
    job_id = out.strip()
    cluster.wait_for(lambda: len(runs(log)) >= 2, "the first window running")
    cluster.conductor().stop(signal.SIGKILL)
    time.sleep(0.5)
    cluster.start_conductor()
    cluster.wait_connected(players)
    result = cluster.cli("getstatus", "--wait", "--timeout", "90", "--json", job_id)
    assert result.returncode == 0, result.stdout + result.stderr
    found = runs(log)
    assert Counter(r["player"] for r in found) == Counter(players)  # every one once: none lost, none twice
    assert all(r["attempt"] == 1 for r in found)
    assert most_at_once(found) <= 2
    assert json.loads(result.stdout)["rollout"]["phase"] == "done"


def test_higher_priority_work_goes_first_and_equal_priorities_stay_in_order(make_cluster: MakeCluster,
                                                                            tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"], player_settings={"max_concurrent": 1})
    log = tmp_path / "runs.log"
    cluster.add_score("step", LOGGING_SCORE, CONF)
    # Takes the only slot, long enough for the four submissions below on a loaded machine.
    code, _, err = submit(cluster, "step", f"LOG={log}", "SLEEP=6", "p1.test")
    assert code == 0, err
    cluster.wait_for(lambda: len(runs(log)) == 1, "the first job running")
    submitted = {}
    for name, priority in (("low", "low"), ("first-normal", "normal"), ("second-normal", "0"), ("high", "high")):
        code, out, err = submit(cluster, "--priority", priority, "--name", name, "step", f"LOG={log}",
                                "SLEEP=0", "p1.test")
        assert code == 0, err
        submitted[out.strip()] = name
    cluster.wait_for(lambda: len([r for r in runs(log) if r["end"]]) == 5, "every job run", timeout=60)
    order = [submitted[r["job"]] for r in runs(log)[1:]]  # type: ignore[index]
    assert order == ["high", "first-normal", "second-normal", "low"]


def test_a_scores_concurrency_holds_across_the_fleet(make_cluster: MakeCluster, tmp_path: Path) -> None:
    players = ["p1.test", "p2.test", "p3.test", "p4.test"]
    cluster = make_cluster(players)
    log = tmp_path / "runs.log"
    cluster.add_score("limited", LOGGING_SCORE, CONF + "concurrency 2\n")
    code, job = job_json(cluster, "submitjob", "--wait", "--all-of", "limited", f"LOG={log}", "SLEEP=0.5",
                         *players)
    assert code == 0, job
    assert job["concurrency"] == 2
    found = runs(log)
    assert len(found) == 4 and most_at_once(found) == 2


def test_an_exclusive_score_never_runs_twice_at_once_on_one_host(make_cluster: MakeCluster,
                                                                 tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"], player_settings={"max_concurrent": 4})
    log = tmp_path / "runs.log"
    cluster.add_score("alone", LOGGING_SCORE, CONF + "exclusive yes\n")
    jobs = []
    for _ in range(3):
        code, out, err = submit(cluster, "alone", f"LOG={log}", "SLEEP=0.4", "p1.test")
        assert code == 0, err
        jobs.append(out.strip())
    for job_id in jobs:
        assert cluster.cli("getstatus", "--wait", "--timeout", "60", job_id).returncode == 0
    found = runs(log)
    assert len(found) == 3 and most_at_once(found) == 1


def test_a_score_retries_a_failed_task_as_a_new_attempt(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"])
    log = tmp_path / "runs.log"
    cluster.add_score("flaky", LOGGING_SCORE, CONF + "retries 2\nretry_delay 0.5\n")
    code, job = job_json(cluster, "submitjob", "--wait", "flaky", f"LOG={log}", "FAIL_FIRST=yes", "p1.test")
    assert code == 0, job
    assert [(r["attempt"]) for r in runs(log)] == [1, 2]  # ORC_ATTEMPT counts on
    second, first = runs(log)[1], runs(log)[0]
    assert second["start"] - first["end"] >= 0.45  # type: ignore[operator]  # retry_delay
    task = job["tasks"][0]  # type: ignore[index]
    assert task["state"] == "ok" and task["retries"] == 1 and task["attempt"] == 2
    assert [(h["attempt"], h["state"], h["exit_code"]) for h in task["history"]] == [(1, "failed", 3)]
    events = [row for row in queue_rows(cluster, "task_events") if row["to_state"] == "queued"]
    assert any("retry 1 of 2" in str(row["detail"]) for row in events)
