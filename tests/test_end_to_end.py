"""The core, end to end: real conductor and players over mTLS, real CLIs, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest

from devtools.devcluster import Cluster
from orchestra.wire import audience_pb2, audience_pb2_grpc
from tests.conftest import MakeCluster, job_json, queue_rows, submit

ALL3 = ["p1.test", "p2.test", "p3.test"]


def test_all_of_on_three_players_succeeds(cluster3: Cluster) -> None:
    code, job = job_json(cluster3, "submitjob", "--all-of", "--wait", "--timeout", "30",
                         "hello", "who=ops", *ALL3)
    assert code == 0
    assert job["status"] == "ok" and job["finished"] is True
    tasks = {t["player"]: t for t in job["tasks"]}
    assert set(tasks) == set(ALL3)
    for name, task in tasks.items():
        assert task["state"] == "ok" and task["exit_code"] == 0
        assert task["response"] == {"greeting": "hello ops", "player": name}
        assert task["stdout"] == f"hello, ops from {name}\n"


def test_all_of_with_one_failing_player_exits_1_and_names_it(cluster3: Cluster) -> None:
    cluster3.add_score("check", "#!/bin/sh\necho fine\n", "interface env\n", ["p1.test", "p2.test"])
    cluster3.add_score("check", "#!/bin/sh\necho broken >&2\nexit 42\n", "interface env\n", ["p3.test"])
    result = cluster3.cli("submitjob", "--all-of", "--wait", "--timeout", "30", "check", *ALL3)
    assert result.returncode == 1, result.stderr
    assert "partial_fail" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("p3.test"))
    assert "failed" in line and "exit 42" in line
    assert "broken" in result.stdout
    code, job = job_json(cluster3, "getstatus", result.stdout.split()[0])
    assert code == 1
    states = {t["player"]: (t["state"], t["exit_code"]) for t in job["tasks"]}
    assert states == {"p1.test": ("ok", 0), "p2.test": ("ok", 0), "p3.test": ("failed", 42)}


def test_one_of_runs_on_exactly_one_player(cluster3: Cluster, tmp_path: os.PathLike[str]) -> None:
    marker = f"{tmp_path}/ran"
    cluster3.add_score("mark", f"#!/bin/sh\necho \"$ORC_PLAYER\" >> {marker}\n", "interface env\n")
    for _ in range(3):
        code, job = job_json(cluster3, "submitjob", "--one-of", "--wait", "--timeout", "30",
                             "mark", *ALL3)
        assert code == 0
        assert len(job["tasks"]) == 1 and job["tasks"][0]["player"] in ALL3
    with open(marker) as handle:
        assert len(handle.read().split()) == 3


ENV_DUMP = f"#!{sys.executable}\nimport json, os\nprint(json.dumps(dict(os.environ)))\n"


def test_params_arrive_as_orc_variables_and_cannot_change_the_environment(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    cluster.add_score("envdump", ENV_DUMP, "interface env\n")
    cluster.start_conductor()
    cluster.start_player("p1.test", extra_env={"LEAKED_FROM_PLAYER": "1", "LD_PRELOAD": "/nope.so"})
    cluster.wait_connected(["p1.test"])
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "envdump",
                         "greeting=hi there", "PATH=/evil", "LD_PRELOAD=/tmp/x.so",
                         "multi=a\nPATH=/forged", "p1.test")
    assert code == 0
    env = json.loads(job["tasks"][0]["stdout"])
    task_id = job["tasks"][0]["task_id"]
    assert env.pop("ORC_RESPONSE_FILE").endswith(f"/{task_id}/response")
    assert env.pop("HOME")
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "ORC_GREETING": "hi there",
        "ORC_PATH": "/evil",
        "ORC_LD_PRELOAD": "/tmp/x.so",
        "ORC_MULTI": "a\nPATH=/forged",  # a newline stays inside one variable
        "ORC_JOB_ID": job["job_id"],
        "ORC_TASK_ID": task_id,
        "ORC_ATTEMPT": "1",
        "ORC_SCORE": "envdump",
        "ORC_PLAYER": "p1.test",
        "ORC_REQUESTER": job["requester"],
    }


def test_a_score_no_target_has_is_rejected_at_submit(cluster3: Cluster) -> None:
    code, out, err = submit(cluster3, "--all-of", "no-such-score", "p1.test", "p2.test")
    assert code == 2 and out == ""
    assert "no target can run no-such-score" in err and "p2.test: not installed" in err
    assert err.count("\n") == 1
    assert queue_rows(cluster3, "jobs") == []
    # One target that has it is enough: the others refuse their task, as before.
    # add_score waits for p1's new inventory to reach the conductor.
    cluster3.add_score("only-p1", "#!/bin/sh\necho hi\n", "interface env\n", players=["p1.test"])
    code, job = job_json(cluster3, "submitjob", "--all-of", "--wait", "--timeout", "30", "only-p1",
                         "p1.test", "p2.test")
    assert code == 1
    states = {t["player"]: (t["state"], t["reason"]) for t in job["tasks"]}  # type: ignore[union-attr]
    assert states["p1.test"][0] == "ok"
    assert states["p2.test"][0] == "refused" and "not installed" in states["p2.test"][1]


def test_a_target_that_never_reported_is_given_the_benefit_of_the_doubt(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    code, out, err = submit(cluster, "no-such-score", "p1.test")
    assert code == 0, err  # p1 has never said what it has
    cluster.start_player("p1.test")
    result = cluster.cli("getstatus", "--json", "--wait", "--timeout", "30", out.split()[0])
    task = json.loads(result.stdout)["tasks"][0]
    assert task["state"] == "refused" and "not installed" in task["reason"]


def test_unknown_target_is_rejected_and_nothing_queued(cluster3: Cluster) -> None:
    code, out, err = submit(cluster3, "--all-of", "hello", "p1.test", "stranger.test")
    assert code == 2
    assert "stranger.test" in err and "players file" in err and err.count("\n") == 1
    assert out == ""
    assert queue_rows(cluster3, "jobs") == []


@pytest.mark.parametrize("word, message", [
    ("=value", "empty name"),
    ("1abc=x", "invalid parameter name"),
    ("a-b=x", "invalid parameter name"),
    ("job_id=x", "reserved"),
    ("big=" + "x" * 40_000, "limit"),
])
def test_bad_parameters_exit_2_and_nothing_queued(cluster3: Cluster, word: str, message: str) -> None:
    code, out, err = submit(cluster3, "hello", word, "p1.test")
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert queue_rows(cluster3, "jobs") == []


def test_conductor_rejects_bad_parameters_sent_past_the_cli(cluster3: Cluster) -> None:
    """A NUL cannot come through argv; a client speaking gRPC directly gets the same rules."""
    channel = grpc.insecure_channel(f"unix:{cluster3.socket}")
    stub = audience_pb2_grpc.AudienceStub(channel)
    bad = [
        {"params": {"KEY": "a\x00b"}},
        {"params": {"": "x"}},
        {"params": {"KEY": "x" * 40_000}},
        {"params": {"ORC_JOB_ID": "x"}},
        {"score": "../etc/passwd"},
        {"targets": ["../../x"]},
    ]
    for change in bad:
        request = {"score": "hello", "targets": ["p1.test"], "params": {}, **change}
        with pytest.raises(grpc.RpcError) as caught:
            stub.Submit(audience_pb2.SubmitRequest(**request), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, change
    channel.close()
    assert queue_rows(cluster3, "jobs") == []


def test_more_than_one_target_needs_a_scope(cluster3: Cluster) -> None:
    code, _, err = submit(cluster3, "hello", "p1.test", "p2.test")
    assert code == 2 and "--all-of or --one-of" in err
    assert queue_rows(cluster3, "jobs") == []


def test_original_orchestra_submitjob_form_still_works(cluster3: Cluster) -> None:
    code, out, _ = submit(cluster3, "-all-of", "hello", "p1.test", "p2.test", "!", "who", "legacy")
    assert code == 0
    code, job = job_json(cluster3, "getstatus", "--wait", "--timeout", "30", out.strip())
    assert code == 0 and job["scope"] == "all-of" and job["params"] == {"WHO": "legacy"}
    code, out, _ = submit(cluster3, "hello", "p1.test", "p2.test")  # no scope, modern form
    assert code == 2
    code, out, _ = submit(cluster3, "hello", "p1.test", "p2.test", "!")  # legacy form: one-of
    assert code == 0
    code, job = job_json(cluster3, "getstatus", "--wait", "--timeout", "30", out.strip())
    assert code == 0 and job["scope"] == "one-of" and len(job["tasks"]) == 1


def test_getstatus_wait_returns_when_a_late_player_connects(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    code, out, _ = submit(cluster, "--all-of", "hello", "p1.test", "p2.test")
    assert code == 0
    job_id = out.strip()
    waiter = subprocess.Popen(
        [sys.executable, "-m", "audience.getstatus", "--wait", "--timeout", "60", "--json", job_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)})
    pending = cluster.cli("getstatus", job_id)
    assert pending.returncode == 3 and "pending" in pending.stdout
    cluster.start_player("p2.test")
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert '"status": "ok"' in out


def test_getstatus_wait_timeout_exits_3(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    code, out, _ = submit(cluster, "hello", "p2.test")
    result = cluster.cli("getstatus", "--wait", "--timeout", "1", out.strip())
    assert result.returncode == 3 and "pending" in result.stdout


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_queued_job_survives_conductor_restart(make_cluster: MakeCluster, how: signal.Signals) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    code, out, _ = submit(cluster, "hello", "who=durable", "p1.test")
    assert code == 0
    job_id = out.strip()
    cluster.conductor().stop(how)
    cluster.start_conductor()
    assert cluster.cli("getstatus", job_id).returncode == 3
    cluster.start_player("p1.test")
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", job_id)
    assert code == 0
    assert job["tasks"][0]["response"]["greeting"] == "hello durable"


def test_getstatus_unknown_job_exits_5(cluster3: Cluster) -> None:
    result = cluster3.cli("getstatus", "0" * 32)
    assert result.returncode == 5 and "no such job" in result.stderr
    result = cluster3.cli("getstatus", "not-a-job-id")
    assert result.returncode == 2 and "invalid job id" in result.stderr


def test_conductor_down_exits_4(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    result = cluster.cli("getstatus", "0" * 32)
    assert result.returncode == 4 and "cannot reach the conductor" in result.stderr
    result = cluster.cli("submitjob", "hello", "p1.test")
    assert result.returncode == 4 and result.stderr.count("\n") == 1


def test_score_timeout_kills_the_whole_group_and_reports_timed_out(
        make_cluster: MakeCluster, tmp_path: os.PathLike[str]) -> None:
    cluster = make_cluster()
    pidfile = f"{tmp_path}/child.pid"
    cluster.add_score("slow", f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n",
                      "interface env\ntimeout 1\n")
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "slow", "p1.test")
    assert code == 1
    task = job["tasks"][0]
    assert task["state"] == "timed_out" and task["signal"] == signal.SIGTERM
    assert task["exit_code"] is None and "timed out after 1 s" in task["reason"]
    # The backgrounded grandchild went with the group.
    with open(pidfile) as handle:
        child = int(handle.read())
    cluster.wait_for(lambda: not os.path.exists(f"/proc/{child}") or
                     open(f"/proc/{child}/stat").read().split()[2] == "Z", "child gone", timeout=10)
