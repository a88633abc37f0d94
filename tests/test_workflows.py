"""Workflows with real daemons: a step's failure under both policies, and kill -9 of the
conductor between steps and during one, without any step running twice."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from audience.client import Client
from devtools.devcluster import Cluster
from orchestra.config import load_audience
from orchestra.errors import ValidationError
from orchestra.wire import audience_pb2
from tests.conftest import MakeCluster, queue_rows

PLAYERS = ["p1.test", "p2.test"]


def step_score(marker: Path) -> str:
    """Records each run (its step's TAG and task), sleeps SLEEP, answers OUT, exits EXIT."""
    return f"""#!/bin/sh
echo "$ORC_TAG $ORC_TASK_ID $ORC_PLAYER $ORC_IN" >> {marker}
[ -n "$ORC_SLEEP" ] && sleep "$ORC_SLEEP"
[ -n "$ORC_OUT" ] && echo "OUT=$ORC_OUT" >> "$ORC_RESPONSE_FILE"
exit "${{ORC_EXIT:-0}}"
"""


def runs(marker: Path) -> Counter[str]:
    """How many times each step's score ran, by TAG."""
    if not marker.exists():
        return Counter()
    return Counter(line.split()[0] for line in marker.read_text().splitlines() if line.strip())


def inputs(marker: Path, tag: str) -> list[str]:
    return [" ".join(line.split()[3:]) for line in marker.read_text().splitlines() if line.split()[0] == tag]


def workflow(*steps: tuple[str, list[str], dict[str, str], str], targets: list[str] | None = None,
             params: dict[str, str] | None = None) -> audience_pb2.WorkflowRequest:
    request = audience_pb2.WorkflowRequest(name="test flow", params=params or {})
    for name, after, step_params, on_failure in steps:
        request.steps.append(audience_pb2.WorkflowStep(
            name=name, after=after, on_failure=on_failure,
            job=audience_pb2.SubmitRequest(score="step", targets=targets or [PLAYERS[0]],
                                           scope=audience_pb2.SCOPE_ALL_OF,
                                           params={"TAG": name, **step_params})))
    return request


def client(cluster: Cluster) -> Client:
    return Client(load_audience(cluster.audience_config, explicit=True))


def submit(cluster: Cluster, request: audience_pb2.WorkflowRequest) -> str:
    audience = client(cluster)
    try:
        reply: audience_pb2.WorkflowReply = audience.call(lambda: audience.stub.SubmitWorkflow(request, timeout=30))
        return reply.workflow_id
    finally:
        audience.close()


def get(cluster: Cluster, workflow_id: str) -> audience_pb2.Workflow:
    audience = client(cluster)
    try:
        flow: audience_pb2.Workflow = audience.call(lambda: audience.stub.GetWorkflow(
            audience_pb2.JobRef(job_id=workflow_id), timeout=30))
        return flow
    finally:
        audience.close()


def finished(cluster: Cluster, workflow_id: str, timeout: float = 60) -> audience_pb2.Workflow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            flow = get(cluster, workflow_id)
        except Exception:  # the conductor restarting
            flow = None
        if flow is not None and flow.finished:
            return flow
        time.sleep(0.2)
    raise TimeoutError(f"workflow {workflow_id} did not finish: {get(cluster, workflow_id)}")


def states(flow: audience_pb2.Workflow) -> dict[str, str]:
    return {step.name: step.state for step in flow.steps}


def add_strict_score(cluster: Cluster, marker: Path) -> None:
    """A score declaring IN with a pattern, once every player reports it with that
    declaration (a player may first see the executable without its .conf, or a .conf
    still being written, and report it invalid or without its params)."""
    cluster.add_score("strict", step_score(marker), "interface env\nparam TAG\nparam IN pattern=[a-z]+\nparam OUT\n")

    def valid() -> bool:
        players = cluster.players() or []
        return len(players) == len(PLAYERS) and all(
            any(score.name == "strict" and score.valid and any(decl.name == "IN" and decl.pattern
                                                                for decl in score.params)
                for score in player.scores) for player in players)
    cluster.wait_for(valid, "strict reported valid by every player")


@pytest.fixture
def cluster(make_cluster: MakeCluster, tmp_path: Path) -> Cluster:
    cluster = make_cluster(PLAYERS)
    cluster.add_score("step", step_score(tmp_path / "runs"), "interface env\ntimeout 60\n")
    return cluster


def test_a_failed_middle_step_that_stops_skips_the_rest(cluster: Cluster, tmp_path: Path) -> None:
    flow = finished(cluster, submit(cluster, workflow(
        ("build", [], {"OUT": "artifact-7"}, ""),
        ("test", ["build"], {"EXIT": "3"}, "stop"),
        ("deploy", ["test"], {"IN": "{{ steps.build.response.OUT }}"}, ""))))
    assert flow.status == "failed" and "step test failed" in flow.reason
    assert states(flow) == {"build": "ok", "test": "failed", "deploy": "skipped"}
    assert "the workflow stopped: step test failed" in flow.steps[2].reason and not flow.steps[2].job_id
    assert runs(tmp_path / "runs") == {"build": 1, "test": 1}


def test_a_failed_middle_step_that_continues_lets_the_next_run(cluster: Cluster, tmp_path: Path) -> None:
    workflow_id = submit(cluster, workflow(
        ("build", [], {"OUT": "artifact-7"}, ""),
        ("test", ["build"], {"EXIT": "3"}, "continue"),
        ("deploy", ["test"], {"IN": "{{ steps.build.response.OUT }} of {{ workflow.id }}"}, "")))
    flow = finished(cluster, workflow_id)
    assert flow.status == "failed" and states(flow) == {"build": "ok", "test": "failed", "deploy": "ok"}
    assert runs(tmp_path / "runs") == {"build": 1, "test": 1, "deploy": 1}
    assert inputs(tmp_path / "runs", "deploy") == [f"artifact-7 of {workflow_id}"]
    deploy = flow.steps[2]
    assert deploy.params["IN"] == f"artifact-7 of {workflow_id}" and deploy.counts[0].count == 1


def test_a_response_missing_fails_the_step_that_needs_it_with_a_reason(cluster: Cluster, tmp_path: Path) -> None:
    flow = finished(cluster, submit(cluster, workflow(
        ("build", [], {}, ""), ("deploy", ["build"], {"IN": "{{ steps.build.response.OUT }}"}, ""))))
    assert states(flow) == {"build": "ok", "deploy": "failed"}
    assert flow.steps[1].reason == "step build's response has no OUT" and not flow.steps[1].job_id
    assert runs(tmp_path / "runs") == {"build": 1}


def test_a_filled_in_value_is_checked_as_any_param(cluster: Cluster, tmp_path: Path) -> None:
    """The score declares IN with a pattern: a response that does not match it is refused
    when the step starts, as it would be on the command line."""
    add_strict_score(cluster, tmp_path / "runs")
    request = workflow(("build", [], {"OUT": "bad value; rm -rf /"}, ""))
    request.steps.append(audience_pb2.WorkflowStep(name="deploy", after=["build"], job=audience_pb2.SubmitRequest(
        score="strict", targets=[PLAYERS[0]], params={"TAG": "deploy", "IN": "{{ steps.build.response.OUT }}"})))
    flow = finished(cluster, submit(cluster, request))
    assert states(flow) == {"build": "ok", "deploy": "failed"}
    assert "IN" in flow.steps[1].reason and runs(tmp_path / "runs") == {"build": 1}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["result.committed", "workflow.settled", "workflow.step_committed"])
def test_a_conductor_killed_between_steps_runs_each_step_once(cluster: Cluster, tmp_path: Path,
                                                              point: str) -> None:
    """Killed after the first step's job ended (before the workflow heard of it), after
    the workflow recorded the end (before the next step started), or right after the
    next step's job was committed (before dispatch knew of it)."""
    cluster.stop()
    doomed = cluster.start_conductor(extra_env={"ORCHESTRA_FAULT": f"{point}:1"})
    for name in PLAYERS:
        cluster.start_player(name)
    cluster.wait_connected(PLAYERS)
    workflow_id = submit(cluster, workflow(
        ("one", [], {"OUT": "v1"}, ""), ("two", ["one"], {"IN": "{{ steps.one.response.OUT }}", "OUT": "v2"}, ""),
        ("three", ["two"], {"IN": "{{ steps.two.response.OUT }}"}, ""), targets=PLAYERS))
    cluster.wait_for(lambda: not doomed.running, f"the conductor killed at {point}", timeout=30)
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    cluster.start_conductor()
    flow = finished(cluster, workflow_id)
    assert flow.status == "ok", flow
    assert runs(tmp_path / "runs") == {"one": 2, "two": 2, "three": 2}  # once per host
    assert inputs(tmp_path / "runs", "three") == ["v2", "v2"]
    jobs = queue_rows(cluster, "jobs")
    assert Counter(row["step"] for row in jobs) == {"one": 1, "two": 1, "three": 1}


@pytest.mark.slow
def test_a_conductor_killed_during_a_step_carries_on_without_running_it_twice(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    workflow_id = submit(cluster, workflow(
        ("one", [], {}, ""), ("two", ["one"], {"SLEEP": "3", "OUT": "slow"}, ""),
        ("three", ["two"], {"IN": "{{ steps.two.response.OUT }}"}, "")))
    cluster.wait_for(lambda: runs(tmp_path / "runs")["two"] == 1, "step two running", timeout=30)
    cluster.conductor().send_signal(signal.SIGKILL)
    cluster.wait_for(lambda: not cluster.conductor().running, "the conductor gone")
    cluster.start_conductor()
    flow = finished(cluster, workflow_id)
    assert flow.status == "ok" and states(flow) == {"one": "ok", "two": "ok", "three": "ok"}
    assert runs(tmp_path / "runs") == {"one": 1, "two": 1, "three": 1}
    assert inputs(tmp_path / "runs", "three") == ["slow"]


def test_another_requester_sees_a_workflow_only_if_the_policy_lets_it_read_every_step(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    everyone = {"scores": ["*"], "targets": ["*"]}
    cluster = make_cluster(PLAYERS, audience_names=["ci.test", "auditor.test"], conductor_settings={
        "audience": {"ci.test": everyone, "auditor.test": everyone},
        "policy": [{"name": "everyone-runs", "requesters": ["*"]},
                   {"name": "audit-p1", "requesters": ["cert:auditor.test"], "actions": ["read"],
                    "targets": [PLAYERS[0]]}]})
    cluster.add_score("step", step_score(tmp_path / "runs"), "interface env\ntimeout 60\n")
    on_p1 = submit(cluster, workflow(("one", [], {"SLEEP": "30"}, "")))
    on_both = submit(cluster, workflow(("one", [], {}, ""), ("two", ["one"], {}, ""),
                                       targets=PLAYERS))
    ci, auditor = (cluster.remote_audience_config(name) for name in ("ci.test", "auditor.test"))
    for command in ("getstatus", "canceljob"):
        hidden = cluster.cli(command, on_p1, config=ci)
        assert hidden.returncode == 5 and f"no such workflow {on_p1}" in hidden.stderr, hidden.stderr
    seen = cluster.cli("getstatus", on_p1, config=auditor)
    assert seen.returncode == 3 and on_p1 in seen.stdout  # read, pending
    refused = cluster.cli("canceljob", on_p1, config=auditor)
    assert refused.returncode == 2, refused.stderr  # may read, may not cancel
    assert cluster.cli("getstatus", on_both, config=auditor).returncode == 5  # a step outside its grant
    assert get(cluster, on_p1).status == "pending"
    cancelled = cluster.cli("canceljob", "--wait", "--timeout", "30", on_p1)
    assert cancelled.returncode == 1 and get(cluster, on_p1).status == "cancelled"
    audit = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    assert ("read", "accepted", "cert:auditor.test") in {
        (a["event"], a["decision"], a["requester"]) for a in audit if a.get("workflow_id") == on_p1}
    assert ("cancel", "denied", "cert:auditor.test") in {
        (a["event"], a["decision"], a["requester"]) for a in audit if a.get("workflow_id") == on_p1}


def test_what_is_known_at_submission_is_checked_then(cluster: Cluster, tmp_path: Path) -> None:
    """The workflow's params are filled in and checked against the score's declarations
    at submission, and a param left for later must be declared: nothing runs first."""
    add_strict_score(cluster, tmp_path / "runs")

    def strict_after_first(**params: str) -> audience_pb2.WorkflowRequest:
        request = workflow(("first", [], {"OUT": "ok"}, ""), params={"V": "Bad Value"})
        request.steps.append(audience_pb2.WorkflowStep(name="second", after=["first"], job=audience_pb2.SubmitRequest(
            score="strict", targets=[PLAYERS[0]], params={"TAG": "second", **params})))
        return request
    with pytest.raises(ValidationError, match="step second: parameter IN: 'Bad Value' does not match"):
        submit(cluster, strict_after_first(IN="{{ params.V }}"))
    with pytest.raises(ValidationError, match="step second: score strict does not declare parameter NOPE"):
        submit(cluster, strict_after_first(IN="{{ steps.first.response.OUT }}", NOPE="1"))
    assert runs(tmp_path / "runs") == {} and queue_rows(cluster, "workflows") == []
    flow = finished(cluster, submit(cluster, strict_after_first(IN="{{ steps.first.response.OUT }}")))
    assert flow.status == "ok" and inputs(tmp_path / "runs", "second") == ["ok"]
