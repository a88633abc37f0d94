"""The queue's verbs for workflows and schedules, on a real SQLite file: a step's job and a
schedule's run commit once, with the step's or schedule's move, or not at all."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conductor.store import (
    NewJob, NewStep, NewWorkflow, ScheduleFire, ScheduleRecord, StepSettled, open_store,
)
from orchestra.wire import audience_pb2
from tests.conftest import OpenQueue

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def job(**changes: Any) -> NewJob:
    return dataclasses.replace(NewJob(score="hello", scope="all", targets=("p1",), params={}, secret_keys=(),
                                      requester="user:a", deadline_at=time.time() + 60), **changes)


def flow(**changes: Any) -> NewWorkflow:
    request = audience_pb2.SubmitRequest(score="hello", targets=["p1"], params={"TOKEN": "s3cret"}).SerializeToString()
    return dataclasses.replace(NewWorkflow(
        name="f", labels={"team": "a"}, params={"V": "1"}, requester="user:a", owner={"kind": "user", "name": "a"},
        steps=(NewStep("one", (), "stop", request), NewStep("two", ("one",), "continue", request))), **changes)


def test_a_step_starts_once_with_its_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path)
        submitted = await store.submit_workflow(flow())
        workflow_id = submitted.workflow_id
        assert workflow_id.startswith("w") and not submitted.existing
        first = await store.submit(job(workflow_id=workflow_id, step="one"))
        again = await store.submit(job(workflow_id=workflow_id, step="one"))
        assert first.job_id and not first.stale and again.stale and again.job_id == ""
        record = await store.get_workflow(workflow_id)
        assert record is not None and record.owner == {"kind": "user", "name": "a"}
        one, two = record.steps
        assert (one.state, one.job_id, one.job_status) == ("running", first.job_id, "pending")
        assert (two.state, two.job_id, two.after, two.on_failure) == ("waiting", None, ("one",), "continue")
        stored = await store.get_job(first.job_id)
        assert stored is not None and (stored.workflow_id, stored.step) == (workflow_id, "one")
        assert await store.open_workflows() == [workflow_id]
        store.close()

    run(scenario())
    conn = sqlite3.connect(tmp_path / "queue.db")
    with pytest.raises(sqlite3.IntegrityError, match="starts once"):
        conn.execute("UPDATE workflow_steps SET job_id = 'other' WHERE name = 'one'")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


def test_a_finished_workflow_forgets_the_values_it_never_used(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> None:
        store = open_queue(tmp_path)
        workflow_id = (await store.submit_workflow(flow())).workflow_id
        await store.submit(job(workflow_id=workflow_id, step="one"))
        assert await store.settle_workflow(workflow_id, [StepSettled("two", "skipped", "stopped", 5.0)],
                                           ("failed", "step one failed"))
        assert not await store.settle_workflow(workflow_id, [], ("ok", ""))  # finished already
        record = await store.get_workflow(workflow_id)
        assert record is not None and (record.status, record.reason, record.params) == ("failed", "step one failed", {})
        two = record.steps[1]
        assert two.state == "skipped" and dict(audience_pb2.SubmitRequest.FromString(two.request).params) == {
            "TOKEN": ""}
        assert await store.open_workflows() == []
        store.close()

    run(scenario())


def test_a_workflow_key_finds_its_workflow_and_refuses_another_request(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> None:
        store = open_queue(tmp_path)
        first = await store.submit_workflow(flow(idempotency_key="k", digest="d1"))
        same = await store.submit_workflow(flow(idempotency_key="k", digest="d1"))
        other = await store.submit_workflow(flow(idempotency_key="k", digest="d2"))
        elsewhere = await store.submit_workflow(flow(idempotency_key="k", digest="d2", requester="user:b"))
        assert same.existing and same.workflow_id == first.workflow_id and not same.conflict
        assert other.conflict and not elsewhere.existing
        store.close()

    run(scenario())


def schedule(**changes: Any) -> ScheduleRecord:
    return dataclasses.replace(ScheduleRecord("nightly", {"kind": "user", "name": "a"}, "0 3 * * *", "skip", False,
                                              False, "job", b"", 1.0, 100.0), **changes)


def test_a_schedule_run_commits_once_with_its_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path)
        assert await store.add_schedule(schedule())
        assert not await store.add_schedule(schedule())  # the name is taken
        fires = ScheduleFire("nightly", 100.0, 200.0)
        ran = await store.submit(job(fires=fires))
        twice = await store.submit(job(fires=fires))
        assert ran.job_id and twice.stale
        (stored,) = await store.schedules()
        assert (stored.next_at, stored.last_id, stored.last_error) == (200.0, ran.job_id, "")
        assert not await store.skip_run(fires, "late")  # no longer due at 100
        assert await store.skip_run(ScheduleFire("nightly", 200.0, 300.0), "skipped: still running")
        paused = await store.set_schedule("nightly", paused=True)
        assert paused is not None and paused.paused and paused.next_at is None
        assert (await store.submit(job(fires=ScheduleFire("nightly", 300.0, 400.0)))).stale
        resumed = await store.set_schedule("nightly", paused=False, next_at=500.0)
        assert resumed is not None and not resumed.paused and resumed.next_at == 500.0
        flow_run = await store.submit_workflow(flow(fires=ScheduleFire("nightly", 500.0, 600.0), schedule="nightly"))
        assert flow_run.workflow_id and (await store.schedules())[0].last_id == flow_run.workflow_id
        assert (await store.set_schedule("nightly", remove=True)) is not None
        assert await store.schedules() == [] and await store.set_schedule("nightly", remove=True) is None
        store.close()

    run(scenario())
    conn = sqlite3.connect(tmp_path / "queue.db")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


def test_retention_keeps_a_running_workflows_jobs_and_purges_finished_workflows(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> None:
        store = open_queue(tmp_path)
        workflow_id = (await store.submit_workflow(flow())).workflow_id
        first = await store.submit(job(workflow_id=workflow_id, step="one"))
        await store.db.write(lambda c: c.execute(  # type: ignore[attr-defined]
            "UPDATE jobs SET finished_at = 1, open_tasks = 0, status = 'ok' WHERE id = ?", (first.job_id,)))
        assert await store.purge_finished(time.time()) == 0  # its workflow still runs
        await store.settle_workflow(workflow_id, [StepSettled("one", "ok", "", 1.0),
                                                  StepSettled("two", "skipped", "", 1.0)], ("failed", ""))
        assert await store.purge_finished(time.time() + 1) == 2  # the job, then the workflow
        assert await store.get_workflow(workflow_id) is None and await store.get_job(first.job_id) is None
        store.close()

    run(scenario())
