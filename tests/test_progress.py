"""The live progress line of ``--wait``: drawn on a real terminal (a pty), streamed from the
conductor, and absent from pipes and ``--json``."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time

import grpc
import pytest

from devtools.devcluster import CONDUCTOR_NAME, Cluster
from orchestra.wire import audience_pb2, audience_pb2_grpc
from tests.conftest import MakeCluster, submit

CLEAR_LINE = "\r\x1b[K"


def on_terminal(cluster: Cluster, module: str, *args: str, columns: int = 200) -> tuple[int, str]:
    """Run an audience command with its stdout on a pty; returns (exit code, what it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command exited and closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=60)
    return proc.returncode, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_wait_on_a_terminal_draws_live_progress_then_the_report(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test", "p3.test"])
    code, drawn = on_terminal(cluster, "audience.submitjob", "--wait", "--all-of", "sleep", "seconds=3",
                              "p1.test", "p2.test", "p3.test")
    assert code == 0, drawn
    frames = [part for part in drawn.split(CLEAR_LINE)[1:] if part.startswith("[")]
    assert frames, drawn
    assert any("running" in frame and "/3]" in frame for frame in frames), frames
    assert any("longest: p" in frame for frame in frames), frames
    # The line is cleared before the report, which reads as it always did.
    report = drawn.rsplit(CLEAR_LINE, 1)[-1]
    assert report.splitlines()[0].startswith("job ") and "status     ok" in report
    assert drawn.count("\n") < 30  # one line rewritten in place, not a line per update


def test_the_elapsed_time_moves_while_no_task_does(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=4", "p1.test")
    started = time.monotonic()
    code, drawn = on_terminal(cluster, "audience.getstatus", "--wait", out.split()[0])
    assert code == 0 and time.monotonic() - started > 2
    elapsed = {frame.split(" · ")[1] for frame in drawn.split(CLEAR_LINE) if frame.startswith("[0/1]")}
    assert len(elapsed) >= 2, drawn  # redrawn each second with a new elapsed time


def test_the_line_fits_the_terminal(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    code, drawn = on_terminal(cluster, "audience.submitjob", "--wait", "--all-of", "sleep", "seconds=2",
                              "p1.test", "p2.test", columns=40)
    frames = [part for part in drawn.split(CLEAR_LINE)[1:] if part.startswith("[")]
    assert frames and all(len(frame) < 40 for frame in frames), frames


def test_no_progress_in_pipes_or_json(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    piped = cluster.cli("submitjob", "--wait", "sleep", "seconds=2", "p1.test")
    assert piped.returncode == 0 and "\x1b" not in piped.stdout and "\r" not in piped.stdout
    code, drawn = on_terminal(cluster, "audience.submitjob", "--wait", "--json", "sleep", "seconds=2", "p1.test")
    assert code == 0 and "\x1b[K" not in drawn and drawn.lstrip().startswith("{")


def test_canceljob_wait_shows_progress_until_the_tasks_end(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=60", "p1.test")
    job_id = out.split()[0]
    cluster.wait_for(lambda: "task_started" in cluster.log_text("conductor")
                     or "running" in cluster.cli("getstatus", job_id).stdout, "the task to start")
    code, drawn = on_terminal(cluster, "audience.canceljob", "--wait", job_id)
    assert code == 1, drawn
    assert "cancelled" in drawn.rsplit(CLEAR_LINE, 1)[-1]


# ---- WatchJob itself, as any gRPC client would call it -----------------------------------

def watch(cluster: Cluster, job_id: str, timeout: float = 0.0) -> tuple[list[audience_pb2.JobUpdate], str]:
    """Every update of one WatchJob call over the local socket, and how it ended."""
    channel = grpc.insecure_channel(f"unix:{cluster.socket}")
    updates: list[audience_pb2.JobUpdate] = []
    try:
        for update in audience_pb2_grpc.AudienceStub(channel).WatchJob(
                audience_pb2.WaitRequest(job_id=job_id, timeout_seconds=timeout), timeout=60):
            updates.append(update)
        return updates, "OK"
    except grpc.RpcError as err:
        return updates, f"{err.code().name}: {err.details()}"
    finally:
        channel.close()


def test_watch_streams_progress_then_the_job_or_stops_at_its_timeout(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    code, out, _ = submit(cluster, "--all-of", "sleep", "seconds=2", "p1.test", "p2.test")
    updates, end = watch(cluster, out.split()[0])
    assert end == "OK"
    assert updates[-1].HasField("job") and updates[-1].job.finished and updates[-1].job.status == "ok"
    progress = [u.progress for u in updates[:-1]]
    assert progress and all(p.total == 2 for p in progress)
    assert len(progress) <= 6  # at most about one a second, not one per task move
    code, out, _ = submit(cluster, "sleep", "seconds=30", "p1.test")
    started = time.monotonic()
    updates, end = watch(cluster, out.split()[0], timeout=1.5)
    assert end == "OK" and time.monotonic() - started < 10
    assert updates[-1].HasField("job") and not updates[-1].job.finished
    updates, end = watch(cluster, out.split()[0], timeout=float("nan"))
    assert end.startswith("INVALID_ARGUMENT") and "finite" in end


def test_watch_of_a_job_the_caller_may_not_read_is_no_such_job(make_cluster: MakeCluster) -> None:
    both = {"audience": {"alice.test": {"scores": ["*"], "targets": ["*"]},
                         "bob.test": {"scores": ["*"], "targets": ["*"]}}}
    cluster = make_cluster(["p1.test"], audience_names=["alice.test", "bob.test"], conductor_settings=both)
    alice = cluster.cli("submitjob", "sleep", "seconds=30", "p1.test",
                        config=cluster.remote_audience_config("alice.test"))
    job_id = alice.stdout.split()[0]
    bob = cluster.cli("getstatus", "--wait", "--timeout", "2", job_id, config=cluster.remote_audience_config("bob.test"))
    assert bob.returncode == 5 and "no such job" in bob.stderr  # the CLI's wait is a WatchJob on a terminal only
    ssl = cluster.ssl
    credentials = grpc.ssl_channel_credentials(ssl.ca_cert.read_bytes(), ssl.key("bob.test").read_bytes(),
                                               ssl.cert("bob.test").read_bytes())
    channel = grpc.secure_channel(f"127.0.0.1:{cluster.port}", credentials,
                                  options=[("grpc.ssl_target_name_override", CONDUCTOR_NAME)])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            list(audience_pb2_grpc.AudienceStub(channel).WatchJob(audience_pb2.WaitRequest(job_id=job_id), timeout=20))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()


def test_watchers_get_a_clean_unavailable_at_once_when_the_conductor_stops(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=60", "p1.test")
    results: list[tuple[list[audience_pb2.JobUpdate], str]] = []
    watching = [threading.Thread(target=lambda: results.append(watch(cluster, out.split()[0]))) for _ in range(3)]
    for thread in watching:
        thread.start()
    time.sleep(2)
    started = time.monotonic()
    assert cluster.conductor().stop() == 0
    assert time.monotonic() - started < 1.9  # not the server's 2 s grace: each answered first
    for thread in watching:
        thread.join(timeout=20)
    assert [end for _, end in results] == ["UNAVAILABLE: conductor shutting down"] * 3
    lines = cluster.log_text("conductor").splitlines()
    assert all(line.startswith("{") for line in lines) and json.loads(lines[-1])["event"] == "conductor_stopped"
