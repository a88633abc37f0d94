"""The player link kept current: SIGHUP reloads, score changes are noticed on their own,
and a conductor name that does not match says how to fix it.

Each test runs the real daemons; "without a reconnect" is checked in the conductor's log
(one ``player_connected``) and the player's (no ``session_ended``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from devtools import pki
from devtools.devcluster import Cluster
from player.main import SCORES_CHECK_ENV
from tests.conftest import MakeCluster, job_json, submit
from tests.faults.helpers import marker_score, runs

FRESH_CONF = "interface env\nparam COLOR required choices=red,blue\n"
FRESH_SCORE = "#!/bin/sh\necho \"colour $ORC_COLOR\"\n"


def events(cluster: Cluster, proc: str, event: str) -> list[dict[str, Any]]:
    return cluster.log_events(proc, event)


def put(path: Path, text: str, mode: int) -> None:
    """Replace a file at once, as Puppet does: a check never sees it half written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


def install(cluster: Cluster, name: str, body: str, conf: str, player: str = "p1.test") -> None:
    """Install a score as Puppet would: files only, nobody tells the player. The .conf
    comes last: a score without one is not listed at all."""
    put(cluster.scores_dir(player) / name, body, 0o755)
    put(cluster.scores_dir(player) / f"{name}.conf", conf, 0o644)


def scores_of(cluster: Cluster, name: str) -> dict[str, bool]:
    """What the conductor says the player has (listplayers): name -> valid."""
    for player in cluster.players() or []:
        if player.name == name:
            return {score.name: score.valid for score in player.scores}
    return {}


def assert_one_session(cluster: Cluster, name: str) -> None:
    connected = [e for e in events(cluster, "conductor", "player_connected") if e.get("player") == name]
    assert len(connected) == 1, connected
    assert not events(cluster, f"player-{name}", "session_ended")
    assert cluster.player(name).running


def test_sighup_rescans_scores_and_keeps_the_session_and_the_running_score(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    cluster = make_cluster(start=False)
    cluster.add_score("slow", marker_score(marker, sleep=4), "interface env\n")
    cluster.start_conductor()
    # Periodic checks off: only the SIGHUP can make the new score known.
    cluster.start_player("p1.test", extra_env={SCORES_CHECK_ENV: "3600"})
    cluster.wait_connected(["p1.test"])
    code, out, err = submit(cluster, "slow", "p1.test")
    assert code == 0, err
    cluster.wait_for(lambda: len(runs(marker)) == 1, "the slow score started")

    install(cluster, "fresh", FRESH_SCORE, FRESH_CONF)
    assert "fresh" not in scores_of(cluster, "p1.test")
    cluster.player("p1.test").send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: scores_of(cluster, "p1.test").get("fresh") is True,
                     "the new score announced", timeout=15)

    # The conductor checks submissions against the new declarations...
    code, _, err = submit(cluster, "fresh", "color=green", "p1.test")
    assert code == 2 and "COLOR" in err and "green" in err, err
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "fresh", "color=red", "p1.test")
    assert code == 0 and job["tasks"][0]["stdout"] == "colour red\n"  # type: ignore[index]
    # ...and the score that ran through the reload ended as it would have anyway.
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", out.strip())
    assert code == 0 and job["tasks"][0]["state"] == "ok"  # type: ignore[index]
    assert runs(marker) == {job["tasks"][0]["task_id"]: 1}  # type: ignore[index]
    assert_one_session(cluster, "p1.test")
    sent = events(cluster, "player-p1.test", "inventory_sent")
    assert [e["reason"] for e in sent] == ["reload"]
    [updated] = events(cluster, "conductor", "inventory_updated")
    assert updated["player"] == "p1.test" and updated["added"] == ["fresh"] and updated["removed"] == []
    # Stored as a Hello's list is: a restarted conductor knows it before the player is back.
    cluster.player("p1.test").stop()
    cluster.conductor().stop()
    cluster.start_conductor()
    assert "p1.test" not in cluster.connected() and scores_of(cluster, "p1.test").get("fresh") is True


def test_scores_installed_and_removed_while_running_are_noticed_without_a_signal(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    assert "fresh" not in scores_of(cluster, "p1.test")
    install(cluster, "fresh", FRESH_SCORE, FRESH_CONF)  # as Puppet would, at any time
    cluster.wait_for(lambda: scores_of(cluster, "p1.test").get("fresh") is True,
                     "the new score announced", timeout=20)
    code, _, err = submit(cluster, "fresh", "p1.test")
    assert code == 2 and "COLOR" in err, err  # its declarations are known at submit time
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "fresh", "color=blue", "p1.test")
    assert code == 0 and job["tasks"][0]["stdout"] == "colour blue\n"  # type: ignore[index]

    # A broken .conf is reported as such, and a removed score disappears.
    put(cluster.scores_dir("p1.test") / "fresh.conf", "interface env\nbogus directive\n", 0o644)
    cluster.wait_for(lambda: scores_of(cluster, "p1.test").get("fresh") is False,
                     "the broken score reported invalid", timeout=20)
    for path in (cluster.scores_dir("p1.test") / "fresh.conf", cluster.scores_dir("p1.test") / "fresh"):
        path.unlink()
    cluster.wait_for(lambda: "fresh" not in scores_of(cluster, "p1.test"),
                     "the removed score gone", timeout=20)
    assert "hello" in scores_of(cluster, "p1.test")
    assert_one_session(cluster, "p1.test")
    updates = events(cluster, "conductor", "inventory_updated")
    assert [(u["added"], u["changed"], u["removed"]) for u in updates] == [
        (["fresh"], [], []), ([], ["fresh"], []), ([], [], ["fresh"])]


def test_sighup_keeps_a_bad_certificate_or_key_out_and_uses_a_renewed_one_from_the_next_dial(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    ssl, name = cluster.ssl, "p1.test"
    cert, key = ssl.cert(name), ssl.key(name)
    good_cert, good_key = cert.read_bytes(), key.read_bytes()

    def reload_fails(expected: str) -> None:
        before = len(events(cluster, f"player-{name}", "certificate_reload_failed"))
        cluster.player(name).send_signal(signal.SIGHUP)
        cluster.wait_for(lambda: len(events(cluster, f"player-{name}", "certificate_reload_failed")) > before,
                         "the reload refused")
        failure = events(cluster, f"player-{name}", "certificate_reload_failed")[-1]
        assert expected in failure["error"], failure

    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    reload_fails("cannot parse certificate")
    cert.write_bytes(good_cert)
    key.write_bytes(pki.key_pem(ec.generate_private_key(ec.SECP256R1())))
    reload_fails("does not belong to certificate")
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    reload_fails("cannot parse private key")
    key.unlink()
    reload_fails("cannot read private key")
    assert_one_session(cluster, name)

    # The bad files are still there: a new dial works with the certificate kept in memory.
    cluster.conductor().stop()
    cluster.start_conductor()
    cluster.wait_connected([name])
    old_serial = events(cluster, "conductor", "player_connected")[-1]["serial"]

    # A renewed certificate (same name, new key) is taken, and used once the player redials.
    authority = ssl.load_authority()
    renewed, renewed_key = pki.issue(authority, name, pki.ROLE_USAGES["player"])
    ssl.write_leaf(name, renewed, renewed_key)
    cluster.player(name).send_signal(signal.SIGHUP)
    serial = f"{renewed.serial_number:x}"
    cluster.wait_for(lambda: [e["serial"] for e in events(cluster, f"player-{name}", "certificate_reloaded")]
                     == [serial], "the renewed certificate taken")
    assert serial != old_serial
    connected = [e["serial"] for e in events(cluster, "conductor", "player_connected")]
    assert connected == [old_serial, old_serial]  # the live session carried on
    cluster.conductor().stop()
    cluster.start_conductor()
    cluster.wait_connected([name])
    assert events(cluster, "conductor", "player_connected")[-1]["serial"] == serial
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", name)[0] == 0


def test_dialling_by_address_without_conductor_name_says_what_to_set(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    config = cluster.add_player_config("p1.test", conductor_name="127.0.0.1")
    cluster.start_conductor()
    cluster.start_player("p1.test", config)
    cluster.wait_for(lambda: events(cluster, "player-p1.test", "session_ended"), "a refused dial")
    ended = events(cluster, "player-p1.test", "session_ended")[0]
    assert "Hostname Verification Check failed" in ended["details"]
    assert ended["level"] == "error" and ended["conductor_name"] == "127.0.0.1"
    assert f"set conductor_name in {config}" in ended["hint"]
    assert "the name in the conductor's certificate" in ended["hint"]
