"""The player's pieces with real processes and files: running a score, building results,
and the session's receive loop against a stand-in for the gRPC call."""

from __future__ import annotations

import asyncio
import stat
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from structlog.testing import capture_logs

from orchestra.config import PlayerConfig, TLSFiles
from orchestra.outcome import TaskOutcome
from orchestra.stream import send_with_heartbeats
from orchestra.wire import player_pb2
from player import runner
from player.scores import Score, ScoreConf
from player.session import Player, _heartbeat

T = TypeVar("T")
LIMITS = runner.Limits(default_timeout=30, kill_grace=0.5, output_tail_bytes=64,
                       max_output_bytes=1 << 20, response_max_bytes=1024)


def make_score(tmp_path: Path, body: str, timeout: float | None = None) -> Score:
    path = tmp_path / "scores" / "probe"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Score("probe", path, ScoreConf(timeout=timeout))


def execute(tmp_path: Path, score: Score, spawns: int = 1) -> player_pb2.TaskResult:
    ctx = runner.TaskContext("t1", 2, "job1", "p1.test", "alice", {"NAME": "world"})
    execution = runner.Execution(score, ctx, runner.TaskFiles(tmp_path / "tasks", "t1"), LIMITS)
    spawned: list[int] = []

    async def on_spawn(pid: int, start: int | None) -> None:
        spawned.append(pid)
    result = asyncio.run(execution.run(on_spawn))
    assert len(spawned) == spawns
    return result


def test_failed_score_reports_exit_code_output_and_response(tmp_path: Path) -> None:
    score = make_score(tmp_path, 'echo "hello $ORC_NAME"; echo oops >&2\n'
                                 'echo answer=42 > "$ORC_RESPONSE_FILE"; exit 3')
    result = execute(tmp_path, score)

    assert (result.task_id, result.attempt, result.ending) == ("t1", 2, player_pb2.ENDING_FAILED)
    outcome = TaskOutcome.from_wire(result.outcome)
    assert (outcome.exit_code, outcome.signal, outcome.reason) == (3, 0, "")
    assert outcome.stdout == b"hello world\n" and outcome.stderr == b"oops\n"
    assert outcome.response == {"answer": "42"}
    assert outcome.started_at is not None and outcome.finished_at is not None
    assert outcome.started_at <= outcome.finished_at


def test_score_exiting_zero_is_ok(tmp_path: Path) -> None:
    result = execute(tmp_path, make_score(tmp_path, "exit 0"))
    assert result.ending == player_pb2.ENDING_OK
    assert TaskOutcome.from_wire(result.outcome).exit_code == 0


def test_score_killed_by_a_signal_has_no_exit_code(tmp_path: Path) -> None:
    result = execute(tmp_path, make_score(tmp_path, "kill -KILL $$"))
    assert result.ending == player_pb2.ENDING_FAILED
    outcome = TaskOutcome.from_wire(result.outcome)
    assert (outcome.exit_code, outcome.signal) == (None, 9)


def test_score_over_its_timeout_is_stopped(tmp_path: Path) -> None:
    result = execute(tmp_path, make_score(tmp_path, "echo started; exec sleep 30", timeout=0.3))
    assert result.ending == player_pb2.ENDING_TIMED_OUT
    outcome = TaskOutcome.from_wire(result.outcome)
    assert outcome.reason == "timed out after 0.3 s" and outcome.signal == 15
    assert outcome.stdout == b"started\n"


def test_long_output_is_cut_to_its_tail(tmp_path: Path) -> None:
    result = execute(tmp_path, make_score(tmp_path, "seq 1 1000"))
    outcome = TaskOutcome.from_wire(result.outcome)
    assert outcome.stdout_truncated and outcome.stdout.endswith(b"999\n1000\n")


def test_score_that_cannot_start_fails_with_a_reason(tmp_path: Path) -> None:
    score = make_score(tmp_path, "exit 0")
    score.path.write_text("#!/nonexistent/interpreter\n")
    result = execute(tmp_path, score, spawns=0)
    assert result.ending == player_pb2.ENDING_FAILED
    outcome = TaskOutcome.from_wire(result.outcome)
    assert outcome.exit_code is None and outcome.reason.startswith("cannot start score")


# ---- the session ----------------------------------------------------------------------


def player_config(tmp_path: Path, liveness: float = 5.0) -> PlayerConfig:
    return PlayerConfig(
        path=tmp_path / "player.toml", conductor="localhost:1", conductor_name="conductor",
        scores_dir=tmp_path / "scores", spool_dir=tmp_path / "spool", max_concurrent=2,
        default_timeout=30, kill_grace=0.5, output_tail_bytes=64, max_output_bytes=1 << 20,
        response_max_bytes=1024, heartbeat_seconds=0.05, liveness_timeout=liveness,
        backoff_initial=0.1, backoff_max=1,
        tls=TLSFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"))


def with_player(tmp_path: Path, use: Callable[[Player], Awaitable[T]], liveness: float = 5.0) -> T:
    async def main() -> T:
        # Player only reads the material's certname; TLS is not used without a channel.
        material: Any = types.SimpleNamespace(certname="p1.test")
        player = Player(player_config(tmp_path, liveness), material)
        try:
            return await use(player)
        finally:
            await player.close()
    return asyncio.run(main())


class FakeCall:
    """The parts of a grpc.aio stream-stream call the player's receive loop uses."""

    def __init__(self, *messages: object, code: grpc.StatusCode = grpc.StatusCode.OK) -> None:
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        for message in messages:
            self.inbox.put_nowait(message)
        self.cancelled = False
        self.awaited = False  # asked how it ended
        self.status = code

    async def read(self) -> object:
        return await self.inbox.get()

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def code(self) -> grpc.StatusCode:
        self.awaited = True
        return self.status

    async def details(self) -> str:
        return "ended by the conductor"

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()


async def receive(player: Player, call: FakeCall, writer: asyncio.Future[None] | None = None) -> None:
    writer = writer if writer is not None else asyncio.get_running_loop().create_future()
    stopper = asyncio.ensure_future(player.stopping.wait())
    try:
        await player._receive(call, stopper, writer)  # type: ignore[arg-type]
    finally:
        stopper.cancel()


def welcome() -> player_pb2.ConductorMessage:
    return player_pb2.ConductorMessage(welcome=player_pb2.Welcome(conductor="conductor"))


def test_stream_end_awaits_the_call_for_its_status(tmp_path: Path) -> None:
    async def use(player: Player) -> None:
        call = FakeCall(welcome(), grpc.aio.EOF)
        await receive(player, call)
        assert call.awaited and not call.cancelled
        assert player.welcomed_at is not None
        refused = FakeCall(grpc.aio.EOF, code=grpc.StatusCode.PERMISSION_DENIED)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await receive(player, refused)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert raised.value.details() == "ended by the conductor"
    with_player(tmp_path, use)


def test_silent_conductor_is_logged_and_the_call_cancelled(tmp_path: Path) -> None:
    async def use(player: Player) -> list[dict[str, Any]]:
        call = FakeCall(welcome())
        with capture_logs() as logs:
            await receive(player, call)
        assert call.cancelled and not call.awaited
        return logs
    logs = with_player(tmp_path, use, liveness=0.2)
    assert {"event": "conductor_silent", "seconds": 0.2, "log_level": "warning"} in logs


def test_stopping_cancels_the_call(tmp_path: Path) -> None:
    async def use(player: Player) -> None:
        call = FakeCall()
        asyncio.get_running_loop().call_later(0.05, player.stopping.set)
        await receive(player, call)
        assert call.cancelled and not call.awaited
    with_player(tmp_path, use)


def test_failed_writer_ends_the_session_with_its_error(tmp_path: Path) -> None:
    async def use(player: Player) -> None:
        writer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.set_exception(ConnectionError("write failed"))
        with pytest.raises(ConnectionError, match="write failed"):
            await receive(player, FakeCall(), writer)
    with_player(tmp_path, use)


def test_result_is_recorded_logged_and_sent_once(tmp_path: Path) -> None:
    async def use(player: Player) -> list[player_pb2.PlayerMessage]:
        player.outbox = asyncio.Queue()
        run = player_pb2.RunTask(task_id="t1", attempt=1, job_id="job1", score="absent")
        entry = await player.spool.accept(run)
        assert entry is not None
        first = player._simple_result(entry, player_pb2.ENDING_CANCELLED, "operator said so")
        with capture_logs() as logs:
            await player._finish(first)
            await player._finish(player._simple_result(entry, player_pb2.ENDING_REFUSED, "late"))
        assert [log["event"] for log in logs] == ["task_finished"]
        assert logs[0]["ending"] == "ENDING_CANCELLED" and logs[0]["exit_code"] is None
        sent = []
        while not player.outbox.empty():
            sent.append(player.outbox.get_nowait())
        return sent
    [message] = with_player(tmp_path, use)
    assert message.result.ending == player_pb2.ENDING_CANCELLED
    outcome = TaskOutcome.from_wire(message.result.outcome)
    assert outcome.reason == "operator said so" and outcome.exit_code is None
    assert outcome.finished_at is not None and outcome.started_at is None


def test_heartbeats_flow_while_the_outbox_is_idle(tmp_path: Path) -> None:
    async def use(player: Player) -> list[str]:
        written: list[str] = []
        call = FakeCall()

        async def write(message: player_pb2.PlayerMessage) -> None:
            written.append(message.WhichOneof("body") or "")
            if len(written) == 2:
                call.inbox.put_nowait(grpc.aio.EOF)
        outbox: asyncio.Queue[player_pb2.PlayerMessage] = asyncio.Queue()
        writer = asyncio.ensure_future(
            send_with_heartbeats(outbox, write, player.config.heartbeat_seconds, _heartbeat))
        try:
            await receive(player, call, writer)
        finally:
            writer.cancel()
        return written
    assert with_player(tmp_path, use) == ["heartbeat", "heartbeat"]


# ---- the inventory on a live session -----------------------------------------------------


def install(scores_dir: Path, name: str, conf: str = "interface env\n") -> None:
    scores_dir.mkdir(exist_ok=True)
    script = scores_dir / name
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (scores_dir / f"{name}.conf").write_text(conf)


def test_inventory_is_sent_only_when_the_scores_directory_changed(tmp_path: Path) -> None:
    scores_dir = tmp_path / "scores"
    install(scores_dir, "first")

    async def use(player: Player) -> list[list[tuple[str, bool]]]:
        sent: list[list[tuple[str, bool]]] = []

        def drain() -> None:
            assert player.outbox is not None
            while not player.outbox.empty():
                message = player.outbox.get_nowait()
                sent.append([(s.name, s.valid) for s in message.inventory.scores])
        await player.refresh_inventory("scores_changed")  # no session: nothing to tell
        player.outbox = asyncio.Queue()
        hello, _ = await player.hello()
        assert [s.name for s in hello.hello.scores] == ["first"]
        await player.refresh_inventory("scores_changed")
        drain()
        assert sent == []  # the Hello said it all
        install(scores_dir, "second", "param X required\n")
        await player.refresh_inventory("scores_changed")
        drain()
        (scores_dir / "second.conf").write_text("bogus\n")
        await player.refresh_inventory("scores_changed")
        drain()
        (scores_dir / "first").chmod(0o644)  # no longer executable: a mode change alone
        await player.refresh_inventory("scores_changed")
        drain()
        await player.refresh_inventory("scores_changed")
        await player.refresh_inventory("reload", force=True)  # SIGHUP: sent even if unchanged
        drain()
        return sent
    assert with_player(tmp_path, use) == [
        [("first", True), ("second", True)],
        [("first", True), ("second", False)],
        [("first", False), ("second", False)],
        [("first", False), ("second", False)],
    ]


# ---- new attempts and exclusive scores in the session ------------------------------------


def sent(player: Player, kind: str) -> list[Any]:
    """What the player queued for the conductor so far, of one kind (consumed)."""
    assert player.outbox is not None
    messages = []
    while not player.outbox.empty():
        messages.append(player.outbox.get_nowait())
    return [getattr(m, kind) for m in messages if m.WhichOneof("body") == kind]


async def settle() -> None:
    for _ in range(20):  # let spawned handlers and spool writes run
        await asyncio.sleep(0.01)


def test_an_earlier_attempt_waiting_for_a_slot_never_runs_as_the_later_one(tmp_path: Path) -> None:
    install(tmp_path / "scores", "probe")

    async def use(player: Player) -> list[tuple[str, int]]:
        player.outbox = asyncio.Queue()
        for _ in range(player.config.max_concurrent):  # every slot taken
            await player.slots.acquire()
        task_id = "a" * 32 + ".0"
        await player._on_run(player_pb2.RunTask(task_id=task_id, attempt=1, job_id="b" * 32, score="probe"))
        await player._on_cancel(player_pb2.CancelTask(task_id=task_id, attempt=1, reason="gone"))
        [cancelled] = sent(player, "result")
        assert (cancelled.attempt, cancelled.ending) == (1, player_pb2.ENDING_CANCELLED)
        await player._on_run(player_pb2.RunTask(task_id=task_id, attempt=2, job_id="b" * 32, score="probe"))
        for _ in range(player.config.max_concurrent):
            player.slots.release()
        await settle()
        return [(r.task_id, r.attempt) for r in sent(player, "start_request")]
    assert with_player(tmp_path, use) == [("a" * 32 + ".0", 2)]


def test_a_restarted_player_starts_no_exclusive_task_while_one_it_left_running_runs(
        tmp_path: Path) -> None:
    install(tmp_path / "scores", "solo", "exclusive yes\n")

    async def use(player: Player) -> None:
        player.outbox = asyncio.Queue()
        orphan = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
        try:
            left, waiting = "1" * 32 + ".0", "2" * 32 + ".0"
            for task_id in (left, waiting):
                await player.spool.accept(player_pb2.RunTask(task_id=task_id, attempt=1,
                                                             job_id="b" * 32, score="solo"))
            await player.spool.mark_started(left, 1, kill_at=time.time() + 60)
            await player.spool.set_process(left, 1, orphan.pid, runner.proc_start_time(orphan.pid))

            await player.recover()
            await settle()
            assert sent(player, "start_request") == []
            orphan.kill()
            await orphan.wait()
            for _ in range(100):
                if not player.outbox.empty():
                    break
                await asyncio.sleep(0.05)
            await settle()
            messages = []
            while not player.outbox.empty():
                messages.append(player.outbox.get_nowait())
            kinds = [(m.WhichOneof("body"), getattr(m, m.WhichOneof("body")).task_id) for m in messages]
            assert kinds == [("result", left), ("start_request", waiting)]
            assert messages[0].result.ending == player_pb2.ENDING_LOST
        finally:
            if orphan.returncode is None:
                orphan.kill()
                await orphan.wait()
    with_player(tmp_path, use)
