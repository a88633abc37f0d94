"""Readiness as systemd sees it (Type=notify): the daemons speak the sd_notify protocol to
a real datagram socket standing where systemd's would, and scores never inherit it."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster, job_json, store_dsn


class Supervisor:
    """The receiving end of NOTIFY_SOCKET, as systemd holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = 30) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines())
        self.messages.append(message)
        return message

    def until(self, key: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if key in message:
                return message


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "notify.sock")
    yield sup
    sup.sock.close()


def test_conductor_reports_ready_reload_and_stopping(make_cluster: MakeCluster, supervisor: Supervisor) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    proc = cluster.start_conductor(wait=False, extra_env={"NOTIFY_SOCKET": str(supervisor.path)})
    ready = supervisor.until("READY")
    if store_dsn(cluster) is not None:  # on PostgreSQL it stands by first, and takes the lease at once
        assert ready["READY"] == "1" and ready["STATUS"].startswith("standby "), ready
        ready = supervisor.until("READY")
    assert ready["READY"] == "1" and "0 of 1 players connected" in ready["STATUS"]
    assert cluster.players() is not None  # it answers once it said so
    proc.send_signal(signal.SIGHUP)
    reloading = supervisor.until("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert supervisor.until("READY")["READY"] == "1"
    proc.send_signal(signal.SIGTERM)
    assert supervisor.until("STOPPING")["STOPPING"] == "1"
    assert proc.stop() == 0


def test_player_reports_ready_and_its_scores_do_not_inherit_the_socket(
        make_cluster: MakeCluster, supervisor: Supervisor) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    player = cluster.start_player("p1.test", extra_env={"NOTIFY_SOCKET": str(supervisor.path)})
    assert supervisor.until("READY")["READY"] == "1"
    cluster.wait_connected(["p1.test"])
    code, job = job_json(cluster, "submitjob", "--wait", "--json", "showenv", "p1.test")
    assert code == 0, job
    output = job["tasks"][0]["stdout"]  # type: ignore[index]
    assert "ORC_" in output and "NOTIFY_SOCKET" not in output
    player.send_signal(signal.SIGHUP)
    assert "RELOADING" in supervisor.until("RELOADING")
    assert supervisor.until("READY")["READY"] == "1"
    player.send_signal(signal.SIGTERM)
    assert supervisor.until("STOPPING")["STOPPING"] == "1"
    assert player.stop() == 0


def test_a_missing_supervisor_socket_is_logged_once_and_never_stops_the_daemon(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster(["p1.test"], start=False)
    proc = cluster.start_conductor(extra_env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    proc.send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reloaded" in cluster.log_text("conductor"), "reload")
    assert cluster.log_text("conductor").count("sd_notify_failed") == 1
    assert cluster.players() is not None
