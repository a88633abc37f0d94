"""Revocation reaches what TLS never checks again: open streams, granted tasks, the listing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509

from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster, write_toml
from tests.conftest import MakeCluster, job_json, submit

AUDIENCE = {"audience": {"ci.test": {"scores": ["*"], "targets": ["*"]}}}


def _job_id(stdout: str) -> str:
    return stdout.split()[0]


def _wait_running(cluster: Cluster, job_id: str) -> None:
    def running() -> bool:
        code, job = job_json(cluster, "getstatus", job_id)
        return any(t["state"] == "running" for t in job["tasks"])  # type: ignore[index, union-attr]
    cluster.wait_for(running, "task running")


def _revoked(cluster: Cluster, name: str) -> str:
    return next(p.revoked for p in cluster.players() or [] if p.name == name)


def test_revoking_an_audience_cert_ends_its_open_wait(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ci.test"], conductor_settings=AUDIENCE)
    ci = cluster.remote_audience_config("ci.test")
    job_id = _job_id(cluster.cli("submitjob", "sleep", "seconds=60", "p1.test", config=ci).stdout)
    env = {**cluster.env(), "ORCHESTRA_CONFIG": str(ci)}
    waiting = subprocess.Popen([sys.executable, "-m", "audience.getstatus", "--wait", job_id],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(2)  # the CLI connects and opens its stream
        assert waiting.poll() is None
        assert pki.main(["revoke", str(cluster.ssl.root), "ci.test"]) == 0
        started = time.monotonic()
        _, err = waiting.communicate(timeout=20)
        assert time.monotonic() - started < 15  # not the minute the job still has to run
        assert waiting.returncode == 4, err
        assert "revoked" in err
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert "audience_stream_closed" in cluster.log_text("conductor")


def test_a_revoked_players_started_task_ends_lost_and_listing_says_revoked(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=300", "p2.test")
    job_id = _job_id(out)
    _wait_running(cluster, job_id)
    assert _revoked(cluster, "p2.test") == ""
    assert pki.main(["revoke", str(cluster.ssl.root), "p2.test"]) == 0
    result = cluster.cli("getstatus", "--wait", "--timeout", "30", job_id)
    assert result.returncode == 1, result.stdout + result.stderr
    code, job = job_json(cluster, "getstatus", job_id)
    task = job["tasks"][0]  # type: ignore[index]
    assert task["state"] == "lost" and "revoked" in task["reason"]
    assert "revoked" in _revoked(cluster, "p2.test")
    assert _revoked(cluster, "p1.test") == ""
    shown = cluster.cli("listplayers").stdout
    assert [line.split()[1] for line in shown.splitlines() if line.startswith(("p1.test", "p2.test"))] == \
        ["connected", "revoked"]
    listed = {p["name"]: p for p in json.loads(cluster.cli("listplayers", "--json").stdout)["players"]}
    assert "is revoked" in listed["p2.test"]["revoked"] and listed["p1.test"]["revoked"] is None


def test_a_player_revoked_while_offline_has_its_started_task_ended_without_calling(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=300", "p1.test")
    job_id = _job_id(out)
    _wait_running(cluster, job_id)
    cluster.player("p1.test").stop()  # the score lives on; its task stays running
    cluster.wait_disconnected(["p1.test"])
    assert pki.main(["revoke", str(cluster.ssl.root), "p1.test"]) == 0
    # The conductor checks the certificate p1 last used against the new CRL.
    result = cluster.cli("getstatus", "--wait", "--timeout", "30", job_id)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "revoked" in _revoked(cluster, "p1.test")
    cluster.conductor().stop()
    cluster.start_conductor()  # still known as revoked after a restart
    assert "revoked" in _revoked(cluster, "p1.test")


def test_an_old_revoked_certificate_cannot_touch_the_player_that_replaced_it(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(["p1.test"])
    old_cert, old_key = tmp_path / "old.pem", tmp_path / "old-key.pem"
    shutil.copy(cluster.ssl.cert("p1.test"), old_cert)
    shutil.copy(cluster.ssl.key("p1.test"), old_key)
    old_serial = x509.load_pem_x509_certificate(old_cert.read_bytes()).serial_number
    # The host gets a new certificate (as after `puppetserver ca clean` and a new request).
    assert pki.main(["issue", str(cluster.ssl.root), "p1.test", "--role", "player", "--force"]) == 0
    cluster.player("p1.test").stop()
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    code, out, _ = submit(cluster, "sleep", "seconds=300", "p1.test")
    job_id = _job_id(out)
    _wait_running(cluster, job_id)
    cluster.ssl.revoke(cluster.ssl.load_authority(), [old_serial])
    time.sleep(3)  # the conductor has read the new CRL
    # Someone still holding the old pair dials in as p1.
    (tmp_path / "intruder-spool").mkdir()
    config = write_toml(tmp_path / "intruder.toml", {
        "conductor": f"127.0.0.1:{cluster.port}", "conductor_name": CONDUCTOR_NAME,
        "scores_dir": str(cluster.scores_dir("p1.test")), "spool_dir": str(tmp_path / "intruder-spool"),
        "backoff_initial": 0.1, "backoff_max": 1,
    }, {"ca": str(cluster.ssl.ca_cert), "cert": str(old_cert), "key": str(old_key)})
    legit = cluster.player("p1.test")
    intruder = cluster.start_player("p1.test", config=config)
    cluster.procs["player-intruder"], cluster.procs["player-p1.test"] = intruder, legit  # both stopped at the end
    try:
        cluster.wait_for(lambda: "is revoked" in cluster.log_text("conductor"), "the old certificate refused")
        time.sleep(2)
    finally:
        intruder.stop()
    code, job = job_json(cluster, "getstatus", job_id)
    assert job["tasks"][0]["state"] == "running"  # type: ignore[index]
    assert _revoked(cluster, "p1.test") == "" and "p1.test" in cluster.connected()
