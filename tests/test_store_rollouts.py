"""The queue's side of rollouts, retries, deletion and drains, on a real SQLite file:
each is one commit, and the state guard trigger still refuses anything else."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from conductor.states import TaskState
from conductor.store import NewJob, ScoreRules, Store, open_store
from tests.conftest import OpenQueue
from orchestra.joboptions import Rollout
from orchestra.outcome import TaskOutcome

S = TaskState


def run(tmp_path: Path, scenario: Callable[[Store], Awaitable[None]],
        opener: Callable[[Path], Store] = open_store) -> None:
    async def main() -> None:
        store = opener(tmp_path)
        try:
            await scenario(store)
        finally:
            store.close()
    asyncio.run(main())


async def start(store: Store, task_id: str, player: str) -> int:
    claimed = await store.claim(task_id, player)
    assert claimed is not None
    assert (await store.transition(task_id, S.RUNNING, detail="granted", expect_attempt=claimed.attempt)).applied
    return claimed.attempt


def job(targets: int, **options: object) -> NewJob:
    return NewJob("deploy", "all", tuple(f"p{n}" for n in range(targets)), {}, (), "user:me", time.time() + 600,
                  **options)  # type: ignore[arg-type]


def test_a_failed_canary_stops_the_rollout_and_skips_the_rest_in_the_same_commit(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(4, rollout=Rollout(canary=1, batch=2)))).job_id
        assert (await store.get_job(job_id)).phase == "canary"  # type: ignore[union-attr]
        attempt = await start(store, f"{job_id}.0", "p0")
        change = await store.transition(f"{job_id}.0", S.FAILED, detail="exit 1", expect_attempt=attempt,
                                        outcome=TaskOutcome(exit_code=1))
        assert change.phase == "stopped" and change.skipped == tuple(f"{job_id}.{n}" for n in (1, 2, 3))
        assert change.job_finished
        record = await store.get_job(job_id)
        assert record is not None
        assert record.phase == "stopped" and record.phase_reason == "canary task 0 ended failed"
        assert [t.state for t in record.tasks] == [S.FAILED, S.SKIPPED, S.SKIPPED, S.SKIPPED]
        assert record.tasks[1].outcome.reason == "rollout stopped: canary task 0 ended failed"
        assert record.status == "failed"
    run(tmp_path, scenario, opener=open_queue)


def test_a_rollout_that_finishes_is_done_and_keeps_its_counters(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(2, rollout=Rollout(canary=1, max_failures=2)))).job_id
        for n, ending in ((0, S.OK), (1, S.FAILED)):
            attempt = await start(store, f"{job_id}.{n}", f"p{n}")
            change = await store.transition(f"{job_id}.{n}", ending, detail="", expect_attempt=attempt)
            assert change.phase == ("rolling" if n == 0 else None)
        record = await store.get_job(job_id)
        assert record is not None and record.phase == "done" and record.failures == 1
        assert record.status == "partial_fail"
    run(tmp_path, scenario, opener=open_queue)


def test_the_scores_retries_queue_a_failed_task_again_as_a_new_attempt(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(1, rules=ScoreRules(retries=1, retry_delay=30)))).job_id
        task_id = f"{job_id}.0"
        attempt = await start(store, task_id, "p0")
        change = await store.transition(task_id, S.FAILED, detail="exit 3", expect_attempt=attempt,
                                        outcome=TaskOutcome(exit_code=3, stdout=b"first\n"))
        assert change.state == S.QUEUED and change.ended == S.FAILED and not change.job_finished
        assert change.queued is not None and change.queued.not_before is not None
        assert change.queued.not_before > time.time() + 25  # retry_delay
        record = (await store.get_job(job_id)).tasks[0]  # type: ignore[union-attr]
        assert record.state == S.QUEUED and record.retries == 1 and record.outcome.exit_code is None
        assert [(a.attempt, a.state, a.outcome.exit_code, a.outcome.stdout) for a in record.history] == \
            [(1, S.FAILED, 3, b"first\n")]
        second = await start(store, task_id, "p0")
        assert second == 2
        final = await store.transition(task_id, S.FAILED, detail="exit 3", expect_attempt=second)
        assert final.state == S.FAILED and final.job_finished  # retries used up
    run(tmp_path, scenario, opener=open_queue)


def test_lost_and_cancelled_tasks_are_never_retried_by_themselves(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(2, rules=ScoreRules(retries=3)))).job_id
        attempt = await start(store, f"{job_id}.0", "p0")
        lost = await store.transition(f"{job_id}.0", S.LOST, detail="spool lost", expect_attempt=attempt)
        assert lost.state == S.LOST and lost.queued is None
        attempt = await start(store, f"{job_id}.1", "p1")
        await store.transition(f"{job_id}.1", S.CANCELLING, detail="cancel", expect_attempt=attempt)
        ended = await store.transition(f"{job_id}.1", S.FAILED, detail="finished first", expect_attempt=attempt)
        assert ended.state == S.FAILED and ended.queued is None  # it was being cancelled
    run(tmp_path, scenario, opener=open_queue)


def test_retryjob_reopens_a_finished_job_and_keeps_each_attempt(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(3, rollout=Rollout(batch=1, max_failures=1)))).job_id
        attempt = await start(store, f"{job_id}.0", "p0")
        stop = await store.transition(f"{job_id}.0", S.FAILED, detail="", expect_attempt=attempt)
        assert stop.phase == "stopped" and stop.job_finished
        nothing = await store.retry(job_id, {S.LOST})
        assert nothing.refused == f"job {job_id} has no tasks that ended lost"
        retried = await store.retry(job_id, {S.FAILED, S.SKIPPED})
        assert not retried.refused and [t.task_id for t in retried.queued] == [f"{job_id}.{n}" for n in range(3)]
        assert retried.phase == "rolling"
        record = await store.get_job(job_id)
        assert record is not None and record.finished_at is None and record.status == "pending"
        assert record.failures == 0 and [t.state for t in record.tasks] == [S.QUEUED] * 3
        assert [(a.attempt, a.state) for a in record.tasks[0].history] == [(1, S.FAILED)]
        assert [(a.attempt, a.state) for a in record.tasks[1].history] == [(0, S.SKIPPED)]
        again = await start(store, f"{job_id}.0", "p0")
        assert again == 2  # ORC_ATTEMPT goes on counting
        assert (await store.delete_job(job_id)) is False  # not finished: kept
    run(tmp_path, scenario, opener=open_queue)


def test_a_finished_job_with_secrets_cannot_be_retried(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        secret = NewJob("deploy", "all", ("p0",), {"TOKEN": "s3cret"}, ("TOKEN",), "user:me", time.time() + 60)
        job_id = (await store.submit(secret)).job_id
        attempt = await start(store, f"{job_id}.0", "p0")
        await store.transition(f"{job_id}.0", S.FAILED, detail="", expect_attempt=attempt)
        refused = await store.retry(job_id, {S.FAILED})
        assert "secret parameters were forgotten" in refused.refused
    run(tmp_path, scenario, opener=open_queue)


def test_deleting_a_finished_job_forgets_it_and_its_history(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(1, labels={"change": "CHG-1"}, name="n"))).job_id
        attempt = await start(store, f"{job_id}.0", "p0")
        await store.transition(f"{job_id}.0", S.OK, detail="", expect_attempt=attempt)
        assert await store.delete_job(job_id) is True
        assert await store.get_job(job_id) is None
        assert await store.delete_job(job_id) is None
    run(tmp_path, scenario)
    conn = sqlite3.connect(tmp_path / "queue.db")
    for table in ("jobs", "tasks", "task_events", "job_targets", "job_labels", "task_attempts"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


def test_drains_are_durable(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        drains = await store.set_drains(["web1", "@db"], True, "user:ops", "patching")
        assert [(d.name, d.by, d.reason) for d in drains] == [("@db", "user:ops", "patching"),
                                                              ("web1", "user:ops", "patching")]
        assert [d.name for d in await store.set_drains(["@db"], False, "user:ops")] == ["web1"]
    run(tmp_path, scenario, opener=open_queue)
    async def reopened(store: Store) -> None:
        assert [d.name for d in await store.drains()] == ["web1"]
    run(tmp_path, reopened, opener=open_queue)


def test_a_retry_that_leaves_a_failed_canary_behind_is_refused(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(job(4, rollout=Rollout(canary=1, batch=2)))).job_id
        attempt = await start(store, f"{job_id}.0", "p0")
        await store.transition(f"{job_id}.0", S.FAILED, detail="", expect_attempt=attempt)
        refused = await store.retry(job_id, {S.SKIPPED})
        assert refused.refused == (f"canary task 0 of job {job_id} ended failed and would not be retried:"
                                   " retry it too (retryjob --failed)")
        retried = await store.retry(job_id, {S.FAILED, S.SKIPPED})
        assert retried.phase == "canary" and len(retried.queued) == 4
    run(tmp_path, scenario, opener=open_queue)


def test_every_ending_is_kept_even_one_no_dispatch_followed(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario(store: Store) -> None:
        job_id = (await store.submit(NewJob("deploy", "all", ("p0",), {}, (), "user:me", time.time() + 1.0,
                                            rules=ScoreRules(retries=1)))).job_id
        task_id = f"{job_id}.0"
        attempt = await start(store, task_id, "p0")
        retried = await store.transition(task_id, S.FAILED, detail="", expect_attempt=attempt,
                                         outcome=TaskOutcome(exit_code=2, stdout=b"first\n"))
        assert retried.state == S.QUEUED
        await store.expire_due(time.time() + 5)  # the retry expires before anyone sends it
        assert (await store.retry(job_id, {S.EXPIRED})).queued
        record = (await store.get_job(job_id)).tasks[0]  # type: ignore[union-attr]
        assert [(h.attempt, h.state, h.outcome.exit_code, h.outcome.stdout) for h in record.history] == [
            (1, S.FAILED, 2, b"first\n"), (1, S.EXPIRED, None, b"")]
    run(tmp_path, scenario, opener=open_queue)
