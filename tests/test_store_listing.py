"""Listing jobs and reading a job's progress, on a real SQLite file: the filters, paging,
the indexes the queries walk, and the upgrade that adds a finished job's status."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conductor.states import TaskState
from conductor.store import JobFilter, NewJob, open_store, schema
from tests.conftest import OpenQueue
from conductor.store.sqlite import SqliteStore, list_sql
from orchestra.outcome import TaskOutcome

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def job(score: str, targets: tuple[str, ...], requester: str = "user:alice") -> NewJob:
    return NewJob(score, "all", targets, {}, (), requester, time.time() + 3600)


async def finish(store: SqliteStore, task_id: str, state: TaskState) -> None:
    """queued -> dispatched -> running -> state, as a player would take it."""
    claimed = await store.claim(task_id, task_id.split("#")[0] if "#" in task_id else "p")
    assert claimed is not None
    await store.transition(task_id, TaskState.RUNNING, detail="started")
    await store.transition(task_id, state, detail="ended",
                           outcome=TaskOutcome(exit_code=0 if state == TaskState.OK else 1))


async def fill(store: SqliteStore) -> dict[str, str]:
    """Four jobs, oldest first: ok (hello on p1), failed (fail on p2), partial (hello on
    p1 p2, one of each), pending (sleep on p3, bob's)."""
    ids = {}
    ids["ok"] = (await store.submit(job("hello", ("p1",)))).job_id
    await finish(store, f"{ids['ok']}.0", TaskState.OK)
    ids["failed"] = (await store.submit(job("fail", ("p2",)))).job_id
    await finish(store, f"{ids['failed']}.0", TaskState.FAILED)
    ids["partial"] = (await store.submit(job("hello", ("p1", "p2")))).job_id
    await finish(store, f"{ids['partial']}.0", TaskState.OK)
    await finish(store, f"{ids['partial']}.1", TaskState.FAILED)
    ids["pending"] = (await store.submit(job("sleep", ("p3",), "cert:bob.test"))).job_id
    return ids


def test_listing_filters_and_pages_newest_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path)
        assert isinstance(store, SqliteStore)
        ids = await fill(store)

        async def listed(**match: Any) -> list[str]:
            return [j.job_id for j in await store.list_jobs(JobFilter(**match), 100)]
        newest_first = [ids["pending"], ids["partial"], ids["failed"], ids["ok"]]
        assert await listed() == newest_first
        assert await listed(statuses=frozenset({"pending"})) == [ids["pending"]]
        assert await listed(statuses=frozenset({"ok", "partial_fail"})) == [ids["partial"], ids["ok"]]
        assert await listed(statuses=frozenset({"failed", "pending"})) == [ids["pending"], ids["failed"]]
        assert await listed(score="hello") == [ids["partial"], ids["ok"]]
        assert await listed(requesters=("cert:bob.test",)) == [ids["pending"]]
        assert await listed(targets=("p2",)) == [ids["partial"], ids["failed"]]
        assert await listed(targets=("p",)) == []  # a whole name, not a prefix
        assert await listed(since=time.time() + 60) == []
        summaries = {j.job_id: j for j in await store.list_jobs(JobFilter(), 100)}
        assert {k: summaries[v].status for k, v in ids.items()} == {
            "ok": "ok", "failed": "failed", "partial": "partial_fail", "pending": "pending"}
        # Paging on from the last job seen gives the rest, in order, with no repeats.
        first = await store.list_jobs(JobFilter(), 3)
        rest = await store.list_jobs(JobFilter(), 3, before=(first[-1].created_at, first[-1].job_id))
        assert [j.job_id for j in first + rest] == newest_first
        counts = await store.task_counts([ids["partial"], ids["pending"]])
        assert counts == {ids["partial"]: {TaskState.OK: 1, TaskState.FAILED: 1},
                          ids["pending"]: {TaskState.QUEUED: 1}}
        store.close()
    run(scenario())


@pytest.mark.parametrize(("match", "index"), [
    (JobFilter(), "jobs_by_created"),
    (JobFilter(since=1.0, statuses=frozenset({"ok", "failed"})), "jobs_by_created"),
    (JobFilter(statuses=frozenset({"failed"})), "jobs_by_status"),
    (JobFilter(statuses=frozenset({"pending"})), "jobs_by_status"),
    (JobFilter(targets=("p2",), statuses=frozenset({"failed"})), "SEARCH t USING PRIMARY KEY (target=?"),
    (JobFilter(requesters=("user:alice",)), "jobs_by_requester"),
    (JobFilter(score="hello"), "jobs_by_score"),
])
def test_listing_walks_an_index_in_order_never_sorting_the_table(
        tmp_path: Path, match: JobFilter, index: str) -> None:
    open_store(tmp_path).close()
    sql, args = list_sql(match, (2e9, "z"))
    conn = sqlite3.connect(tmp_path / "queue.db")
    plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (*args, 50)))
    conn.close()
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort of everything that matched


def test_progress_counts_states_and_names_the_longest_waiting(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> None:
        store = open_queue(tmp_path)
        job_id = (await store.submit(job("hello", ("p1", "p2", "p3")))).job_id
        await finish(store, f"{job_id}.0", TaskState.OK)
        await store.claim(f"{job_id}.1", "p2")
        progress = await store.job_progress(job_id)
        assert progress is not None and not progress.finished
        assert progress.total == 3
        assert progress.counts == {TaskState.OK: 1, TaskState.DISPATCHED: 1, TaskState.QUEUED: 1}
        # The queued task has waited since the job was made; the dispatched one, less.
        assert [(t.player, t.state) for t in progress.slowest] == [
            ("p3", TaskState.QUEUED), ("p2", TaskState.DISPATCHED)]
        assert await store.job_progress("0" * 32) is None
        store.close()
    run(scenario())


def test_a_version_4_queue_gets_the_status_of_its_finished_jobs(tmp_path: Path) -> None:
    async def first() -> dict[str, str]:
        store = open_store(tmp_path)
        assert isinstance(store, SqliteStore)
        ids = await fill(store)
        store.close()
        return ids
    ids = run(first())
    conn = sqlite3.connect(tmp_path / "queue.db")
    for index in ("jobs_by_created", "jobs_by_requester", "jobs_by_score"):
        conn.execute(f"DROP INDEX {index}")
    conn.execute("DROP INDEX jobs_by_status")
    conn.execute("ALTER TABLE jobs DROP COLUMN status")
    conn.execute("DROP TABLE job_targets")
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    async def after() -> None:
        store = open_store(tmp_path)
        statuses = {j.job_id: j.status for j in await store.list_jobs(JobFilter(), 10)}
        assert statuses == {ids["ok"]: "ok", ids["failed"]: "failed", ids["partial"]: "partial_fail",
                            ids["pending"]: "pending"}
        on_p2 = await store.list_jobs(JobFilter(targets=("p2",)), 10)
        assert [j.job_id for j in on_p2] == [ids["partial"], ids["failed"]]
        store.close()
    run(after())
    conn = sqlite3.connect(tmp_path / "queue.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
        schema.SCHEMA_VERSION)
    conn.close()


def test_retention_forgets_a_purged_job_under_every_target(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path)
        assert isinstance(store, SqliteStore)
        ids = await fill(store)
        assert await store.purge_finished(time.time() + 1) == 3  # all but the pending one
        assert [j.job_id for j in await store.list_jobs(JobFilter(targets=("p2",)), 10)] == []
        assert [j.job_id for j in await store.list_jobs(JobFilter(targets=("p3",)), 10)] == [ids["pending"]]
        store.close()
    run(scenario())
    conn = sqlite3.connect(tmp_path / "queue.db")
    assert conn.execute("SELECT COUNT(*) FROM job_targets").fetchone()[0] == 1
    conn.close()
