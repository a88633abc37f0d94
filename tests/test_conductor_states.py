"""The conductor's own state (starting, recovering, serving, draining): in its log, its
health service, listplayers' header and its metrics, with real daemons; and the pure
rules behind it.

A result handler is held in flight by a real resource: a test process takes the queue's
SQLite write lock (``BEGIN IMMEDIATE``), so the conductor's commit of the result waits
(and is retried, as for a full disk) until the lock is released.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import grpc
import psycopg
import pytest

from audience import listplayers
from conductor import health
from conductor.audit import AuditLog
from conductor.auth import QUEUE_CHANGES, Gate, Revocation
from conductor.policy import parse_policy
from conductor.state import MOVES, ConductorState, IllegalMove, Recovery, StateMachine
from devtools.devcluster import CONDUCTOR_NAME, Cluster, free_port
from orchestra.errors import ExitCode
from orchestra.wire import audience_pb2
from tests.conftest import MakeCluster, queue_rows, read_rows, store_dsn, submit
from tests.test_health import CLIENT, target
from tests.test_metrics import lint, samples, scrape, value

STATES = [state.value for state in ConductorState]
NAMES = [health.STATE_NAMES[state] for state in ConductorState]

# One process asks for every name at once, as grpc_health_probe would one by one.
PROBE = textwrap.dedent("""
    import json, sys
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target, ca, cert, key = sys.argv[1:5]
    if ca:
        credentials = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(),
                                                   open(cert, "rb").read())
        channel = grpc.secure_channel(target, credentials,
                                      options=[("grpc.ssl_target_name_override", sys.argv[5])])
    else:
        channel = grpc.insecure_channel(target)
    stub = health_pb2_grpc.HealthStub(channel)
    out = {}
    for service in sys.argv[6:]:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            out[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as err:
            out[service] = err.code().name
    print(json.dumps(out), flush=True)
""")


def probe(cluster: Cluster, cert: str | None = None) -> dict[str, str]:
    """The health of "", each state's name and the two services, from a real client."""
    argv = [sys.executable, "-c", PROBE, *target(cluster, cert), CONDUCTOR_NAME,
            "", *NAMES, health.AUDIENCE, health.PLAYER_LINK]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def state_of(statuses: dict[str, str]) -> list[str]:
    """The states whose health name answers SERVING: exactly one, always."""
    return [name.rsplit("/", 1)[1] for name in NAMES if statuses[name] == "SERVING"]


def header(cluster: Cluster) -> str:
    """The first line of listplayers."""
    shown = cluster.cli("listplayers")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.splitlines()[0]


def events(cluster: Cluster, name: str) -> list[dict[str, object]]:
    lines = cluster.log_text("conductor").splitlines()
    return [event for line in lines if line.startswith("{") and (event := json.loads(line))["event"] == name]


def moves(cluster: Cluster) -> list[tuple[object, object]]:
    return [(event["previous"], event["state"]) for event in events(cluster, "conductor_state")]


def task_state(cluster: Cluster) -> str:
    [task] = queue_rows(cluster, "tasks")
    return str(task["state"])


def spool_step(cluster: Cluster, player: str) -> str:
    [entry] = read_rows(cluster.player_dir(player) / "spool" / "spool.db", "spool")
    return str(entry["step"])


@contextmanager
def queue_locked(cluster: Cluster) -> Iterator[object]:
    """Hold the queue's write lock: every commit of the conductor waits until released
    (on PostgreSQL, the lock on the tasks table every result's commit needs)."""
    dsn = store_dsn(cluster)
    if dsn is not None:
        with psycopg.connect(dsn) as pg:  # one transaction, rolled back at the end
            pg.execute("LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE")
            yield pg
            pg.rollback()
        return
    conn = sqlite3.connect(cluster.state_dir / "queue.db", isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def result_held(make_cluster: MakeCluster, tmp_path: Path, drain_timeout: float) -> Cluster:
    """A cluster whose conductor has read a result it cannot commit yet: the caller holds
    the queue's lock (queue_locked) around this and what follows."""
    cluster = make_cluster(["p1.test"], conductor_settings={"drain_timeout": drain_timeout})
    go = tmp_path / "go"
    cluster.add_score("gate", f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.05; done\necho done\n',
                      "interface env\ntimeout 120\n")
    code, _, err = submit(cluster, "gate", "p1.test")
    assert code == 0, err
    cluster.wait_for(lambda: task_state(cluster) == "running", "the task running")
    return cluster


def hold_the_result(cluster: Cluster, tmp_path: Path) -> None:
    """With the queue locked: let the score end, and wait until the conductor has tried
    (and failed) to commit its result, so the handler is in flight."""
    (tmp_path / "go").touch()
    cluster.wait_for(lambda: any(event.get("what") == "result" for event in events(cluster, "store_write_failed")),
                     "the conductor holding the result", timeout=30)


def drained(cluster: Cluster) -> dict[str, object]:
    [event] = events(cluster, "conductor_drained")
    return event


# ---- the pure rules ----------------------------------------------------------------------

def test_the_conductor_only_moves_forward_and_draining_is_the_end() -> None:
    machine = StateMachine()
    assert machine.current is ConductorState.STARTING
    with pytest.raises(IllegalMove, match="from starting to starting"):
        machine.move(ConductorState.STARTING, "again")
    assert machine.move(ConductorState.RECOVERING, "players away") is ConductorState.STARTING
    with pytest.raises(IllegalMove):
        machine.move(ConductorState.STARTING, "back")
    machine.move(ConductorState.SERVING, "all back")
    machine.move(ConductorState.DRAINING, "SIGTERM received")
    for state in ConductorState:
        with pytest.raises(IllegalMove):
            machine.move(state, "after draining")
    assert MOVES[ConductorState.STARTING] >= {ConductorState.SERVING, ConductorState.DRAINING}  # recovering skipped
    assert [state for state in ConductorState if state.serves] == [ConductorState.RECOVERING, ConductorState.SERVING]


def test_recovery_waits_only_for_players_of_the_players_file_until_each_is_reconciled() -> None:
    recovery = Recovery(["p1", "p2", "p2", "gone"], roster=["p1", "p2", "p3"])
    assert recovery.awaited == {"p1", "p2"} and not recovery.done
    assert recovery.reconciled("p3") is False  # held nothing: not awaited
    assert recovery.reconciled("p1") is False
    assert recovery.reconciled("p1") is False  # a second session changes nothing
    assert recovery.removed(["p2"]) is True and recovery.done  # can never come back
    assert recovery.reconciled("p2") is False
    assert Recovery([], roster=["p1"]).done


def test_while_draining_only_calls_that_would_change_the_queue_and_new_sessions_are_refused(
        tmp_path: Path) -> None:
    gate = Gate(lambda: frozenset(), lambda: parse_policy([], {}, {}, tmp_path / "c.toml"), Revocation(None, b""),
                None, AuditLog(tmp_path / "audit.log"))
    audience = audience_pb2.DESCRIPTOR.services_by_name["Audience"]
    every = [method.name for method in audience.methods]
    assert QUEUE_CHANGES <= set(every)
    assert all(gate.closed_for("orchestra.v1.Audience", f"/orchestra.v1.Audience/{m}") is None for m in every)
    gate.stopping = True
    refused = {m for m in every if gate.closed_for("orchestra.v1.Audience", f"/orchestra.v1.Audience/{m}")}
    assert refused == QUEUE_CHANGES
    assert {"GetJob", "WaitJob", "WatchJob", "ListPlayers", "ListJobs"}.isdisjoint(refused)
    assert gate.closed_for("orchestra.v1.PlayerLink", "/orchestra.v1.PlayerLink/Session") == (
        grpc.StatusCode.UNAVAILABLE, "conductor is shutting down")
    assert gate.closed_for(health.HEALTH_SERVICE, f"/{health.HEALTH_SERVICE}/Check") is None


def test_listplayers_shows_the_state_first_and_nothing_for_an_older_conductor(
        capsys: pytest.CaptureFixture[str]) -> None:
    reply = audience_pb2.PlayerList(conductor_cert_not_after=time.time() + 86400 * 100,
                                    players=[audience_pb2.PlayerInfo(name="p1.test", connected=True)])
    client = SimpleNamespace(players=lambda: reply)
    assert listplayers.show(client, False) == 0  # type: ignore[arg-type]
    older = capsys.readouterr().out.splitlines()
    assert older[0].startswith("conductor certificate expires ")
    reply.conductor_state = "recovering"
    assert listplayers.show(client, False) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == ["conductor: recovering", *older]
    assert listplayers.show(client, True) == 0  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["conductor_state"] == "recovering"
    reply.conductor_state = ""
    assert listplayers.show(client, True) == 0  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["conductor_state"] is None


# ---- real daemons ------------------------------------------------------------------------

def test_a_conductor_with_nothing_in_flight_goes_straight_to_serving_everywhere(make_cluster: MakeCluster) -> None:
    metrics_port = free_port()
    cluster = make_cluster(["p1.test"], conductor_settings={"metrics_listen": f"127.0.0.1:{metrics_port}"})
    # On PostgreSQL it takes the lease first (at once: no other conductor holds it).
    leading = [("starting", "standby"), ("standby", "starting")] if store_dsn(cluster) else []
    assert moves(cluster) == [*leading, ("starting", "serving")]
    event = events(cluster, "conductor_state")[-1]
    assert event["reason"] == "no player holds tasks in flight"
    for cert in (None, "p1.test"):  # the local socket, and a certificate of the CA over mTLS
        statuses = probe(cluster, cert)
        assert statuses[""] == statuses[health.AUDIENCE] == statuses[health.PLAYER_LINK] == "SERVING"
        assert state_of(statuses) == ["serving"], statuses
    assert header(cluster) == "conductor: serving"
    assert json.loads(cluster.cli("listplayers", "--json").stdout)["conductor_state"] == "serving"
    text = scrape(metrics_port)
    lint(text)
    found = samples(text)
    assert {state: value(found, "orchestra_conductor_state", state=state) for state in STATES} == {
        "starting": 0, "standby": 0, "recovering": 0, "serving": 1, "draining": 0}
    assert cluster.conductor().stop() == 0
    assert moves(cluster) == [*leading, ("starting", "serving"), ("serving", "draining")]
    assert drained(cluster)["outcome"] == "done" and drained(cluster)["handlers"] == 0


def test_after_a_kill_9_the_conductor_recovers_until_the_player_holding_a_task_is_back(
        make_cluster: MakeCluster) -> None:
    metrics_port = free_port()
    cluster = make_cluster(["p1.test", "p2.test"], conductor_settings={
        "reconnect_grace": 120, "metrics_listen": f"127.0.0.1:{metrics_port}"})
    code, out, err = submit(cluster, "sleep", "seconds=3", "p1.test")
    assert code == 0, err
    cluster.wait_for(lambda: task_state(cluster) == "running", "the task running")
    away = cluster.player("p1.test")
    away.send_signal(signal.SIGSTOP)  # it cannot come back until SIGCONT
    cluster.conductor().stop(signal.SIGKILL)
    cluster.start_conductor()
    assert moves(cluster)[-1] == ("starting", "recovering")
    assert events(cluster, "conductor_state")[-1]["awaited"] == 1  # p2.test held nothing
    statuses = probe(cluster)
    assert statuses[""] == "SERVING" and state_of(statuses) == ["recovering"], statuses
    assert header(cluster) == "conductor: recovering"
    found = samples(scrape(metrics_port))
    assert [state for state in STATES if value(found, "orchestra_conductor_state", state=state) == 1] == ["recovering"]
    watch = [sys.executable, "-c", CLIENT, "watch", *target(cluster, None),
             health.STATE_NAMES[ConductorState.RECOVERING], CONDUCTOR_NAME]
    watcher = subprocess.Popen(watch, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline()) == {"status": "SERVING"}
        # Dispatch works meanwhile, for the players that are back.
        assert submit(cluster, "hello", "p2.test", "--wait", "--timeout", "30")[0] == 0
        assert moves(cluster)[-1] == ("starting", "recovering")
        away.send_signal(signal.SIGCONT)
        cluster.wait_for(lambda: moves(cluster)[-1] == ("recovering", "serving"), "serving", timeout=30)
        assert json.loads(watcher.stdout.readline()) == {"status": "NOT_SERVING"}
    finally:
        away.send_signal(signal.SIGCONT)
        watcher.kill()
        watcher.wait()
    assert events(cluster, "conductor_state")[-1]["reason"] == "every player holding tasks in flight is back"
    assert state_of(probe(cluster)) == ["serving"] and header(cluster) == "conductor: serving"
    done = cluster.cli("getstatus", "--wait", "--timeout", "60", out.strip())
    assert done.returncode == 0, done.stdout + done.stderr


def test_with_the_player_kept_away_the_conductor_serves_once_reconnect_grace_has_passed(
        make_cluster: MakeCluster) -> None:
    grace = 3
    cluster = make_cluster(["p1.test"], conductor_settings={"reconnect_grace": grace})
    code, _, err = submit(cluster, "sleep", "seconds=5", "p1.test")
    assert code == 0, err
    cluster.wait_for(lambda: task_state(cluster) == "running", "the task running")
    cluster.player("p1.test").stop()  # a player stop leaves its score running
    cluster.conductor().stop(signal.SIGKILL)
    cluster.start_conductor()
    assert moves(cluster)[-1] == ("starting", "recovering")
    assert state_of(probe(cluster)) == ["recovering"]
    cluster.wait_for(lambda: moves(cluster)[-1] == ("recovering", "serving"), "serving", timeout=grace + 10)
    event = events(cluster, "conductor_state")[-1]
    assert event["reason"] == f"reconnect_grace of {grace} s passed"
    assert event["still_away"] == 1 and event["players"] == ["p1.test"]
    assert grace - 0.5 <= float(event["previous_seconds"]) < grace + 2  # type: ignore[arg-type]
    assert state_of(probe(cluster)) == ["serving"] and header(cluster) == "conductor: serving"


def test_sigterm_while_a_result_is_being_committed_drains_it_to_the_player_before_stopping(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = result_held(make_cluster, tmp_path, drain_timeout=60)
    conductor = cluster.conductor()
    with queue_locked(cluster):
        hold_the_result(cluster, tmp_path)
        conductor.send_signal(signal.SIGTERM)
        cluster.wait_for(lambda: moves(cluster)[-1] == ("serving", "draining"), "draining")
        assert events(cluster, "conductor_state")[-1]["handlers"] == 1
        statuses = probe(cluster)
        assert statuses[""] == statuses[health.AUDIENCE] == statuses[health.PLAYER_LINK] == "NOT_SERVING"
        assert state_of(statuses) == ["draining"], statuses
        code, _, err = submit(cluster, "hello", "p1.test")
        assert code == ExitCode.UNREACHABLE and "conductor is shutting down" in err, err
        assert header(cluster) == "conductor: draining"  # reads still work
        assert conductor.running and task_state(cluster) == "running"
    # The lock is gone: the result is committed, acknowledged, and only then does it stop.
    assert conductor.popen is not None and conductor.popen.wait(30) == 0
    event = drained(cluster)
    assert event["outcome"] == "done" and event["handlers"] == 1 and event["left"] == 0
    assert task_state(cluster) == "ok"
    cluster.wait_for(lambda: spool_step(cluster, "p1.test") == "acked", "the player's spool acknowledged")
    assert [e["state"] for e in events(cluster, "task_result")] == ["ok"]


def test_drain_timeout_bounds_the_wait_and_what_was_left_is_sent_again_after_the_restart(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    timeout = 2
    cluster = result_held(make_cluster, tmp_path, drain_timeout=timeout)
    conductor = cluster.conductor()
    with queue_locked(cluster):
        hold_the_result(cluster, tmp_path)
        conductor.send_signal(signal.SIGTERM)
        assert conductor.popen is not None and conductor.popen.wait(30) == 0
        event = drained(cluster)
        assert event["outcome"] == "timed_out" and event["handlers"] == 1 and event["left"] == 1
        assert timeout <= float(event["seconds"]) < timeout + 1  # type: ignore[arg-type]
        assert task_state(cluster) == "running" and spool_step(cluster, "p1.test") == "finished"
    cluster.start_conductor()  # the player sends its result again
    cluster.wait_for(lambda: task_state(cluster) == "ok", "the result committed after the restart")
    cluster.wait_for(lambda: spool_step(cluster, "p1.test") == "acked", "the player's spool acknowledged")


def test_a_second_sigterm_cuts_the_drain_short(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = result_held(make_cluster, tmp_path, drain_timeout=120)
    conductor = cluster.conductor()
    with queue_locked(cluster):
        hold_the_result(cluster, tmp_path)
        conductor.send_signal(signal.SIGTERM)
        cluster.wait_for(lambda: moves(cluster)[-1] == ("serving", "draining"), "draining")
        conductor.send_signal(signal.SIGTERM)
        assert conductor.popen is not None and conductor.popen.wait(30) == 0
        event = drained(cluster)
        assert event["outcome"] == "cut_short" and event["left"] == 1 and float(event["seconds"]) < 10  # type: ignore[arg-type]
    assert events(cluster, "drain_cut_short")[0]["signal"] == "SIGTERM"
