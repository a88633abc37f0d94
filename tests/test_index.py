"""The dispatch index always says what the store says: after random sequences of every
lifecycle event, and after a restart (the index rebuilt from the SQLite file)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from conductor.audit import AuditLog
from conductor.dispatch import Dispatcher
from conductor.index import DispatchIndex
from conductor.lifecycle import Lifecycle
from conductor.sessions import PlayerSession, Sessions
from conductor.states import IN_FLIGHT, TaskState
from conductor.store import JobFilter, NewJob, QueuedTask, ScoreRules
from tests.conftest import OpenQueue
from orchestra.errors import ValidationError
from orchestra.joboptions import Rollout
from orchestra.outcome import TaskOutcome
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2

PLAYERS = ("p1", "p2", "p3", "p4")
ENDINGS = (player_pb2.ENDING_OK, player_pb2.ENDING_FAILED, player_pb2.ENDING_REFUSED,
           player_pb2.ENDING_CANCELLED, player_pb2.ENDING_TIMED_OUT)


def connect(lifecycle: Lifecycle, name: str, rng: random.Random) -> PlayerSession:
    session = PlayerSession(name=name, identity=PeerIdentity(name, 1, 9e9),
                            max_concurrent=rng.randint(1, 3), ready=True)
    session.finished.set()  # no gRPC handler here: a removal need not wait for one
    lifecycle.sessions.attach(session)
    return session


async def in_flight(lifecycle: Lifecycle, states: frozenset[TaskState]) -> list[tuple[str, str, int]]:
    found = []
    for name in PLAYERS:
        found += [(t.task_id, name, t.attempt) for t in await lifecycle.store.tasks_of(name, states)]
    return sorted(found)


async def step(lifecycle: Lifecycle, rng: random.Random, clock: list[float]) -> str:
    """One random event, as the services and loops would raise it."""
    sessions = lifecycle.sessions
    kind = rng.choice(["submit", "submit", "dispatch", "dispatch", "grant", "result", "result",
                       "gone", "connect", "cancel", "expire", "remove", "retry", "release"])
    if kind == "submit":
        targets = tuple(rng.sample(PLAYERS, rng.randint(1, len(PLAYERS))))
        scope = rng.choice(["all", "one"]) if len(targets) > 1 else "all"
        deadline = clock[0] + rng.choice([5.0, 50.0, 1e6])
        plan = Rollout()
        if scope == "all" and len(targets) > 1 and rng.random() < 0.5:
            plan = Rollout(rng.choice([0, 1]), rng.choice([0, 1, 2]), rng.choice([None, 1, 2]))
        rules = ScoreRules(rng.choice([0, 0, 1, 2]), rng.choice([0.0, 0.0, 0.001, 3600.0]), rng.choice([0, 0, 2]),
                           rng.random() < 0.2)
        await lifecycle.submit(NewJob(rng.choice(["hello", "deploy"]), scope, targets, {}, (), "me", deadline,
                                      priority=rng.choice([-10, 0, 0, 10]), rollout=plan, rules=rules))
    elif kind == "dispatch":
        await Dispatcher(lifecycle).dispatch_once()
    elif kind == "grant":
        waiting = await in_flight(lifecycle, frozenset({TaskState.DISPATCHED}))
        if waiting:
            task_id, name, attempt = rng.choice(waiting)
            session = sessions.get(name)
            if session is not None:
                await lifecycle.grant(session, player_pb2.StartRequest(task_id=task_id, attempt=attempt))
    elif kind == "result":
        held = await in_flight(lifecycle, IN_FLIGHT)
        if held:
            task_id, name, attempt = rng.choice(held)
            session = sessions.get(name)
            if session is not None:
                outcome = TaskOutcome(exit_code=0, reason="done").to_wire()
                await lifecycle.result(session, player_pb2.TaskResult(
                    task_id=task_id, attempt=attempt, ending=rng.choice(ENDINGS), outcome=outcome))
    elif kind == "gone":
        live = [s for s in sessions]
        if live:
            session = rng.choice(live)
            sessions.detach(session)
            await lifecycle.player_gone(session.name)
    elif kind == "connect":
        name = rng.choice(PLAYERS)
        spool = []  # the player lost its spool, or kept some of it
        for task_id, owner, attempt in await in_flight(lifecycle, IN_FLIGHT):
            if owner == name and rng.random() < 0.5:
                spool.append(player_pb2.SpoolEntry(task_id=task_id, attempt=attempt,
                                                   state=player_pb2.SPOOL_STATE_ACCEPTED))
        session = connect(lifecycle, name, rng)
        session.ready = False
        await lifecycle.player_connected(session, player_pb2.Hello(spool=spool))
    elif kind == "cancel":
        queued = [t.task_id for t in lifecycle.index]
        if queued:
            job = await lifecycle.store.get_job(rng.choice(queued).rpartition(".")[0])
            assert job is not None
            await lifecycle.cancel(job, "me")
    elif kind == "expire":
        clock[0] += rng.choice([1.0, 10.0, 100.0])
        await lifecycle.expire(clock[0])
    elif kind == "retry":
        known = await lifecycle.store.list_jobs(JobFilter(), 20)
        if known:
            job = await lifecycle.store.get_job(rng.choice(known).job_id)
            assert job is not None
            try:
                await lifecycle.retry(job, frozenset({TaskState.FAILED, TaskState.TIMED_OUT, TaskState.SKIPPED,
                                                      TaskState.EXPIRED, TaskState.LOST}), "me")
            except ValidationError:
                pass  # nothing to retry
    elif kind == "release":
        await lifecycle.release_retries(time.time())
    elif kind == "remove" and rng.random() < 0.3:
        gone = frozenset(rng.sample(PLAYERS, 1))
        await lifecycle.players_removed(sessions.set_roster(frozenset(PLAYERS) - gone))
        sessions.set_roster(frozenset(PLAYERS))
    return kind


def comparable(lifecycle: Lifecycle) -> dict[str, object]:
    """What must be the same live and after a restart: every queued task (in the index or
    held back by its rollout), the order of each player's queue and of the one-of tasks
    (of jobs without a rollout: which tasks a window holds may differ after a restart,
    never how many), deadlines, and the tasks counted against the scores' limits."""
    snapshot = lifecycle.index.snapshot()
    rollouts = lifecycle.rollouts
    queued: dict[str, QueuedTask] = {**snapshot["queued"], **rollouts.held()}  # type: ignore[dict-item]
    for job_id in rollouts.jobs():
        batch = rollouts.batch(job_id)
        assert not batch or rollouts.released(job_id) <= batch, f"window of {job_id} overflows"
    free = {task_id for task_id in queued if not rollouts.gated(task_id.rpartition(".")[0])}
    all_of: dict[str, list[str]] = snapshot["all_of"]  # type: ignore[assignment]
    return {**snapshot, "queued": sorted(queued.values(), key=lambda t: t.order),
            "all_of": {p: [t for t in tids if t in free] for p, tids in all_of.items() if set(tids) & free},
            "one_of": [t for t in snapshot["one_of"] if t in free],  # type: ignore[attr-defined]
            "limits": lifecycle.limits.snapshot()}


@pytest.mark.parametrize("seed", range(12))
def test_the_index_equals_the_store_after_random_events_and_a_restart(tmp_path: Path, seed: int, open_queue: OpenQueue) -> None:
    rng = random.Random(seed)

    async def main() -> dict[str, object]:
        store = open_queue(tmp_path)
        audit = AuditLog(tmp_path / "audit.log")
        lifecycle = await Lifecycle.restore(store, Sessions(frozenset(PLAYERS), {}), audit)
        clock = [time.time()]
        for name in PLAYERS[:2]:
            connect(lifecycle, name, rng)
        kinds = []
        try:
            for _ in range(120):
                kinds.append(await step(lifecycle, rng, clock))
                rebuilt = await Lifecycle.restore(store, Sessions(frozenset(PLAYERS), {}), audit)
                now = time.time()  # as the timer does, on both: the retries due by now are placed
                await lifecycle.release_retries(now)
                await rebuilt.release_retries(now)
                assert comparable(lifecycle) == comparable(rebuilt), f"after {kinds}"
            assert {"submit", "dispatch", "result"} <= set(kinds)
            await asyncio.sleep(0.01)  # every short retry delay over, as it will be after the restart
            await lifecycle.release_retries(time.time())
            return comparable(lifecycle)
        finally:
            store.close()
            audit.close()

    before = asyncio.run(main())

    async def restarted() -> dict[str, object]:
        store = open_queue(tmp_path)
        audit = AuditLog(tmp_path / "audit.log")
        try:
            return comparable(await Lifecycle.restore(store, Sessions(frozenset(PLAYERS), {}), audit))
        finally:
            store.close()
            audit.close()
    assert asyncio.run(restarted()) == before


def test_a_task_that_left_the_queue_while_a_pass_held_it_is_not_put_back() -> None:
    index = DispatchIndex()
    kept, gone = (QueuedTask(f"j.{n}", "all", "p1", (), (), 2e9, 1.0) for n in range(2))
    index.add(kept)
    index.add(gone)
    taken = index.take("p1", 2, now=1.0)
    assert [t.task_id for t in taken] == ["j.0", "j.1"] and not index.queued
    index.discard("j.1")  # cancelled while the pass was claiming
    for task in taken:  # the claim failed: whatever is still queued goes back
        index.put_back(task)
    assert list(index.queued) == ["j.0"]


def test_jobs_whose_expiry_failed_are_due_again() -> None:
    index = DispatchIndex()
    index.job_opened("early", 10.0)
    index.job_opened("late", 20.0)
    assert index.due(15.0) == ["early"] and index.due(15.0) == []
    index.reopen(["early"])  # the expiry's commit failed
    assert index.next_deadline() == 10.0 and index.due(15.0) == ["early"]
    index.job_finished("early")
    index.reopen(["early"])  # finished meanwhile: not due any more
    assert index.due(30.0) == ["late"]
