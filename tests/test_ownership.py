"""Jobs belong to their requester; idempotency keys too. Real requesters: two audience
certificates over mTLS, and a second Unix user on the local socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devcluster import Cluster, write_toml
from tests.conftest import MakeCluster, queue_rows, submit

BOTH = {"audience": {"alice.test": {"scores": ["*"], "targets": ["*"]},
                     "bob.test": {"scores": ["*"], "targets": ["*"]}}}


def _as(cluster: Cluster, who: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli(command, *args, config=cluster.remote_audience_config(who))


def _audit(cluster: Cluster) -> list[dict[str, object]]:
    return [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]


def _add_policy(cluster: Cluster, rule: str) -> None:
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(text + "\n[[policy]]\n" + rule)
    before = cluster.log_text("conductor").count("policy_reloaded")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: cluster.log_text("conductor").count("policy_reloaded") > before, "policy reload")


@pytest.fixture
def two_users(make_cluster: MakeCluster) -> Cluster:
    return make_cluster(["p1.test"], audience_names=["alice.test", "bob.test"], conductor_settings=BOTH)


def test_another_requesters_job_is_invisible_and_untouchable(two_users: Cluster) -> None:
    cluster = two_users
    result = _as(cluster, "alice.test", "submitjob", "sleep", "seconds=60", "p1.test")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[0]
    assert _as(cluster, "alice.test", "getstatus", job_id).returncode == 3  # hers, running
    for command, args in (("getstatus", ()), ("getstatus", ("--wait", "--timeout", "1")), ("canceljob", ())):
        result = _as(cluster, "bob.test", command, *args, job_id)
        assert result.returncode == 5 and f"no such job {job_id}" in result.stderr, (command, result.stderr)
    assert queue_rows(cluster, "tasks")[0]["state"] == "running"  # bob's cancel did nothing
    denied = [e for e in _audit(cluster) if e.get("decision") == "denied" and e.get("job_id") == job_id]
    assert {e["event"] for e in denied} == {"read", "cancel"}
    assert all(e["requester"] == "cert:bob.test" and e["owner"] == "cert:alice.test" for e in denied)
    assert _as(cluster, "alice.test", "canceljob", "--wait", job_id).returncode == 1  # she may


def test_policy_grants_reading_and_cancelling_other_jobs(two_users: Cluster) -> None:
    cluster = two_users
    job_id = _as(cluster, "alice.test", "submitjob", "sleep", "seconds=60", "p1.test").stdout.split()[0]
    _add_policy(cluster, 'name = "bob-reads"\nrequesters = ["cert:bob.test"]\nactions = ["read"]\n')
    assert _as(cluster, "bob.test", "getstatus", job_id).returncode == 3
    result = _as(cluster, "bob.test", "canceljob", job_id)
    assert result.returncode == 2 and "no policy rule allows cert:bob.test to cancel" in result.stderr
    reads = [e for e in _audit(cluster) if e["event"] == "read" and e.get("decision") == "accepted"]
    assert reads and reads[-1]["rule"] == "bob-reads"
    _add_policy(cluster, 'name = "bob-cancels"\nrequesters = ["cert:bob.test"]\nactions = ["cancel"]\n')
    assert _as(cluster, "bob.test", "canceljob", "--wait", job_id).returncode == 1
    assert queue_rows(cluster, "tasks")[0]["state"] == "cancelled"


def test_idempotency_keys_belong_to_their_requester(two_users: Cluster) -> None:
    cluster = two_users
    key = ("--idempotency-key", "deploy-42")
    first = _as(cluster, "alice.test", "submitjob", *key, "hello", "p1.test")
    assert first.returncode == 0, first.stderr
    alice_job = first.stdout.split()[0]
    again = _as(cluster, "alice.test", "submitjob", *key, "hello", "p1.test")
    assert again.returncode == 0 and again.stdout.split()[0] == alice_job
    other = _as(cluster, "bob.test", "submitjob", *key, "hello", "p1.test")
    assert other.returncode == 0 and other.stdout.split()[0] != alice_job  # not alice's job
    changed = _as(cluster, "alice.test", "submitjob", *key, "hello", "who=else", "p1.test")
    assert changed.returncode == 2 and alice_job in changed.stderr and "different" in changed.stderr
    assert len(queue_rows(cluster, "jobs")) == 2
    rejected = [e for e in _audit(cluster) if e["event"] == "submit" and e.get("decision") == "rejected"]
    assert rejected and rejected[-1]["job_id"] == alice_job


# ---- a second Unix user on the local socket ------------------------------------------------

NOBODY = 65534


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own temp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="orc-local-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_a_second_local_user_reaches_the_socket_through_its_group_and_sees_only_its_jobs(
        make_cluster: MakeCluster, open_dir: Path) -> None:
    socket = open_dir / "run" / "conductor.sock"  # run/ does not exist: the conductor makes it
    cluster = make_cluster(["p1.test"], start=False, conductor_settings={"audience_socket": str(socket)})
    cluster.socket = socket
    cluster.audience_config = write_toml(open_dir / "audience.toml", {"socket": str(socket)}, None)
    cluster.start()
    assert (socket.parent.stat().st_mode & 0o777) == 0o750

    def as_nobody(module: str, *args: str) -> subprocess.CompletedProcess[str]:
        # nobody, in the conductor's group (gid 0 here): what "owner and group" promises.
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", "--regid=0", "--clear-groups",
                               sys.executable, "-m", module, *args], capture_output=True, text=True,
                              timeout=60, cwd="/", env={**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)})

    mine = as_nobody("audience.submitjob", "--wait", "hello", "p1.test")
    assert mine.returncode == 0, mine.stderr
    nobody_job = mine.stdout.split()[0]
    roots = cluster.cli("submitjob", "--wait", "hello", "p1.test")
    assert roots.returncode == 0, roots.stderr
    root_job = roots.stdout.split()[0]
    seen = as_nobody("audience.getstatus", root_job)
    assert seen.returncode == 5 and "no such job" in seen.stderr and "hello" not in seen.stdout
    assert as_nobody("audience.canceljob", root_job).returncode == 5
    assert as_nobody("audience.getstatus", nobody_job).returncode == 0
    # root can read the queue file anyway: it sees every job.
    assert cluster.cli("getstatus", nobody_job).returncode == 0


def test_a_retry_gets_its_job_back_whatever_changed_since(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    key = ("--idempotency-key", "nightly-7")
    first = submit(cluster, *key, "hello", "who=ops", "p1.test")
    assert first[0] == 0, first[2]
    job_id = first[1].split()[0]
    # The score is gone from the player by the time the client retries.
    for path in (cluster.scores_dir("p1.test") / "hello", cluster.scores_dir("p1.test") / "hello.conf"):
        path.unlink()
    cluster.player("p1.test").send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: not any(s.name == "hello" for p in cluster.players() or [] for s in p.scores),
                     "p1 no longer lists hello")
    assert submit(cluster, "hello", "who=ops", "p1.test")[0] == 2  # a new job would be refused
    again = submit(cluster, *key, "hello", "who=ops", "p1.test")
    assert again[0] == 0 and again[1].split()[0] == job_id, again
    assert len(queue_rows(cluster, "jobs")) == 1
