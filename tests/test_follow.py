"""Live output: ``getstatus --follow`` with a real conductor, real players and real scores.

The scores print, then wait for a file the test creates: a line seen by the follower
before that file exists can only have come live, from a task that is still running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from audience.client import Client
from devtools.devcluster import Cluster
from orchestra.config import load_audience
from orchestra.wire import audience_pb2
from tests.conftest import MakeCluster, submit

# Prints two lines on stdout and one on stderr, waits for $ORC_GO, then prints more.
CHATTY = """#!/bin/sh
echo "early 1 from $ORC_PLAYER"
echo "early 2 from $ORC_PLAYER"
echo "warning from $ORC_PLAYER" >&2
while [ ! -e "$ORC_GO" ]; do sleep 0.05; done
i=0
while [ $i -lt 5 ]; do echo "late $i from $ORC_PLAYER"; i=$((i+1)); done
printf 'no newline at the end from %s' "$ORC_PLAYER"
"""
# Prints $ORC_MB megabytes of 100-byte lines as fast as it can, then waits for $ORC_GO.
FLOOD = """#!/bin/sh
yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' \\
  | head -c "$((ORC_MB * 1000000))"
echo "flood over on $ORC_PLAYER"
while [ ! -e "$ORC_GO" ]; do sleep 0.05; done
echo "done on $ORC_PLAYER"
"""
CONF = "interface env\ntimeout 120\n"
JOB_ID = re.compile(r"[0-9a-f]{32}")


def start_follow(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    """getstatus --follow as a real process, its output read by the test."""
    env = cluster.env()
    env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
    call = "import sys; from audience.getstatus import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", call, "--follow", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def read_until(proc: subprocess.Popen[str], wanted: set[str], timeout: float = 30) -> list[str]:
    """Lines of proc's stdout until every wanted line was seen."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    missing = set(wanted)
    while missing:
        assert time.monotonic() < deadline, f"not seen: {sorted(missing)}; seen: {seen[-20:]}"
        line = proc.stdout.readline()
        assert line, f"follow ended early; seen {seen[-20:]}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        seen.append(line.rstrip("\n"))
        missing.discard(seen[-1])
    return seen


def submitted(cluster: Cluster, *args: str) -> str:
    code, out, err = submit(cluster, *args)
    assert code == 0, err
    found = JOB_ID.search(out)
    assert found is not None, out
    return found.group()


def test_follow_prints_each_hosts_lines_live_then_the_report(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    cluster.add_score("chatty", CHATTY, CONF)
    go = tmp_path / "go"
    job = submitted(cluster, "--all-of", "chatty", f"GO={go}", "p1.test", "p2.test")
    follow = start_follow(cluster, job)
    try:
        read_until(follow, {f"{host}: early {n} from {host}" for host in ("p1.test", "p2.test") for n in (1, 2)})
        assert follow.poll() is None  # the job still runs: those lines came live
        go.touch()
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    for host in ("p1.test", "p2.test"):
        for i in range(5):
            assert f"{host}: late {i} from {host}" in out.splitlines()
        # The last piece of a line without a newline is printed when the job ends.
        assert f"{host}: no newline at the end from {host}" in out.splitlines()
        assert f"{host}: warning from {host}" in err.splitlines()  # stderr stays on stderr
        assert f"{host}: [ok]" in out.splitlines()
    # The lines of each host come in order, never mixed within a line.
    p1 = [line for line in out.splitlines() if line.startswith("p1.test: late")]
    assert p1 == [f"p1.test: late {i} from p1.test" for i in range(5)]
    # Then the usual report, as getstatus --wait prints it.
    report = cluster.cli("getstatus", job)
    assert out.endswith(report.stdout)


def test_follow_one_host_and_json_lines(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    cluster.add_score("chatty", CHATTY, CONF)
    go = tmp_path / "go"
    job = submitted(cluster, "--all-of", "chatty", f"GO={go}", "p1.test", "p2.test")
    follow = start_follow(cluster, "--host", "p2.test", "--json", job)
    try:
        first = read_until(follow, {json.dumps({"host": "p2.test", "stream": "stdout",
                                                "line": "early 2 from p2.test"})})
        go.touch()
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    lines = first + out.splitlines()
    events = [json.loads(line) for line in lines if line.startswith('{"host"')]
    assert events and {event["host"] for event in events} == {"p2.test"}
    assert {"host": "p2.test", "stream": "stderr", "line": "warning from p2.test"} in events
    assert {"host": "p2.test", "state": "ok"} in events
    report = json.loads("\n".join(line for line in lines if not line.startswith('{"host"')))
    assert report["job_id"] == job and report["status"] == "ok"


def test_follow_refuses_bad_input_and_unknown_jobs(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    unknown = cluster.cli("getstatus", "--follow", "0" * 32)
    assert unknown.returncode == 5 and "no such job" in unknown.stderr
    bad_host = cluster.cli("getstatus", "--follow", "--host", "../etc", "0" * 32)
    assert bad_host.returncode == 2 and "invalid host name" in bad_host.stderr
    assert "Traceback" not in bad_host.stderr
    lonely = cluster.cli("getstatus", "--host", "p1.test", "0" * 32)
    assert lonely.returncode == 2 and "--host needs --follow" in lonely.stderr
    workflow = cluster.cli("getstatus", "--follow", "w" + "0" * 32)
    assert workflow.returncode == 2 and "not a workflow's" in workflow.stderr


def test_follow_of_another_users_job_is_no_such_job(make_cluster: MakeCluster, tmp_path: Path) -> None:
    settings = {"audience": {"alice.test": {"scores": ["*"], "targets": ["*"]},
                             "bob.test": {"scores": ["*"], "targets": ["*"]}}}
    cluster = make_cluster(["p1.test"], audience_names=["alice.test", "bob.test"], conductor_settings=settings)
    cluster.add_score("chatty", CHATTY, CONF)
    go = tmp_path / "go"
    made = cluster.cli("submitjob", "chatty", f"GO={go}", "p1.test",
                       config=cluster.remote_audience_config("alice.test"))
    assert made.returncode == 0, made.stderr
    job = made.stdout.split()[0]
    try:
        other = cluster.cli("getstatus", "--follow", job, config=cluster.remote_audience_config("bob.test"))
        assert other.returncode == 5 and f"no such job {job}" in other.stderr
        assert "early" not in other.stdout
        # FollowJob itself, asked directly (the CLI asks GetJob first): no such job either.
        client = Client(load_audience(cluster.remote_audience_config("bob.test"), explicit=True))
        try:
            with pytest.raises(grpc.RpcError) as refused:
                for _ in client.stub.FollowJob(audience_pb2.FollowRequest(job_id=job), timeout=10):
                    pass
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            client.close()
    finally:
        go.touch()


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_stopped_follower_slows_neither_the_score_nor_the_conductor(make_cluster: MakeCluster,
                                                                      tmp_path: Path) -> None:
    """A follower that reads nothing (SIGSTOP) while two hosts print 30 MB each: the
    scores run to their end at full speed, what the follower missed is skipped with a
    marker, and the stored output tails are what they always are."""
    cluster = make_cluster(["p1.test", "p2.test"])
    cluster.add_score("flood", FLOOD, CONF)
    go = tmp_path / "go"
    job = submitted(cluster, "--all-of", "flood", "MB=30", f"GO={go}", "p1.test", "p2.test")
    follow = start_follow(cluster, job)
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline()  # following: output arrives
        os.kill(follow.pid, signal.SIGSTOP)
        # Both floods end while nobody reads: each player's file holds what was printed.
        for host in ("p1.test", "p2.test"):
            stdout = cluster.player_dir(host) / "spool" / "tasks"
            cluster.wait_for(lambda: any(b"flood over" in (path / "stdout").read_bytes()[-200:]
                                         for path in stdout.iterdir() if (path / "stdout").exists()),
                             f"the flood on {host} to end", timeout=60)
        os.kill(follow.pid, signal.SIGCONT)
        go.touch()
        out, err = follow.communicate(timeout=90)
    finally:
        follow.kill()
    assert follow.returncode == 0, err[-2000:]
    lines = out.splitlines()
    assert any(re.fullmatch(r"p[12]\.test: \[… \d+ bytes skipped …\]", line) for line in lines)
    for host in ("p1.test", "p2.test"):
        assert f"{host}: done on {host}" in lines
    stored = json.loads(cluster.cli("getstatus", "--json", job).stdout)
    for task in stored["tasks"]:
        assert task["state"] == "ok"
    # Loose bounds (the benchmark measures): 60 MB printed never became 60 MB held.
    for proc in (cluster.conductor(), cluster.player("p1.test")):
        assert rss_peak_kib(proc.popen.pid) < 300_000
