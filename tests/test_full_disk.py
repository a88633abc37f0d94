"""A full disk under the conductor: clear answers, sessions kept, nothing lost or doubled.

The disk is a real, tiny tmpfs mounted for the test and filled with a real file; the
conductor finds out the way it would in production, from SQLite and write(2).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster, queue_rows, submit

# A full disk under the queue's own file: PostgreSQL keeps its files on its own server.
pytestmark = pytest.mark.backends("sqlite")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the file to delete to give them back."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        block = b"\0" * 65536
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last few bytes too
        try:
            with open(filler, "ab") as out:
                while True:
                    out.write(b"\0" * size)
                    out.flush()
        except OSError:
            pass
    return filler


def connects(cluster: Cluster, name: str) -> int:
    """How many sessions of this player the conductor has accepted."""
    return sum(1 for line in cluster.log_text("conductor").splitlines()
               if '"player_connected"' in line and f'"{name}"' in line)


def test_a_full_queue_disk_gives_a_clear_error_keeps_sessions_and_recovers(
        make_cluster: MakeCluster, tiny_disk: Path) -> None:
    cluster = make_cluster(["p1.test"], start=False, conductor_settings={"state_dir": str(tiny_disk / "state")})
    cluster.state_dir = tiny_disk / "state"
    cluster.start()
    assert submit(cluster, "hello", "p1.test", "--wait")[0] == 0
    code, out, _ = submit(cluster, "sleep", "seconds=3", "p1.test")
    running = out.split()[0]
    cluster.wait_for(lambda: any(t["state"] == "running" for t in queue_rows(cluster, "tasks")), "running")
    hellos = connects(cluster, "p1.test")
    filler = fill(tiny_disk)
    jobs = len(queue_rows(cluster, "jobs"))
    code, out, err = submit(cluster, "hello", "p1.test")
    assert code == 6, (code, out, err)
    assert "cannot write its queue" in err and "full" in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line
    assert len(queue_rows(cluster, "jobs")) == jobs  # nothing queued
    # The sleep ends meanwhile: its result cannot be stored, but the session stays up.
    cluster.wait_for(lambda: "store_write_failed" in cluster.log_text("conductor"), "result not stored", timeout=30)
    assert "p1.test" in cluster.connected()
    assert connects(cluster, "p1.test") == hellos
    filler.unlink()
    result = cluster.cli("getstatus", "--wait", "--timeout", "60", running)
    assert result.returncode == 0, result.stdout + result.stderr
    assert connects(cluster, "p1.test") == hellos  # stored on the same session, once
    assert submit(cluster, "hello", "p1.test", "--wait")[0] == 0
    log = cluster.log_text("conductor")
    assert "Traceback" not in log and all(line.startswith("{") for line in log.splitlines())


def test_a_full_audit_disk_never_turns_a_queued_job_into_an_error(
        make_cluster: MakeCluster, tiny_disk: Path) -> None:
    audit = tiny_disk / "audit.log"
    cluster = make_cluster(["p1.test"], conductor_settings={"audit_log": str(audit)})
    filler = fill(tiny_disk)
    code, out, err = submit(cluster, "hello", "p1.test", "--wait")
    assert code == 0, err  # committed, so acknowledged, and run
    job_id = out.split()[0]
    assert len(queue_rows(cluster, "jobs")) == 1
    assert "audit_write_failed" in cluster.log_text("conductor")
    assert job_id not in audit.read_text()
    filler.unlink()
    cluster.wait_for(lambda: job_id in audit.read_text(), "audit catches up", timeout=15)
    events = [line for line in audit.read_text().splitlines() if job_id in line]
    assert any('"submit"' in line and '"accepted"' in line for line in events)
    assert os.path.getsize(audit) > 0
