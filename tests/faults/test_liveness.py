"""Frozen and vanished peers are detected within the liveness bound, on both sides."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST_CONDUCTOR, FAST_PLAYER, MakeCluster, job_json, submit

BOUND = max(FAST_CONDUCTOR["liveness_timeout"], FAST_PLAYER["liveness_timeout"]) + 3


@pytest.mark.slow
def test_frozen_player_is_dropped_and_comes_back_after_sigcont(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    frozen = cluster.player("p2.test")
    frozen.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    cluster.wait_disconnected(["p2.test"], timeout=BOUND + 5)
    assert time.monotonic() - start <= BOUND
    assert "player_silent" in cluster.log_text("conductor")
    # Work for the frozen player waits; work for the other goes on.
    code, waiting, _ = submit(cluster, "hello", "p2.test")
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0
    frozen.send_signal(signal.SIGCONT)
    cluster.wait_connected(["p2.test"], timeout=BOUND + 5)
    assert job_json(cluster, "getstatus", "--wait", "--timeout", "30", waiting.strip())[0] == 0


@pytest.mark.slow
def test_frozen_conductor_is_detected_by_players_and_they_reconnect(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    conductor = cluster.conductor()
    conductor.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    cluster.wait_for(lambda: "conductor_silent" in cluster.log_text("player-p1.test"),
                     "player notices the frozen conductor", timeout=BOUND + 5)
    assert time.monotonic() - start <= BOUND
    conductor.send_signal(signal.SIGCONT)
    cluster.wait_connected(["p1.test"], timeout=BOUND + 5)
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0


def test_getstatus_wait_survives_a_conductor_restart(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    code, out, _ = submit(cluster, "hello", "p2.test")
    waiter = subprocess.Popen(
        [sys.executable, "-m", "audience.getstatus", "--wait", "--timeout", "90", "--json", out.strip()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)})
    time.sleep(1)
    cluster.conductor().stop(signal.SIGKILL)
    time.sleep(1)
    cluster.start_conductor()
    cluster.start_player("p2.test")
    stdout, stderr = waiter.communicate(timeout=90)
    assert waiter.returncode == 0, stderr
    assert '"status": "ok"' in stdout


@pytest.mark.slow
def test_idle_sessions_with_default_settings_stay_up(make_cluster: MakeCluster) -> None:
    """Keepalive pings (every 30 s: one in 35 s) must not draw GOAWAY too_many_pings."""
    defaults = {"heartbeat_seconds": 5, "liveness_timeout": 20}
    cluster = make_cluster(["p1.test"], conductor_settings=defaults,
                           player_settings={**defaults, "backoff_initial": 0.5, "backoff_max": 30})
    time.sleep(35)
    for name in ("conductor", "player-p1.test"):
        text = cluster.log_text(name)
        assert "too_many_pings" not in text.lower() and "too many pings" not in text.lower()
    assert "session_ended" not in cluster.log_text("player-p1.test")
    assert cluster.log_text("conductor").count("player_connected") == 1
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0
