"""Lifecycle events on a real SQLite queue, with sessions held in memory (no gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from conductor.audit import AuditLog
from conductor.lifecycle import Lifecycle
from conductor.sessions import PlayerSession, Sessions
from conductor.states import TaskState
from conductor.store import NewJob, QueuedTask, ScoreRules, Store, open_store
from tests.conftest import OpenQueue
from orchestra.joboptions import Rollout
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2

Scenario = Callable[[Lifecycle], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, roster: frozenset[str] = frozenset({"p1", "p2"}),
        opener: Callable[[Path], Store] = open_store) -> None:
    async def main() -> None:
        store = opener(tmp_path)
        audit = AuditLog(tmp_path / "audit.log")
        try:
            await scenario(Lifecycle(store, Sessions(roster, {}), audit))
        finally:
            store.close()
            audit.close()
    asyncio.run(main())


def connect(lifecycle: Lifecycle, name: str, slots: int = 2) -> PlayerSession:
    session = PlayerSession(name=name, identity=PeerIdentity(name, 1, 9e9), max_concurrent=slots, ready=True)
    lifecycle.sessions.attach(session)
    return session


def sent(session: PlayerSession) -> list[str]:
    """The kinds of message queued for the player, in order (drains the outbox)."""
    kinds = []
    while not session.outbox.empty():
        kinds.append(session.outbox.get_nowait().WhichOneof("body"))
    return kinds


async def queued_one(lifecycle: Lifecycle, scope: str = "all", targets: tuple[str, ...] = ("p1",)) -> QueuedTask:
    job_id, _ = await lifecycle.submit(NewJob("hello", scope, targets, {}, (), "me", 2e9))
    return next(t for t in await lifecycle.store.queued() if t.task_id.startswith(job_id))


def test_a_replaced_session_is_never_handed_work(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(lifecycle: Lifecycle) -> None:
        old = connect(lifecycle, "p1")
        task = await queued_one(lifecycle)
        new = connect(lifecycle, "p1")  # the player reconnected while dispatch was deciding
        assert old.closed.is_set()
        assert not await lifecycle.dispatch(old, task)
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.QUEUED and not old.in_flight
        assert await lifecycle.dispatch(new, task)
        assert new.in_flight == {task.task_id} and sent(new) == ["run"]

    run(tmp_path, scenario, opener=open_queue)


def test_a_player_outside_the_players_file_or_full_is_not_handed_work(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(lifecycle: Lifecycle) -> None:
        stranger, full = connect(lifecycle, "p9"), connect(lifecycle, "p2", slots=1)
        full.in_flight.add("other.0")
        task = await queued_one(lifecycle, "one", ("p2", "p9"))
        assert not await lifecycle.dispatch(stranger, task)
        assert not await lifecycle.dispatch(full, task)
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.QUEUED

    run(tmp_path, scenario, roster=frozenset({"p2"}), opener=open_queue)


def test_cancel_of_a_running_task_waits_for_the_player_and_repeats_the_kill_order(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(lifecycle: Lifecycle) -> None:
        session = connect(lifecycle, "p1")
        task = await queued_one(lifecycle)
        await lifecycle.dispatch(session, task)
        await lifecycle.grant(session, player_pb2.StartRequest(task_id=task.task_id, attempt=1))
        assert sent(session) == ["run", "grant"]
        job = await lifecycle.store.get_job(task.task_id.split(".")[0])
        assert job is not None
        await lifecycle.cancel(job, "me")
        await lifecycle.cancel(job, "me")
        assert sent(session) == ["cancel", "cancel"]
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.CANCELLING
        assert session.in_flight == {task.task_id}  # its slot is busy until the kill is confirmed
        # The player asks to start it again (the grant was lost in a reconnect): only the
        # kill order is repeated, and the slot stays busy.
        await lifecycle.grant(session, player_pb2.StartRequest(task_id=task.task_id, attempt=1))
        assert sent(session) == ["cancel"] and session.in_flight == {task.task_id}
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.CANCELLING
        # A stale start request for another attempt is not answered with a kill order.
        await lifecycle.grant(session, player_pb2.StartRequest(task_id=task.task_id, attempt=7))
        assert sent(session) == ["cancel"] and not session.in_flight
        session.in_flight.add(task.task_id)
        confirmed = player_pb2.TaskResult(task_id=task.task_id, attempt=1, ending=player_pb2.ENDING_CANCELLED)
        confirmed.outcome.reason = "killed"
        await lifecycle.result(session, confirmed)
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.CANCELLED
        assert sent(session) == ["ack"] and not session.in_flight
        assert stored.outcome.started_at is not None and stored.outcome.reason == "killed"

    run(tmp_path, scenario, opener=open_queue)


def test_a_dispatched_one_of_task_fails_over_when_its_player_goes(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(lifecycle: Lifecycle) -> None:
        session = connect(lifecycle, "p1")
        task = await queued_one(lifecycle, "one", ("p1", "p2"))
        await lifecycle.dispatch(session, task)
        session.close(grpc.StatusCode.UNAVAILABLE, "gone")
        lifecycle.sessions.detach(session)
        await lifecycle.player_gone("p1")
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.QUEUED and stored.player is None
        assert lifecycle.dispatch_wanted.is_set()

    run(tmp_path, scenario, opener=open_queue)


def test_a_player_holding_an_earlier_attempt_gets_the_retry_sent_again(tmp_path: Path, open_queue: OpenQueue) -> None:
    """The ack of attempt 1 and the RunTask of its retry were both lost: the Hello lists
    attempt 1 only, so attempt 2 (dispatched, never received) goes back to the queue."""
    async def scenario(lifecycle: Lifecycle) -> None:
        session = connect(lifecycle, "p1")
        job_id, _ = await lifecycle.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9,
                                                  rules=ScoreRules(retries=1)))
        task = lifecycle.index.queued[f"{job_id}.0"]
        await lifecycle.dispatch(session, task)
        await lifecycle.grant(session, player_pb2.StartRequest(task_id=task.task_id, attempt=1))
        failed = player_pb2.TaskResult(task_id=task.task_id, attempt=1, ending=player_pb2.ENDING_FAILED)
        await lifecycle.result(session, failed)  # committed, and queued again as attempt 2
        assert await lifecycle.dispatch(session, lifecycle.index.queued[task.task_id])
        session.close(grpc.StatusCode.UNAVAILABLE, "gone")
        lifecycle.sessions.detach(session)
        back = connect(lifecycle, "p1")
        back.ready = False
        await lifecycle.player_connected(back, player_pb2.Hello(spool=[player_pb2.SpoolEntry(
            task_id=task.task_id, attempt=1, state=player_pb2.SPOOL_STATE_FINISHED)]))
        await lifecycle.result(back, failed)  # the earlier attempt's result again: stale, acknowledged
        stored = await lifecycle.store.task(task.task_id)
        assert stored is not None and stored.state == TaskState.QUEUED and stored.attempt == 2
        assert task.task_id in lifecycle.index.queued and back.in_flight == set()
    run(tmp_path, scenario, frozenset({"p1"}), opener=open_queue)


def test_a_task_sent_back_after_its_rollout_stopped_is_skipped(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(lifecycle: Lifecycle) -> None:
        p1, p2 = connect(lifecycle, "p1"), connect(lifecycle, "p2")
        job_id, _ = await lifecycle.submit(NewJob("hello", "all", ("p1", "p2", "p3"), {}, (), "me", 2e9,
                                                  rollout=Rollout(batch=2, max_failures=1)))
        for session, number in ((p1, 0), (p2, 1)):
            assert await lifecycle.dispatch(session, lifecycle.index.queued[f"{job_id}.{number}"])
        await lifecycle.grant(p1, player_pb2.StartRequest(task_id=f"{job_id}.0", attempt=1))
        await lifecycle.result(p1, player_pb2.TaskResult(task_id=f"{job_id}.0", attempt=1,
                                                         ending=player_pb2.ENDING_FAILED))
        p2.close(grpc.StatusCode.UNAVAILABLE, "gone")  # p2 comes back without the task
        lifecycle.sessions.detach(p2)
        back = connect(lifecycle, "p2")
        back.ready = False
        await lifecycle.player_connected(back, player_pb2.Hello())
        job = await lifecycle.store.get_job(job_id)
        assert job is not None and [t.state for t in job.tasks] == [TaskState.FAILED, TaskState.SKIPPED,
                                                                     TaskState.SKIPPED]
        assert job.finished_at is not None and lifecycle.index.queued == {}
    run(tmp_path, scenario, frozenset({"p1", "p2", "p3"}), opener=open_queue)
