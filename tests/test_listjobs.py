"""``listjobs``: real conductor, real CLI processes, the same access rules as getstatus."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster, submit

BOTH = {"audience": {"alice.test": {"scores": ["*"], "targets": ["*"]},
                     "bob.test": {"scores": ["*"], "targets": ["*"]}}}


def as_user(cluster: Cluster, who: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli(command, *args, config=cluster.remote_audience_config(who))


def listed(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["jobs"]  # type: ignore[no-any-return]


def job_id(out: str) -> str:
    return out.split()[0]


@pytest.fixture
def jobs(make_cluster: MakeCluster) -> tuple[Cluster, dict[str, str]]:
    """ok (hello on p1), failed (fail on p2), pending (sleep on p1 and p2), oldest first."""
    cluster = make_cluster(["p1.test", "p2.test"])
    ids = {}
    code, out, _ = submit(cluster, "--wait", "hello", "p1.test")
    ids["ok"] = job_id(out)
    code, out, _ = submit(cluster, "--wait", "fail", "p2.test")
    ids["failed"] = job_id(out)
    code, out, _ = submit(cluster, "--all-of", "sleep", "seconds=60", "p1.test", "p2.test")
    ids["pending"] = job_id(out)
    return cluster, ids


def test_jobs_are_listed_newest_first_with_their_counts(jobs: tuple[Cluster, dict[str, str]]) -> None:
    cluster, ids = jobs
    rows = listed(cluster.cli("listjobs", "--json"))
    assert [r["job_id"] for r in rows] == [ids["pending"], ids["failed"], ids["ok"]]
    by_id = {r["job_id"]: r for r in rows}
    assert by_id[ids["ok"]]["status"] == "ok" and by_id[ids["ok"]]["counts"] == {"ok": 1}
    assert by_id[ids["failed"]]["counts"] == {"failed": 1}
    pending = by_id[ids["pending"]]
    assert pending["status"] == "pending" and pending["target_count"] == 2
    assert pending["finished_at"] is None and pending["requester"].startswith("user:")
    text = cluster.cli("listjobs")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["JOB", "AGE", "REQUESTER", "SCORE", "SCOPE", "TASKS", "STATUS"]
    assert lines[1].startswith(ids["pending"]) and lines[1].endswith("pending")
    assert "all-of 2 hosts" in lines[1] and "sleep" in lines[1]
    assert "all-of p2.test" in lines[2] and "1 failed" in lines[2]


def test_filters(jobs: tuple[Cluster, dict[str, str]]) -> None:
    cluster, ids = jobs

    def ids_of(*args: str) -> list[str]:
        return [str(r["job_id"]) for r in listed(cluster.cli("listjobs", "--json", *args))]
    assert ids_of("--state", "pending") == [ids["pending"]]
    assert ids_of("--state", "ok", "--state", "failed") == [ids["failed"], ids["ok"]]
    assert ids_of("--score", "hello") == [ids["ok"]]
    assert ids_of("--target", "p2.test") == [ids["pending"], ids["failed"]]
    assert ids_of("--since", "1h") == [ids["pending"], ids["failed"], ids["ok"]]
    assert ids_of("--since", "2999-01-01") == []
    assert ids_of("--mine") == [ids["pending"], ids["failed"], ids["ok"]]
    assert ids_of("--requester", "somebody-else") == []
    limited = cluster.cli("listjobs", "--limit", "2")
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 3  # header and two
    assert "more jobs match" in limited.stderr
    assert json.loads(cluster.cli("listjobs", "--json", "--limit", "2").stdout)["more"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--state", "bogus"], "invalid choice"),
    (["--since", "yesterday"], "not an age"),
    (["--limit", "0"], "between 1 and"),
    (["--mine", "--requester", "x"], "cannot be used together"),
])
def test_bad_filters_are_one_line_and_exit_2(cluster3: Cluster, args: list[str], message: str) -> None:
    result = cluster3.cli("listjobs", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_others_jobs_are_listed_only_as_the_policy_lets_them_be_read(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["alice.test", "bob.test"], conductor_settings=BOTH)
    alice = job_id(as_user(cluster, "alice.test", "submitjob", "hello", "p1.test").stdout)
    bob = job_id(as_user(cluster, "bob.test", "submitjob", "hello", "p1.test").stdout)
    assert [r["job_id"] for r in listed(as_user(cluster, "alice.test", "listjobs", "--json"))] == [alice]
    assert [r["job_id"] for r in listed(as_user(cluster, "bob.test", "listjobs", "--json"))] == [bob]
    assert listed(as_user(cluster, "bob.test", "listjobs", "--json", "--requester", "alice.test")) == []
    # root on the local socket can read the queue file anyway: it sees every job.
    assert {r["job_id"] for r in listed(cluster.cli("listjobs", "--json"))} == {alice, bob}
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(
        text + '\n[[policy]]\nname = "bob-reads"\nrequesters = ["cert:bob.test"]\nactions = ["read"]\n')
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reloaded" in cluster.log_text("conductor"), "policy reload")
    assert [r["job_id"] for r in listed(as_user(cluster, "bob.test", "listjobs", "--json"))] == [bob, alice]
    assert [r["job_id"] for r in listed(as_user(cluster, "bob.test", "listjobs", "--json", "--mine"))] == [bob]
    audit = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    lists = [e for e in audit if e["event"] == "list"]
    assert lists[-2]["requester"] == "cert:bob.test" and lists[-2]["of_others"] == 1


def test_a_listing_pages_past_jobs_the_policy_hides(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["alice.test", "bob.test"], conductor_settings=BOTH)
    hello = []
    for n in range(9):  # alice: hello, fail, fail, hello, fail, fail, hello, ... oldest first
        score = "hello" if n % 3 == 0 else "fail"
        submitted = as_user(cluster, "alice.test", "submitjob", score, "p1.test")
        assert submitted.returncode == 0, submitted.stderr
        if score == "hello":
            hello.append(job_id(submitted.stdout))
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(text + '\n[[policy]]\nname = "bob-reads-hello"\nrequesters = ["cert:bob.test"]\n'
                                               'scores = ["hello"]\nactions = ["read"]\n')
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reloaded" in cluster.log_text("conductor"), "policy reload")
    first = json.loads(as_user(cluster, "bob.test", "listjobs", "--json", "--limit", "2").stdout)
    assert [r["job_id"] for r in first["jobs"]] == hello[::-1][:2] and first["more"] is True
    every = json.loads(as_user(cluster, "bob.test", "listjobs", "--json", "--limit", "3").stdout)
    assert [r["job_id"] for r in every["jobs"]] == hello[::-1] and every["more"] is False
