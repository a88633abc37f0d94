"""The task state machine, and the database refusing any transition it does not allow."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conductor import states
from conductor.states import TERMINAL, TaskState, job_status
from conductor.store import NewJob, open_store


def test_terminal_states_have_no_way_out_but_a_retry() -> None:
    for state in TERMINAL:
        for new in TaskState:
            if new == TaskState.QUEUED and state in states.RETRYABLE:
                states.check(state, new)  # a new attempt of the same task
                continue
            with pytest.raises(states.IllegalTransition):
                states.check(state, new)


def test_what_may_be_retried_and_what_retries_itself() -> None:
    assert states.RETRYABLE == {TaskState.FAILED, TaskState.TIMED_OUT, TaskState.LOST, TaskState.EXPIRED,
                                TaskState.SKIPPED, TaskState.REFUSED}
    # Never lost: it may have run, or may still be running, where nobody can see.
    assert states.AUTO_RETRIED == {TaskState.FAILED, TaskState.TIMED_OUT}
    assert TaskState.SKIPPED in states.ALLOWED[TaskState.QUEUED]
    assert TaskState.SKIPPED not in states.ALLOWED[TaskState.DISPATCHED]


def test_started_tasks_are_never_moved_back() -> None:
    assert TaskState.QUEUED not in states.ALLOWED[TaskState.RUNNING]
    assert TaskState.DISPATCHED not in states.ALLOWED[TaskState.RUNNING]
    assert TaskState.REMOVED not in states.ALLOWED[TaskState.RUNNING]


def test_a_cancel_request_is_a_state_of_its_own() -> None:
    assert TaskState.CANCELLING in states.ALLOWED[TaskState.RUNNING]
    assert states.ALLOWED[TaskState.CANCELLING] == {TaskState.OK, TaskState.FAILED, TaskState.TIMED_OUT,
                                                    TaskState.CANCELLED, TaskState.LOST}
    assert TaskState.CANCELLING.started and not TaskState.CANCELLING.terminal
    assert TaskState.CANCELLING not in states.ALLOWED[TaskState.DISPATCHED]
    assert job_status([TaskState.OK, TaskState.CANCELLING]) == "pending"


def test_job_status_is_the_original_four() -> None:
    ok, failed, queued = TaskState.OK, TaskState.FAILED, TaskState.QUEUED
    assert job_status([ok, ok]) == "ok"
    assert job_status([ok, failed]) == "partial_fail"
    assert job_status([failed, TaskState.LOST]) == "failed"
    assert job_status([ok, queued]) == "pending"


def test_database_trigger_refuses_illegal_transitions(tmp_path: Path) -> None:
    async def scenario() -> str:
        store = open_store(tmp_path)
        job_id = (await store.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9))).job_id
        change = await store.transition(f"{job_id}.0", TaskState.OK, detail="")  # queued -> ok: illegal
        assert not change.applied
        claimed = await store.claim(f"{job_id}.0", "p1")
        assert claimed is not None and claimed.attempt == 1
        assert (await store.transition(f"{job_id}.0", TaskState.RUNNING, detail="")).applied
        done = await store.transition(f"{job_id}.0", TaskState.OK, detail="", expect_attempt=1)
        assert done.applied and done.job_finished
        store.close()
        return job_id

    job_id = asyncio.run(scenario())
    conn = sqlite3.connect(tmp_path / "queue.db")
    with pytest.raises(sqlite3.IntegrityError, match="illegal task state transition"):
        conn.execute("UPDATE tasks SET state = 'queued' WHERE id = ?", (f"{job_id}.0",))
    with pytest.raises(sqlite3.IntegrityError, match="tasks start queued"):
        conn.execute("INSERT INTO tasks (id, job_id, state, updated_at) VALUES ('x', ?, 'ok', 0)",
                     (job_id,))
    history = [tuple(r) for r in conn.execute(
        "SELECT from_state, to_state FROM task_events ORDER BY id")]
    assert history == [("queued", "dispatched"), ("dispatched", "running"), ("running", "ok")]
