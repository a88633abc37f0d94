"""Workflows from the command line, with a real conductor and players: submitworkflow,
getstatus and canceljob of a workflow, and a step's job as getstatus and listjobs show it.

The scores write what they were given (their ORC_* environment) to a file the test reads,
so a value passed from one step's response into a later step's params is seen where it
matters: in the environment of the score that runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster

# Writes its ORC_* environment to $ORC_OUT, returns BUILD=$ORC_BUILD when given one,
# sleeps $ORC_SLEEP seconds, and exits $ORC_CODE.
RECORD = """#!/bin/sh
env | grep '^ORC_' | sort > "$ORC_OUT.tmp" && mv "$ORC_OUT.tmp" "$ORC_OUT"
if [ -n "$ORC_BUILD" ]; then echo "BUILD=$ORC_BUILD" > "$ORC_RESPONSE_FILE"; fi
sleep "${ORC_SLEEP:-0}"
exit "${ORC_CODE:-0}"
"""
# Runs until told to stop, then stops only once $ORC_OUT.go exists.
STUBBORN = """#!/bin/sh
trap 'touch "$ORC_OUT.term"; until [ -e "$ORC_OUT.go" ]; do sleep 0.1; done; exit 143' TERM
touch "$ORC_OUT.env"
while :; do sleep 0.1; done
"""
CONF = "interface env\ntimeout 60\n"
WORKFLOW_ID = re.compile(r"w[0-9a-f]{32}")


def recorded(path: Path) -> dict[str, str]:
    """The environment a run of RECORD wrote."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def three_steps(tmp_path: Path, *, fail_second: bool = False) -> Path:
    """build returns BUILD, test runs after it, ship after test gets build's BUILD."""
    path = tmp_path / "wf.toml"
    path.write_text(f"""\
name = "release"
labels = {{ change = "CHG-42" }}

[params]
VERSION = "1.0"

[steps.build]
score = "record"
targets = ["p1.test"]
params = {{ OUT = "{tmp_path}/build.env", BUILD = "b-{{{{ params.VERSION }}}}" }}

[steps.test]
after = ["build"]
score = "record"
targets = ["p1.test", "p2.test"]
scope = "all"
params = {{ OUT = "{tmp_path}/test.env", CODE = "{1 if fail_second else 0}" }}

[steps.ship]
after = ["test"]
score = "record"
targets = ["p2.test"]

[steps.ship.params]
OUT = "{tmp_path}/ship.env"
GOT = "{{{{ steps.build.response.BUILD }}}}"
FROM = "{{{{ steps.build.job_id }}}}"
WF = "{{{{ workflow.id }}}}"
""")
    return path


def cluster_with_record(make_cluster: MakeCluster) -> Cluster:
    cluster = make_cluster(["p1.test", "p2.test"])
    cluster.add_score("record", RECORD, CONF)
    return cluster


def test_a_response_of_the_first_step_reaches_the_third_steps_score(make_cluster: MakeCluster,
                                                                    tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    submitted = cluster.cli("submitworkflow", str(three_steps(tmp_path)), "VERSION=2.0", "--wait",
                            "--timeout", "60", "--json")
    assert submitted.returncode == 0, submitted.stderr
    flow = json.loads(submitted.stdout)
    assert WORKFLOW_ID.fullmatch(flow["workflow_id"]) and flow["status"] == "ok" and flow["finished"]
    build, test, ship = flow["steps"]
    shipped = recorded(tmp_path / "ship.env")
    # The override of the workflow's param went into build's response, and on to ship.
    assert recorded(tmp_path / "build.env")["ORC_BUILD"] == "b-2.0"
    assert shipped["ORC_GOT"] == "b-2.0"
    assert shipped["ORC_FROM"] == build["job_id"] == recorded(tmp_path / "build.env")["ORC_JOB_ID"]
    assert shipped["ORC_WF"] == flow["workflow_id"] and shipped["ORC_JOB_ID"] == ship["job_id"]
    assert [s["state"] for s in flow["steps"]] == ["ok", "ok", "ok"]
    assert test["counts"] == {"ok": 2} and test["after"] == ["build"] and test["on_failure"] == "stop"
    assert ship["params"]["GOT"] == "b-2.0"  # as the step ran them

    # getstatus of the workflow: the same object, exit 0.
    shown = cluster.cli("getstatus", "--json", flow["workflow_id"])
    assert shown.returncode == 0, shown.stderr
    again = json.loads(shown.stdout)
    assert list(again) == ["workflow_id", "name", "labels", "requester", "status", "finished", "created_at",
                           "finished_at", "reason", "steps"]
    assert (again["name"], again["labels"], again["reason"]) == ("release", {"change": "CHG-42"}, "")
    assert again["requester"].startswith("user:") and again["finished_at"].endswith("Z")
    assert list(again["steps"][0]) == ["name", "state", "reason", "job_id", "after", "on_failure", "score",
                                       "started_at", "finished_at", "counts", "params"]
    assert again["steps"] == flow["steps"]
    text = cluster.cli("getstatus", flow["workflow_id"])
    assert text.returncode == 0 and f"workflow   {flow['workflow_id']}" in text.stdout
    assert re.search(r"^  ship +ok +[0-9a-f]{32} +record +test +1 ok *$", text.stdout, re.M), text.stdout

    # A step's job says which workflow and step it belongs to.
    job = cluster.cli("getstatus", "--json", ship["job_id"])
    assert job.returncode == 0
    assert (json.loads(job.stdout)["workflow_id"], json.loads(job.stdout)["step"]) == (flow["workflow_id"], "ship")
    job_text = cluster.cli("getstatus", ship["job_id"]).stdout
    assert f"workflow   {flow['workflow_id']} step ship" in job_text
    listed = json.loads(cluster.cli("listjobs", "--json").stdout)["jobs"]
    assert {(j["workflow_id"], j["step"]) for j in listed} == {(flow["workflow_id"], s) for s in ("build", "test", "ship")}


def test_wait_exits_1_when_a_step_fails_and_the_steps_after_it_are_skipped(make_cluster: MakeCluster,
                                                                           tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    submitted = cluster.cli("submitworkflow", "--wait", str(three_steps(tmp_path, fail_second=True)))
    assert submitted.returncode == 1, submitted.stderr
    workflow_id = submitted.stdout.splitlines()[0]
    assert WORKFLOW_ID.fullmatch(workflow_id)
    assert "status     failed" in submitted.stdout and "step test failed" in submitted.stdout
    assert re.search(r"^  ship +skipped +- +record +test +- +the workflow stopped: step test failed$",
                     submitted.stdout, re.M), submitted.stdout
    assert not (tmp_path / "ship.env").exists()
    shown = cluster.cli("getstatus", "--json", workflow_id)
    assert shown.returncode == 1
    assert [s["state"] for s in json.loads(shown.stdout)["steps"]] == ["ok", "failed", "skipped"]


def test_submit_without_wait_prints_the_id_and_getstatus_exits_3_until_it_ends(make_cluster: MakeCluster,
                                                                               tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    path = tmp_path / "wf.toml"
    path.write_text(f'[steps.nap]\nscore = "record"\ntargets = ["p1.test"]\n'
                    f'params = {{ OUT = "{tmp_path}/nap.env", SLEEP = "2" }}\n')
    submitted = cluster.cli("submitworkflow", "--json", str(path), "--idempotency-key", "nap-1")
    assert submitted.returncode == 0, submitted.stderr
    reply = json.loads(submitted.stdout)
    assert WORKFLOW_ID.fullmatch(reply["workflow_id"]) and reply["existing"] is False
    again = cluster.cli("submitworkflow", "--json", str(path), "--idempotency-key", "nap-1")
    assert json.loads(again.stdout) == {"workflow_id": reply["workflow_id"], "existing": True}
    pending = cluster.cli("getstatus", reply["workflow_id"])
    assert pending.returncode == 3 and "status     pending" in pending.stdout
    timed_out = cluster.cli("getstatus", "--wait", "--timeout", "0.2", reply["workflow_id"])
    assert timed_out.returncode == 3
    done = cluster.cli("getstatus", "--wait", "--timeout", "60", reply["workflow_id"])
    assert done.returncode == 0 and "status     ok" in done.stdout


def test_canceljob_of_a_workflow_cancels_its_running_step_and_skips_the_rest(make_cluster: MakeCluster,
                                                                             tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    path = tmp_path / "wf.toml"
    path.write_text(f"""\
[steps.slow]
score = "record"
targets = ["p1.test"]
params = {{ OUT = "{tmp_path}/slow.env", SLEEP = "60" }}

[steps.after]
after = ["slow"]
score = "record"
targets = ["p1.test"]
params = {{ OUT = "{tmp_path}/after.env" }}
""")
    workflow_id = cluster.cli("submitworkflow", str(path)).stdout.strip()
    cluster.wait_for(lambda: (tmp_path / "slow.env").exists(), "the slow step running")
    cancelled = cluster.cli("canceljob", "--wait", "--timeout", "60", "--json", workflow_id)
    assert cancelled.returncode == 1, cancelled.stderr  # a cancelled workflow did not do its work
    flow = json.loads(cancelled.stdout)
    assert (flow["status"], flow["finished"]) == ("cancelled", True)
    slow, after = flow["steps"]
    assert slow["counts"] == {"cancelled": 1} and after["state"] == "cancelled"
    assert cancelled.stderr.startswith(f"canceljob: cancel requested for workflow {workflow_id}: ")
    assert cancelled.stderr.count("\n") == 1
    assert not (tmp_path / "after.env").exists()
    job = json.loads(cluster.cli("getstatus", "--json", slow["job_id"]).stdout)
    assert [t["state"] for t in job["tasks"]] == ["cancelled"]


def test_canceljob_without_wait_exits_3_while_a_step_is_still_being_stopped(make_cluster: MakeCluster,
                                                                            tmp_path: Path) -> None:
    # The score stops only once the test lets it, and the player waits for it (a long
    # kill_grace): the step is still being stopped when canceljob reads the workflow back.
    cluster = make_cluster(["p1.test"], player_settings={"kill_grace": 120})
    cluster.add_score("stubborn", STUBBORN, CONF)
    path = tmp_path / "wf.toml"
    path.write_text(f'[steps.slow]\nscore = "stubborn"\ntargets = ["p1.test"]\n'
                    f'params = {{ OUT = "{tmp_path}/slow" }}\n')
    workflow_id = cluster.cli("submitworkflow", str(path)).stdout.strip()
    cluster.wait_for(lambda: (tmp_path / "slow.env").exists(), "the slow step running")
    cancelled = cluster.cli("canceljob", workflow_id)
    assert cancelled.returncode == 3, cancelled.stderr
    assert f"workflow   {workflow_id}" in cancelled.stdout
    assert "1 step still running (its job being cancelled; canceljob --wait waits for that)" in cancelled.stderr
    cluster.wait_for(lambda: (tmp_path / "slow.term").exists(), "the slow step told to stop")
    (tmp_path / "slow.go").touch()
    done = cluster.cli("getstatus", "--wait", "--timeout", "60", workflow_id)
    assert done.returncode == 1 and "status     cancelled" in done.stdout


def test_a_bad_workflow_file_exits_2_with_one_line_and_nothing_submitted(make_cluster: MakeCluster,
                                                                         tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    path = tmp_path / "wf.toml"
    path.write_text('[steps.one]\nscore = "record"\ntargets = ["p1.test"]\nafter = "zero"\n')
    result = cluster.cli("submitworkflow", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"submitworkflow: {path}: steps.one.after: must be a list of step names, not 'zero'\n"
    missing = cluster.cli("submitworkflow", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert json.loads(cluster.cli("listjobs", "--json").stdout)["jobs"] == []


def test_a_template_naming_a_step_it_does_not_come_after_is_refused_by_the_conductor(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = cluster_with_record(make_cluster)
    path = tmp_path / "wf.toml"
    path.write_text(f"""\
[steps.one]
score = "record"
targets = ["p1.test"]
params = {{ OUT = "{tmp_path}/one.env", BUILD = "x" }}

[steps.two]
score = "record"
targets = ["p1.test"]
params = {{ OUT = "{tmp_path}/two.env", GOT = "{{{{ steps.one.response.BUILD }}}}" }}
""")
    result = cluster.cli("submitworkflow", str(path))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "submitworkflow: step two: param GOT: uses step one, which it does not come after\n"
    assert json.loads(cluster.cli("listjobs", "--json").stdout)["jobs"] == []


def test_ids_getstatus_does_not_know_exit_5_and_malformed_ones_exit_2(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    unknown = cluster.cli("getstatus", "w" + "0" * 32)
    assert unknown.returncode == 5 and unknown.stderr == f"getstatus: no such workflow w{'0' * 32}\n"
    assert cluster.cli("canceljob", "w" + "0" * 32).returncode == 5
    bad = cluster.cli("getstatus", "w123")
    assert bad.returncode == 2 and bad.stderr.startswith("getstatus: invalid job id 'w123'")
