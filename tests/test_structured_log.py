"""Every line a daemon writes to stderr is one JSON event, gRPC core's own lines too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools import pki
from devtools.devcluster import Cluster
from orchestra.log import THROTTLE_BURST
from tests.conftest import MakeCluster, submit, tls_attempt


def events(cluster: Cluster, name: str = "conductor") -> list[dict[str, object]]:
    text = cluster.log_text(name)
    assert "Traceback" not in "".join(line for line in text.splitlines() if not line.startswith("{"))
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON


def refused_handshake(port: int, ssl_dir: pki.SSLDir, name: str) -> None:
    """A TLS client with a certificate from a CA the conductor does not trust."""
    tls_attempt(port, (ssl_dir.cert(name), ssl_dir.key(name)))

def test_refused_handshakes_are_logged_with_their_peer_rate_limited_and_counted(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"])
    stranger = pki.init(tmp_path / "stranger", "conductor.test", ["p9.test"], [])
    for _ in range(30):
        refused_handshake(cluster.port, stranger, "p9.test")
    cluster.conductor().send_signal(signal.SIGUSR1)
    cluster.wait_for(lambda: any(e["event"] == "stats" for e in events(cluster)), "stats")
    [stats] = [e for e in events(cluster) if e["event"] == "stats"]
    assert stats["handshake_failures"] == 30
    failed = [e for e in events(cluster) if e["event"] == "tls_handshake_failed"]
    assert 1 <= len(failed) <= THROTTLE_BURST  # not 30 lines
    assert all(str(e["peer"]).startswith("ipv4:127.0.0.1:") for e in failed)
    assert "unable to get local issuer certificate" in str(failed[0]["reason"])


def test_stopping_with_waiting_clients_writes_only_json(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=60", "p1.test")
    env = {**cluster.env(), "ORCHESTRA_CONFIG": str(cluster.audience_config)}
    waiting = [subprocess.Popen([sys.executable, "-m", "audience.getstatus", "--wait", out.split()[0]],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        time.sleep(2)
        assert cluster.conductor().stop() == 0
    finally:
        for proc in waiting:
            proc.kill()
            proc.wait()
    names = [e["event"] for e in events(cluster)]
    assert names[-1] == "conductor_stopped"
    assert not any("CancelledError" in json.dumps(e) for e in events(cluster))
