"""Players and the audience with several conductors listed: they find the one that leads.

A standby here is a small real gRPC server on loopback, with the conductor's certificate
and client certificates required, that answers as a conductor that does not lead: every
PlayerLink and Audience call refused with UNAVAILABLE, "not the leader", and the leader's
address in the trailing metadata; and a health service whose ``orchestra.v1.PlayerLink``
status the test sets. The leader is a real conductor, with real players and CLIs.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from audience import client as client_module
from audience.client import Client, auto_key
from devtools.devcluster import CONDUCTOR_NAME, Cluster, free_port, write_toml
from orchestra.config import load_audience
from orchestra.leader_hint import PLAYER_LINK, refusal_details, refusal_metadata
from orchestra.params import check_idempotency_key
from player.session import DIAL_LIMIT, _next_index, backoff_delay
from tests.conftest import MakeCluster, queue_rows

pytestmark = pytest.mark.backends("sqlite")  # the clients' behaviour; one store is enough

SESSION = "/orchestra.v1.PlayerLink/Session"
AUDIENCE_PREFIX = "/orchestra.v1.Audience/"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
AUDIENCE_POLICY = {"audience": {"ops.test": {"scores": ["*"], "targets": ["*"]}}}


class Standby(grpc.GenericRpcHandler):
    """A conductor that does not lead, as the convention has it. Once ``lead()`` is called
    it says SERVING and holds a player's session open (it never welcomes it)."""

    def __init__(self, cluster: Cluster, leader: str | None) -> None:
        self.leader = leader
        self.calls: list[str] = []
        self.leading = False
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.health = health.HealthServicer()
        self.health.set(PLAYER_LINK, NOT_SERVING)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[self])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        credentials = grpc.ssl_server_credentials(
            [(cluster.ssl.key(CONDUCTOR_NAME).read_bytes(), cluster.ssl.cert(CONDUCTOR_NAME).read_bytes())],
            root_certificates=cluster.ssl.ca_cert.read_bytes(), require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lead(self) -> None:
        with self.lock:
            self.leading = True
        self.health.set(PLAYER_LINK, SERVING)

    def seen(self, method: str) -> int:
        with self.lock:
            return sum(1 for call in self.calls if call == method)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return None
        with self.lock:
            self.calls.append(method)
            leading = self.leading
        if leading and method == SESSION:
            return grpc.stream_stream_rpc_method_handler(self._hold)
        return grpc.stream_stream_rpc_method_handler(self._refuse)

    def _refuse(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        context.set_trailing_metadata(refusal_metadata(self.leader))
        context.abort(grpc.StatusCode.UNAVAILABLE, refusal_details(self.leader))
        return iter(())  # never reached: abort raises

    def _hold(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        while context.is_active() and not self.stopped.wait(0.05):
            pass
        return iter(())

    def stop(self) -> None:
        self.stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(0).wait(5)


@pytest.fixture
def standbys() -> Iterator[list[Standby]]:
    made: list[Standby] = []
    yield made
    for standby in made:
        standby.stop()


def standby(cluster: Cluster, made: list[Standby], leader: str | None) -> Standby:
    server = Standby(cluster, leader)
    made.append(server)
    return server


def real(cluster: Cluster) -> str:
    return f"127.0.0.1:{cluster.port}"


def unreachable() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: refused at once


def events(cluster: Cluster, proc: str, *names: str) -> list[dict[str, Any]]:
    return cluster.log_events(proc, *names)


def start_player(cluster: Cluster, conductors: list[str], backoff_initial: float = 0.1) -> None:
    cluster.add_player_config("p1.test", conductor=conductors, backoff_initial=backoff_initial)
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"], timeout=20)
    cluster.wait_for(lambda: events(cluster, "player-p1.test", "session_established"), "the player's welcome")


def audience_config(cluster: Cluster, conductors: list[str]) -> Path:
    """A remote audience.toml (mTLS, as ops.test) listing these conductors in this order."""
    return write_toml(cluster.root / "audience-several.toml", {
        "conductor": conductors, "conductor_name": CONDUCTOR_NAME,
    }, {"ca": str(cluster.ssl.ca_cert), "cert": str(cluster.ssl.cert("ops.test")),
        "key": str(cluster.ssl.key("ops.test"))})


# ---- pure pieces ---------------------------------------------------------------------------------

TARGETS = (("c1:1", "c1"), ("c2:1", "c2"), ("c3:1", "c3"))


def test_the_next_dial_goes_to_a_listed_leader_else_down_the_list() -> None:
    assert _next_index(TARGETS, 0, None) == 1 and _next_index(TARGETS, 2, None) == 0
    assert _next_index(TARGETS, 0, "c3:1") == 2 and _next_index(TARGETS, 0, "C3:1") == 2
    assert _next_index(TARGETS, 0, "elsewhere:1") == 1  # never an address taken from the network
    assert _next_index(TARGETS, 1, "c2:1") == 2  # a refusal naming itself: the next one


def test_the_backoff_grows_per_round_of_the_list() -> None:
    # The exponent serve() uses is failures // len(targets): with three conductors the
    # first round of refusals keeps the first ceiling.
    assert all(0.125 <= backoff_delay(0.5, 30, 3 // 3) <= 1.0 for _ in range(200))
    assert all(0.125 <= backoff_delay(0.5, 30, 2 // 3) <= 0.5 for _ in range(200))
    assert all(backoff_delay(0.5, 30, 40) <= 30 for _ in range(200))


def test_a_made_up_idempotency_key_is_a_valid_one() -> None:
    key = auto_key()
    assert key.startswith("auto-") and len(key) == 37 and check_idempotency_key(key) == key
    assert auto_key() != key


# ---- players -------------------------------------------------------------------------------------

def test_a_player_passes_over_an_unreachable_conductor_and_runs_a_job(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    dead = unreachable()
    start_player(cluster, [dead, real(cluster)])
    result = cluster.cli("submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert result.returncode == 0, result.stderr
    ended = events(cluster, "player-p1.test", "session_ended")
    assert ended and ended[0]["conductor"] == dead
    established = events(cluster, "player-p1.test", "session_established")
    assert [event["conductor"] for event in established] == [real(cluster)]


def test_a_player_refused_by_a_standby_goes_straight_to_the_leader_it_names(
        make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    refusing = standby(cluster, standbys, leader=real(cluster))
    passed_over = standby(cluster, standbys, leader=None)  # listed before the leader: never dialled
    start_player(cluster, [refusing.address, passed_over.address, real(cluster)])
    assert refusing.seen(SESSION) == 1 and passed_over.seen(SESSION) == 0
    happened = [(event["event"], event["conductor"]) for event in
                events(cluster, "player-p1.test", "session_ended", "session_established")]
    assert happened == [("session_ended", refusing.address), ("session_established", real(cluster))]
    refusal = events(cluster, "player-p1.test", "session_ended")[0]
    # (gRPC may report a refusal that crossed the Hello as INTERNAL, without its details:
    # then the health watch on the leader is what sends the player there.)
    if refusal["code"] == "UNAVAILABLE":
        assert refusal["leader"] == real(cluster) and refusal["details"].startswith("not the leader")
        assert refusal["level"] == "info"  # expected with several conductors: no warning
    result = cluster.cli("submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    assert result.returncode == 0, result.stderr


def test_a_player_leaves_its_session_for_a_conductor_that_starts_to_lead(
        make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    other = standby(cluster, standbys, leader=real(cluster))
    start_player(cluster, [real(cluster), other.address], backoff_initial=0.5)
    # The player watches the other conductor's health meanwhile; nothing changes while it stands by.
    time.sleep(1.5)
    assert other.seen(SESSION) == 0 and cluster.connected() == {"p1.test"}
    flipped = time.monotonic()
    other.lead()
    cluster.wait_for(lambda: other.seen(SESSION) >= 1, "the player dials the conductor that leads now",
                     timeout=10)
    took = time.monotonic() - flipped
    assert took < 3, f"took {took:.1f} s"  # a health report and a random delay of at most 0.5 s
    moved = [event for event in events(cluster, "player-p1.test", "session_ended") if event.get("leader")]
    assert moved and moved[0]["conductor"] == real(cluster) and moved[0]["leader"] == other.address
    scheduled = events(cluster, "player-p1.test", "reconnect_scheduled")
    assert scheduled and scheduled[0]["conductor"] == other.address and scheduled[0]["delay"] <= 0.5
    # This one never welcomes the player: after DIAL_PATIENCE the dial gives way to the
    # conductor that says SERVING too, and there the player stays.
    cluster.wait_for(lambda: len(events(cluster, "player-p1.test", "session_established")) >= 2,
                     "the player back with the real conductor", timeout=15)
    established = events(cluster, "player-p1.test", "session_established")
    assert [event["conductor"] for event in established] == [real(cluster)] * 2
    time.sleep(2.5)
    assert other.seen(SESSION) == 1 and cluster.connected() == {"p1.test"}


def test_a_dial_never_welcomed_is_given_up_for_the_next_conductor_when_no_watch_helps(
        make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    # A frozen conductor: the kernel accepts the connection, nothing ever answers the TLS
    # handshake (gRPC alone gives up after 20 s). The other listed one leads nothing, so
    # no watch says where to go: the player's own DIAL_LIMIT moves it on.
    cluster = make_cluster(["p1.test"], start=False)
    frozen = socket.socket()
    try:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)
        silent = f"127.0.0.1:{frozen.getsockname()[1]}"
        other = standby(cluster, standbys, leader=None)
        cluster.add_player_config("p1.test", conductor=[silent, other.address], backoff_initial=0.1)
        cluster.start_player("p1.test")
        cluster.wait_for(lambda: other.seen(SESSION) >= 1, "the player dialling the next conductor", timeout=15)
        [ended, *_] = events(cluster, "player-p1.test", "session_ended")
        assert (ended["conductor"], ended["seconds"]) == (silent, DIAL_LIMIT)
        assert ended["reason"] == "no welcome: trying the next conductor" and ended["level"] == "warning"
        assert not events(cluster, "player-p1.test", "dial_unwinding")  # the given-up dial ended at once
    finally:
        frozen.close()


def test_a_player_with_one_conductor_watches_nothing(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], log_level="debug")
    cluster.wait_for(lambda: events(cluster, "player-p1.test", "session_established"), "the player's welcome")
    assert events(cluster, "player-p1.test", "session_established")[0]["conductor"] == real(cluster)
    time.sleep(1)
    assert "leader_watch" not in cluster.log_text("player-p1.test")


def test_a_player_with_two_conductors_watches_the_other(make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    cluster = make_cluster(["p1.test"], start=False, log_level="debug")
    cluster.start_conductor()
    other = standby(cluster, standbys, leader=real(cluster))
    start_player(cluster, [real(cluster), other.address])
    cluster.wait_for(lambda: events(cluster, "player-p1.test", "leader_watch_report"), "a health report")
    [report] = events(cluster, "player-p1.test", "leader_watch_report")
    assert report["conductor"] == other.address and report["status"] == "NOT_SERVING"
    assert report["level"] == "debug"


# ---- the audience --------------------------------------------------------------------------------

def test_the_audience_finds_the_leader_behind_a_standby_and_keys_its_submission(
        make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings=AUDIENCE_POLICY)
    refusing = standby(cluster, standbys, leader=real(cluster))
    passed_over = standby(cluster, standbys, leader=None)
    config = audience_config(cluster, [refusing.address, passed_over.address, real(cluster)])
    submitted = cluster.cli("submitjob", "--json", "--wait", "--timeout", "30", "hello", "p1.test", config=config)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    assert refusing.seen(AUDIENCE_PREFIX + "Submit") == 1
    assert not [call for call in refusing.calls if call != AUDIENCE_PREFIX + "Submit"]  # then the leader only
    assert passed_over.calls == []  # the refusal named the leader: straight there
    status = cluster.cli("getstatus", "--wait", "--timeout", "30", job_id, config=config)
    assert status.returncode == 0, status.stderr
    assert refusing.seen(AUDIENCE_PREFIX + "GetJob") == 1
    [job] = [row for row in queue_rows(cluster, "jobs") if row["id"] == job_id]
    requester, key = json.loads(str(job["idempotency_key"]))
    assert requester == "cert:ops.test" and key.startswith("auto-") and check_idempotency_key(key) == key
    # A key the user gave is the one used.
    given = cluster.cli("submitjob", "--idempotency-key", "deploy-42", "hello", "p1.test", config=config)
    assert given.returncode == 0, given.stderr
    keys = [json.loads(str(row["idempotency_key"]))[1] for row in queue_rows(cluster, "jobs")]
    assert "deploy-42" in keys


def test_with_one_conductor_the_audience_makes_up_no_key(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings=AUDIENCE_POLICY)
    result = cluster.cli("submitjob", "hello", "p1.test", config=audience_config(cluster, [real(cluster)]))
    assert result.returncode == 0, result.stderr
    assert [row["idempotency_key"] for row in queue_rows(cluster, "jobs")] == [None]


def test_the_audience_gives_up_after_two_rounds_naming_what_it_tried(
        make_cluster: MakeCluster, standbys: list[Standby]) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], start=False)
    refusing = standby(cluster, standbys, leader=None)
    dead = unreachable()
    config = audience_config(cluster, [refusing.address, dead])
    started = time.monotonic()
    result = cluster.cli("listplayers", config=config)
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and refusing.address in lines[0] and dead in lines[0], result.stderr
    assert refusing.seen(AUDIENCE_PREFIX + "ListPlayers") == 2  # a round, a pause, one more round
    assert time.monotonic() - started < 15


def test_a_refusal_on_the_local_socket_says_who_leads(tmp_path: Path, standbys: list[Standby]) -> None:
    socket = tmp_path / "conductor.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    leader = "c1.example.com:2258"

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata(refusal_metadata(leader))
        context.abort(grpc.StatusCode.UNAVAILABLE, refusal_details(leader))
        return b""
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "orchestra.v1.Audience", {"GetJob": grpc.unary_unary_rpc_method_handler(refuse)})])
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        config = write_toml(tmp_path / "audience.toml", {"socket": str(socket)}, None)
        client = Client(load_audience(config, explicit=True))
        try:
            with pytest.raises(Exception) as caught:
                client.get("0" * 32)
        finally:
            client.close()
    finally:
        server.stop(0).wait(5)
    assert getattr(caught.value, "exit_code", None) == 4
    assert str(caught.value) == f"the conductor at {socket} is not the leader: the leader is {leader}"


def test_a_wait_is_asked_in_slices_and_moves_to_the_leader(
        make_cluster: MakeCluster, standbys: list[Standby], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings=AUDIENCE_POLICY)
    refusing = standby(cluster, standbys, leader=None)  # names no leader: the next one is tried
    config = audience_config(cluster, [refusing.address, real(cluster)])
    submitted = cluster.cli("submitjob", "sleep", "SECONDS=2", "p1.test", config=config)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    monkeypatch.setattr(client_module, "WAIT_SLICE", 0.5)
    client = Client(load_audience(config, explicit=True))
    asked: list[float] = []
    try:
        client.get(job_id)  # finds the leader: the wait then stays with it
        assert client.where == real(cluster)
        stub = client.stub

        class Spy:
            def __getattr__(self, name: str) -> Any:
                method = getattr(stub, name)
                if name not in ("WaitJob", "WatchJob"):
                    return method

                def wait(request: Any, timeout: float | None = None) -> Any:
                    asked.append(request.timeout_seconds)
                    assert timeout is not None and timeout <= request.timeout_seconds + 5
                    return method(request, timeout=timeout)
                return wait
        client.stub = Spy()  # type: ignore[assignment]
        job = client.wait(job_id, 30)
    finally:
        client.close()
    assert job.finished and job.status == "ok"
    assert len(asked) >= 3 and all(0 < seconds <= 0.5 for seconds in asked), asked


def test_a_follow_whose_conductor_freezes_moves_on_and_comes_back(
        make_cluster: MakeCluster, standbys: list[Standby], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings=AUDIENCE_POLICY)
    refusing = standby(cluster, standbys, leader=real(cluster))
    config = audience_config(cluster, [real(cluster), refusing.address])
    submitted = cluster.cli("submitjob", "sleep", "SECONDS=4", "p1.test", config=config)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    monkeypatch.setattr(client_module, "PROBE_SECONDS", 0.3)
    monkeypatch.setattr(client_module, "PROBE_TIMEOUT", 0.5)
    monkeypatch.setattr(client_module, "CONNECT_SECONDS", 0.5)
    follow = AUDIENCE_PREFIX + "FollowJob"
    conductor = cluster.conductor()

    def freeze_a_while() -> None:
        time.sleep(1)
        conductor.send_signal(signal.SIGSTOP)
        try:  # until the follow has left it for the standby
            deadline = time.monotonic() + 10
            while refusing.seen(follow) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            conductor.send_signal(signal.SIGCONT)
    freezer = threading.Thread(target=freeze_a_while)
    client = Client(load_audience(config, explicit=True))
    gaps: list[float] = []
    try:
        freezer.start()
        started = time.monotonic()
        job = client.follow(job_id, "", 30, on_event=lambda _: None, on_gap=lambda: gaps.append(time.monotonic()))
    finally:
        freezer.join()
        client.close()
    assert job.finished and job.status == "ok"
    assert refusing.seen(follow) >= 1 and gaps  # it moved on, and said the follow began again
    assert gaps[0] - started < 4  # the probe, not keepalive (50 s), noticed the freeze
