"""Fixtures: real daemons as subprocesses on loopback, a fresh PKI and state per test."""

from __future__ import annotations

import json
import sqlite3
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
