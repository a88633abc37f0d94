"""The live progress line of ``--wait``: drawn on a real terminal (a pty), streamed from the
conductor, and absent from pipes and ``--json``."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time

from devtools.devcluster import Cluster
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
    assert any(frame.startswith("[3/3]") or "3 ok" in frame for frame in frames) or "status     ok" in drawn
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
