"""Fixtures: real daemons as subprocesses on loopback, a fresh PKI and state per test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlite_utils

from devtools.devcluster import Cluster

# Short liveness settings keep fault scenarios quick; the defaults are documented.
FAST_CONDUCTOR = {"heartbeat_seconds": 0.5, "liveness_timeout": 4, "reconnect_grace": 5}
FAST_PLAYER = {"heartbeat_seconds": 0.5, "liveness_timeout": 4, "backoff_initial": 0.1,
               "backoff_max": 1, "kill_grace": 1}

MakeCluster = Callable[..., Cluster]


def required_tool(command: str, package: str) -> str:
    """The path of a real tool a test drives: CI must have it (``.ci/run`` installs the
    Debian ``package``), so there its absence fails the test; elsewhere it is skipped."""
    tool = shutil.which(command)
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{command} is missing: CI must install the Debian package {package}")
        pytest.skip(f"{command} is not installed (Debian package {package})")
    return tool


def tls_attempt(port: int, certificate: tuple[Path, Path] | None) -> None:
    """One TLS client (with this certificate and key, or none) that the conductor is
    expected to refuse; returns once the refusal has arrived."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(*certificate)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.recv(1)  # TLS 1.3: the refusal arrives after the client's last flight
        except (ssl.SSLError, OSError):
            pass


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    made: list[Cluster] = []

    def make(players: list[str] | None = None, *, start: bool = True, **kwargs: object) -> Cluster:
        conductor_settings = {**FAST_CONDUCTOR, **kwargs.pop("conductor_settings", {})}  # type: ignore[dict-item]
        player_settings = {**FAST_PLAYER, **kwargs.pop("player_settings", {})}  # type: ignore[dict-item]
        cluster = Cluster(tmp_path / f"cluster{len(made)}", players or ["p1.test"],
                          conductor_settings=conductor_settings, player_settings=player_settings,
                          **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def cluster3(make_cluster: MakeCluster) -> Cluster:
    return make_cluster(["p1.test", "p2.test", "p3.test"])


def queue_rows(cluster: Cluster, table: str) -> list[dict[str, object]]:
    """Read the conductor's queue directly (read-only) to check what was stored."""
    return read_rows(cluster.state_dir / "queue.db", table)


def read_rows(path: Path, table: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(sqlite_utils.Database(conn)[table].rows)
    finally:
        conn.close()


def submit(cluster: Cluster, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    result = cluster.cli("submitjob", *args, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def job_json(cluster: Cluster, *args: str) -> tuple[int, dict[str, object]]:
    """Run submitjob/getstatus with --json and parse the single object it prints."""
    command, rest = args[0], args[1:]
    result = cluster.cli(command, "--json", *rest)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)
