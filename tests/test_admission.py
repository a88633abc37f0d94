"""Who may connect: certificates, the players file and its reload, one conductor per state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from devtools import pki
from tests.conftest import MakeCluster, job_json, submit


def test_player_with_certificate_from_another_ca_is_refused(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])
    other = pki.init(cluster.root / "other-ssl", "other-conductor", ["p2.test"], [])
    cluster.add_player_config("p2.test", ssl=other)
    proc = cluster.start_player("p2.test")
    cluster.wait_for(lambda: cluster.log_text("player-p2.test").count("session_ended") >= 2,
                     "p2 to fail twice", proc=proc)
    assert "UNAVAILABLE" in cluster.log_text("player-p2.test")
    assert "p2.test" not in cluster.connected()
    code, out, _ = submit(cluster, "hello", "p2.test")
    assert code == 0
    assert cluster.cli("getstatus", "--wait", "--timeout", "1", out.strip()).returncode == 3


def test_player_not_in_players_file_is_refused(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    authority = cluster.ssl.load_authority()
    cluster.ssl.write_leaf("intruder.test", *pki.issue(authority, "intruder.test",
                                                       pki.ROLE_USAGES["player"]))
    cluster.add_player_config("intruder.test")
    proc = cluster.start_player("intruder.test")
    cluster.wait_for(lambda: "PERMISSION_DENIED" in cluster.log_text("player-intruder.test"),
                     "intruder refused", proc=proc)
    assert "not in the players file" in cluster.log_text("player-intruder.test")
    assert "intruder.test" not in cluster.connected()
    code, _, err = submit(cluster, "hello", "intruder.test")
    assert code == 2 and "not in the players file" in err


def test_sighup_adds_and_removes_players(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.set_players(["p1.test"])
    cluster.start(players=["p1.test"])
    cluster.start_player("p2.test")
    cluster.wait_for(lambda: "PERMISSION_DENIED" in cluster.log_text("player-p2.test"), "p2 refused")
    assert submit(cluster, "hello", "p2.test")[0] == 2

    cluster.set_players(["p1.test", "p2.test"])
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_connected(["p2.test"])
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p2.test")
    assert code == 0

    # p2 runs one task at a time: one long task running, one waiting in the queue.
    code, running_out, _ = submit(cluster, "sleep", "seconds=30", "p2.test")
    cluster.wait_for(lambda: job_json(cluster, "getstatus", running_out.strip())[1]["tasks"][0]["state"]
                     == "running", "sleep running")
    code, waiting_out, _ = submit(cluster, "hello", "p2.test")
    assert code == 0
    cluster.set_players(["p1.test"])
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_disconnected(["p2.test"], timeout=10)
    _, waiting = job_json(cluster, "getstatus", "--wait", "--timeout", "10", waiting_out.strip())
    assert waiting["tasks"][0]["state"] == "removed"
    _, running = job_json(cluster, "getstatus", "--wait", "--timeout", "10", running_out.strip())
    assert running["tasks"][0]["state"] == "lost"
    assert "removed from the players file" in running["tasks"][0]["reason"]
    assert submit(cluster, "hello", "p2.test")[0] == 2
    time.sleep(1)
    assert "p2.test" not in cluster.connected()  # its reconnects are refused
    assert "p1.test" in cluster.connected()


def test_malformed_players_file_on_sighup_keeps_the_old_list(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    cluster.players_file.write_text("p1.test\nthis is not a certname\n")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "players_reload_failed" in cluster.log_text("conductor"), "reload failure")
    assert "line 2" in cluster.log_text("conductor")
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert code == 0 and job["status"] == "ok"


def test_second_conductor_on_the_same_state_dir_or_port_refuses(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    same_state = subprocess.run([sys.executable, "-m", "conductor.main", "--config",
                                 str(cluster.conductor_config)],
                                capture_output=True, text=True, timeout=30, env=cluster.env())
    assert same_state.returncode == 1
    assert "another conductor is running" in same_state.stderr
    text = cluster.conductor_config.read_text()
    other = cluster.root / "other.toml"
    other.write_text(text.replace(str(cluster.state_dir), str(cluster.root / "state2"))
                     .replace(str(cluster.socket), str(cluster.root / "run2.sock")))
    same_port = subprocess.run([sys.executable, "-m", "conductor.main", "--config", str(other)],
                               capture_output=True, text=True, timeout=30, env=cluster.env())
    assert same_port.returncode == 1
    assert "cannot listen" in same_port.stderr
    # The first conductor is unharmed.
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0


def test_bad_config_exits_2_with_one_line(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    bad = cluster.root / "bad.toml"
    bad.write_text(cluster.conductor_config.read_text().replace("listen =", "lisen ="))
    result = subprocess.run([sys.executable, "-m", "conductor.main", "--config", str(bad)],
                            capture_output=True, text=True, timeout=30, env=cluster.env())
    assert result.returncode == 2
    assert failure(result.stderr).endswith("lisen: unknown key") and result.stderr.count("\n") == 1
    text = cluster.conductor_config.read_text()
    no_tls = cluster.root / "no-tls.toml"
    no_tls.write_text(text[:text.index("[tls]")])
    result = subprocess.run([sys.executable, "-m", "conductor.main", "--config", str(no_tls)],
                            capture_output=True, text=True, timeout=30, env=cluster.env())
    assert result.returncode == 2 and "tls: table is required" in result.stderr
    missing = subprocess.run([sys.executable, "-m", "player.main", "--config", "/nonexistent.toml"],
                             capture_output=True, text=True, timeout=30, env=cluster.env())
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def failure(stderr: str) -> str:
    """The reason a daemon gave for not starting: its one ``daemon_failed`` event."""
    [line] = stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "daemon_failed"
    return str(event["error"])


def test_a_key_that_is_not_the_certificates_is_named_as_such(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    # The conductor's key replaced by a player's: gRPC alone would report a failure to listen.
    cluster.ssl.key("conductor.orchestra.test").write_bytes(cluster.ssl.key("p1.test").read_bytes())
    result = subprocess.run([sys.executable, "-m", "conductor.main", "--config", str(cluster.conductor_config)],
                            capture_output=True, text=True, timeout=30, env=cluster.env())
    assert result.returncode == 1
    reason = failure(result.stderr)
    assert "does not belong to certificate" in reason and "listen" not in reason
