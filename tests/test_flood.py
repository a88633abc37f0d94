"""Unauthenticated connections cannot lock players or operators out.

The attack as it was found: with the usual limit of 1024 open files, 1,100 TCP
connections that never start TLS filled every descriptor, kept a restarted player out,
made ``listplayers`` fail and wrote a flood of log lines.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator

import pytest

from devtools.devcluster import Cluster
from tests.conftest import MakeCluster

HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        pytest.skip(f"this test needs 3000 open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3000), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, count: int) -> list[socket.socket]:
    """TCP connections that never say a word (no TLS ClientHello)."""
    idle = []
    for _ in range(count):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            pass  # refused by a full backlog: the attacker just tries again
    return idle


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def json_only(cluster: Cluster) -> list[dict[str, object]]:
    return [json.loads(line) for line in cluster.log_text("conductor").splitlines()]


def test_idle_connections_under_a_1024_file_limit_lock_nobody_out(make_cluster: MakeCluster, many_fds: None) -> None:
    cluster = make_cluster(["p1.test"], start=False, conductor_settings={"handshake_timeout": HANDSHAKE_TIMEOUT})
    cluster.start_conductor(prefix=["prlimit", "--nofile=1024:1024"])
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    ready = next(e for e in json_only(cluster) if e["event"] == "conductor_ready")
    assert ready["fd_limit"] == 1024 and ready["max_connections"] == 512
    cluster.player("p1.test").stop()
    idle = open_idle(cluster.port, 1100)
    try:
        assert len(idle) > 512
        # Operators on the local socket are never capped with the public port.
        started = time.monotonic()
        result = cluster.cli("listplayers")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 5
        # The player comes back once the idle connections have been dropped.
        cluster.start_player("p1.test")
        cluster.wait_connected(["p1.test"], timeout=HANDSHAKE_TIMEOUT + 15)
        cluster.wait_for(lambda: all(closed_by_server(s) for s in idle), "idle connections closed",
                         timeout=HANDSHAKE_TIMEOUT + 10)
    finally:
        for sock in idle:
            sock.close()
    events = json_only(cluster)  # every line is one JSON object
    assert len(events) < 300, f"{len(events)} log lines for one flood"
    assert sum(1 for e in events if e["event"] == "tls_handshake_failed") <= 20


def test_a_half_open_handshake_is_closed_after_the_timeout(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], conductor_settings={"handshake_timeout": HANDSHAKE_TIMEOUT})
    [sock] = open_idle(cluster.port, 1)
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT + 10)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert HANDSHAKE_TIMEOUT - 0.5 < time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    finally:
        sock.close()
    cluster.wait_for(lambda: any(e["event"] == "tls_handshake_failed" and "127.0.0.1" in str(e.get("peer"))
                                 for e in json_only(cluster)), "handshake failure logged with its peer")
