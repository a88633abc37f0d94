"""A real player process against a small fake conductor: new attempts of a task it already
holds (the conductor retried it), and an ``exclusive yes`` score on one host.

The fake speaks the player link over real mTLS (the dev PKI of a :class:`Cluster` that
starts no conductor) and does only what each test tells it, so the player's side of every
rule is seen message by message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.devcluster import CONDUCTOR_NAME, Cluster
from orchestra.outcome import TaskOutcome
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE
from orchestra.wire import player_pb2, player_pb2_grpc
from player.occupancy import ScoreOccupancy
from tests.conftest import MakeCluster, read_rows

PLAYER = "p1.test"
JOB = "0" * 32
WAIT = 20.0  # seconds: the most any expected message may take


def task(n: int) -> str:
    return f"{n:032x}.0"


class FakeConductor(player_pb2_grpc.PlayerLinkServicer):
    """Welcomes the player, sends a heartbeat when it has nothing else to send, and keeps
    every message the player sends (but heartbeats) for the test to take."""

    def __init__(self) -> None:
        self.hellos: asyncio.Queue[player_pb2.Hello] = asyncio.Queue()
        self.hello = player_pb2.Hello()  # the first one, once the player is connected
        self.outbox: asyncio.Queue[player_pb2.ConductorMessage] = asyncio.Queue()
        self.heard: list[player_pb2.PlayerMessage] = []
        self.arrived = asyncio.Event()

    async def Session(self, request_iterator: Any, context: Any) -> None:  # noqa: N802 (gRPC's name)
        first = await context.read()
        self.hellos.put_nowait(first.hello)
        await context.write(player_pb2.ConductorMessage(welcome=player_pb2.Welcome(
            protocol_version=first.hello.protocol_version, conductor=CONDUCTOR_NAME, heartbeat_seconds=1)))
        reader = asyncio.ensure_future(self._read(context))
        try:
            while not reader.done():
                try:
                    message = await asyncio.wait_for(self.outbox.get(), 0.3)
                except TimeoutError:
                    message = player_pb2.ConductorMessage(heartbeat=player_pb2.Heartbeat(sent_at=time.time()))
                await context.write(message)
        finally:
            reader.cancel()

    async def _read(self, context: Any) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("body") != "heartbeat":
                self.heard.append(message)
                self.arrived.set()

    def send(self, **body: Any) -> None:
        self.outbox.put_nowait(player_pb2.ConductorMessage(**body))

    def run(self, task_id: str, attempt: int, score: str) -> None:
        self.send(run=player_pb2.RunTask(task_id=task_id, attempt=attempt, job_id=JOB, score=score,
                                         requester="alice"))

    def grant(self, task_id: str, attempt: int) -> None:
        self.send(grant=player_pb2.StartGrant(task_id=task_id, attempt=attempt))

    def ack(self, task_id: str, attempt: int) -> None:
        self.send(ack=player_pb2.ResultAck(task_id=task_id, attempt=attempt))

    def cancel(self, task_id: str, attempt: int) -> None:
        self.send(cancel=player_pb2.CancelTask(task_id=task_id, attempt=attempt, reason="test"))

    async def take(self, match: Callable[[player_pb2.PlayerMessage], bool], what: str,
                   timeout: float = WAIT) -> player_pb2.PlayerMessage:
        """The first message heard (earlier or from now on) that matches; it is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.heard):
                if match(message):
                    return self.heard.pop(index)
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; heard {list(self.heard)}")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def start_request(self, task_id: str, attempt: int) -> None:
        await self.take(lambda m: m.WhichOneof("body") == "start_request"
                        and (m.start_request.task_id, m.start_request.attempt) == (task_id, attempt),
                        f"start request of {task_id} attempt {attempt}")

    async def result(self, task_id: str, attempt: int) -> player_pb2.TaskResult:
        message = await self.take(lambda m: m.WhichOneof("body") == "result"
                                  and (m.result.task_id, m.result.attempt) == (task_id, attempt),
                                  f"result of {task_id} attempt {attempt}")
        return message.result

    async def nothing_for(self, task_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        about = [m for m in self.heard if getattr(m, m.WhichOneof("body") or "").task_id == task_id]
        assert about == [], f"the player said something about {task_id}: {about}"


@pytest.fixture
def cluster(make_cluster: MakeCluster, tmp_path: Path) -> Cluster:
    """PKI and a player's config and scores; the conductor is the fake of each test."""
    made = make_cluster([PLAYER], start=False, player_settings={"max_concurrent": 4})
    flag_dir = tmp_path / "flags"
    flag_dir.mkdir()
    # Records each run (task and attempt), then succeeds from attempt 2 on.
    made.add_score("flaky", "#!/bin/sh\n"
                   'echo "attempt $ORC_ATTEMPT"\n'
                   f'echo "$ORC_TASK_ID $ORC_ATTEMPT" >> {flag_dir}/runs\n'
                   '[ "$ORC_ATTEMPT" -ge 2 ]\n',
                   "retries 2\nretry_delay 1.5\nconcurrency 3\n")
    # Says it started, then runs until the test releases its task (or for 60 s at most:
    # a score outlives its player, so one the test never released must end by itself).
    gate = ("#!/bin/sh\n"
            'echo "attempt $ORC_ATTEMPT started"\n'
            f'touch {flag_dir}/started.$ORC_TASK_ID.$ORC_ATTEMPT\n'
            "n=0\n"
            f'while [ ! -e {flag_dir}/release.$ORC_TASK_ID ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\n'
            "echo done\n")
    made.add_score("gate", gate, "timeout 60\n")
    made.add_score("solo", gate, "timeout 60\nexclusive yes\n")
    return made


def drive(cluster: Cluster, scenario: Callable[[FakeConductor], Awaitable[None]]) -> None:
    """Serve the fake conductor on the cluster's port, start the player, and run the
    scenario once its Hello has arrived (every test's player is stopped by the fixture)."""
    async def main() -> None:
        conductor = FakeConductor()
        server = grpc.aio.server(options=SERVER_KEEPALIVE + MESSAGE_LIMITS)
        player_pb2_grpc.add_PlayerLinkServicer_to_server(conductor, server)
        credentials = grpc.ssl_server_credentials(
            [(cluster.ssl.key(CONDUCTOR_NAME).read_bytes(), cluster.ssl.cert(CONDUCTOR_NAME).read_bytes())],
            root_certificates=cluster.ssl.ca_cert.read_bytes(), require_client_auth=True)
        server.add_secure_port(f"127.0.0.1:{cluster.port}", credentials)
        await server.start()
        try:
            cluster.start_player(PLAYER)
            conductor.hello = await asyncio.wait_for(conductor.hellos.get(), WAIT)
            await scenario(conductor)
        finally:
            cluster.player(PLAYER).stop()
            await server.stop(0)
    asyncio.run(main())


def flags(tmp_path: Path) -> Path:
    return tmp_path / "flags"


async def appears(path: Path, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        await asyncio.sleep(0.05)


def spool_row(cluster: Cluster, task_id: str) -> dict[str, object]:
    [row] = [r for r in read_rows(cluster.player_dir(PLAYER) / "spool" / "spool.db", "spool")
             if r["task_id"] == task_id]
    return row


def stdout_file(cluster: Cluster, task_id: str) -> Path:
    return cluster.player_dir(PLAYER) / "spool" / "tasks" / task_id / "stdout"


def test_a_retried_task_runs_its_new_attempt_with_fresh_output(cluster: Cluster, tmp_path: Path) -> None:
    drive(cluster, lambda fake: retried_task(cluster, fake, tmp_path))


async def retried_task(cluster: Cluster, fake: FakeConductor, tmp_path: Path) -> None:
    hello = fake.hello
    [flaky] = [score for score in hello.scores if score.name == "flaky"]
    assert (flaky.retries, flaky.retry_delay, flaky.concurrency, flaky.exclusive) == (2, 1.5, 3, False)
    assert [score.exclusive for score in hello.scores if score.name == "solo"] == [True]

    fake.run(task(1), 1, "flaky")
    await fake.start_request(task(1), 1)
    fake.grant(task(1), 1)
    first = await fake.result(task(1), 1)
    assert first.ending == player_pb2.ENDING_FAILED
    assert TaskOutcome.from_wire(first.outcome).stdout == b"attempt 1\n"

    # Attempt 1 is finished here and not yet acknowledged: attempt 2 replaces it.
    fake.run(task(1), 2, "flaky")
    await fake.start_request(task(1), 2)
    fake.grant(task(1), 2)
    second = await fake.result(task(1), 2)
    assert second.ending == player_pb2.ENDING_OK
    # The earlier attempt's output was cleared, not appended to.
    assert TaskOutcome.from_wire(second.outcome).stdout == b"attempt 2\n"

    # A late ack of attempt 1 touches neither attempt 2's record nor its files.
    fake.ack(task(1), 1)
    await asyncio.sleep(1.0)  # acks are committed within 0.5 s
    row = spool_row(cluster, task(1))
    assert (row["attempt"], row["step"]) == (2, "finished")
    assert stdout_file(cluster, task(1)).read_bytes() == b"attempt 2\n"

    # Attempt 2 again, or attempt 1 again: duplicates, never run; where it stands is re-sent.
    fake.run(task(1), 2, "flaky")
    fake.run(task(1), 1, "flaky")
    assert await fake.result(task(1), 2) == second
    assert await fake.result(task(1), 2) == second

    fake.ack(task(1), 2)
    deadline = time.monotonic() + WAIT
    while spool_row(cluster, task(1))["step"] != "acked":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert not stdout_file(cluster, task(1)).exists()
    # The tombstone still refuses attempt 2: it never runs a third time.
    fake.run(task(1), 2, "flaky")
    await fake.nothing_for(task(1), 1.0)
    assert (flags(tmp_path) / "runs").read_text() == f"{task(1)} 1\n{task(1)} 2\n"


def test_a_new_attempt_is_refused_while_the_earlier_one_runs_or_waits_here(
        cluster: Cluster, tmp_path: Path) -> None:
    drive(cluster, lambda fake: refused_attempt(cluster, fake, tmp_path))


async def refused_attempt(cluster: Cluster, fake: FakeConductor, tmp_path: Path) -> None:
    fake.run(task(2), 1, "gate")
    await fake.start_request(task(2), 1)
    fake.grant(task(2), 1)
    await appears(flags(tmp_path) / f"started.{task(2)}.1")

    fake.run(task(2), 2, "gate")
    refused = await fake.result(task(2), 2)
    assert refused.ending == player_pb2.ENDING_REFUSED
    outcome = TaskOutcome.from_wire(refused.outcome)
    assert outcome.reason == "attempt 1 of this task is still running on this host"
    assert outcome.started_at is None and outcome.finished_at is not None
    # The conductor acknowledges the refusal and may cancel attempt 2: neither reaches
    # attempt 1, which runs on with its record and output.
    fake.ack(task(2), 2)
    fake.cancel(task(2), 2)
    await asyncio.sleep(1.0)
    row = spool_row(cluster, task(2))
    assert (row["attempt"], row["step"]) == (1, "started")
    assert stdout_file(cluster, task(2)).read_bytes() == b"attempt 1 started\n"

    # Accepted, waiting for its grant: refused the same way.
    fake.run(task(3), 1, "gate")
    await fake.start_request(task(3), 1)
    fake.run(task(3), 2, "gate")
    waiting = await fake.result(task(3), 2)
    assert waiting.ending == player_pb2.ENDING_REFUSED
    assert TaskOutcome.from_wire(waiting.outcome).reason == \
        "attempt 1 of this task is still waiting to start here"
    # Once attempt 1 is over (cancelled before its grant), attempt 2 is taken.
    fake.cancel(task(3), 1)
    assert (await fake.result(task(3), 1)).ending == player_pb2.ENDING_CANCELLED
    fake.run(task(3), 2, "gate")
    await fake.start_request(task(3), 2)
    fake.grant(task(3), 2)
    await appears(flags(tmp_path) / f"started.{task(3)}.2")

    (flags(tmp_path) / f"release.{task(2)}").touch()
    (flags(tmp_path) / f"release.{task(3)}").touch()
    ended = await fake.result(task(2), 1)
    assert ended.ending == player_pb2.ENDING_OK
    assert TaskOutcome.from_wire(ended.outcome).stdout == b"attempt 1 started\ndone\n"
    assert (await fake.result(task(3), 2)).ending == player_pb2.ENDING_OK
    assert not (flags(tmp_path) / f"started.{task(2)}.2").exists()  # attempt 2 never ran


def test_an_exclusive_score_waits_for_its_running_task_before_asking_to_start(
        cluster: Cluster, tmp_path: Path) -> None:
    drive(cluster, lambda fake: exclusive_score(cluster, fake, tmp_path))


async def exclusive_score(cluster: Cluster, fake: FakeConductor, tmp_path: Path) -> None:
    fake.run(task(10), 1, "solo")
    await fake.start_request(task(10), 1)
    fake.grant(task(10), 1)
    await appears(flags(tmp_path) / f"started.{task(10)}.1")

    fake.run(task(11), 1, "solo")
    # Other scores are not held up by the wait, and it holds no slot.
    fake.run(task(12), 1, "gate")
    await fake.start_request(task(12), 1)
    await fake.nothing_for(task(11), 1.5)
    row = spool_row(cluster, task(11))
    assert row["step"] == "accepted"

    (flags(tmp_path) / f"release.{task(10)}").touch()
    assert (await fake.result(task(10), 1)).ending == player_pb2.ENDING_OK
    await fake.start_request(task(11), 1)
    fake.grant(task(11), 1)
    await appears(flags(tmp_path) / f"started.{task(11)}.1")
    (flags(tmp_path) / f"release.{task(11)}").touch()
    assert (await fake.result(task(11), 1)).ending == player_pb2.ENDING_OK


# ---- the bookkeeping behind exclusive ------------------------------------------------------


def test_occupancy_lets_one_waiter_in_at_a_time_in_the_order_they_came() -> None:
    asyncio.run(occupancy_turns())


async def occupancy_turns() -> None:
    occupancy = ScoreOccupancy()
    occupancy.occupy("solo")
    entered: list[str] = []

    async def wait(name: str) -> None:
        await occupancy.take_turn("solo")
        entered.append(name)
    waiters = [asyncio.ensure_future(wait(name)) for name in ("first", "second")]
    await asyncio.sleep(0.01)
    assert entered == [] and occupancy.busy("solo")
    await occupancy.take_turn("other")  # another score is not held up
    occupancy.vacate("solo")
    await asyncio.sleep(0.01)
    assert entered == ["first"]
    occupancy.vacate("solo")
    await asyncio.sleep(0.01)
    assert entered == ["first", "second"]
    occupancy.vacate("solo")
    assert not occupancy.busy("solo")
    await asyncio.gather(*waiters)
