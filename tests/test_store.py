"""The queue store on a real SQLite file: typed records in and out, and upgrades."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from conductor.states import TaskState
from conductor.store import NewJob, PlayerRecord, TaskRef, open_store, schema
from tests.conftest import OpenQueue
from orchestra.inventory import ScoreEntry
from orchestra.outcome import TaskOutcome
from orchestra.params import ParamDecl, ScoreDecls
from orchestra.wire import common_pb2, player_pb2

# The tables as schema version 1 wrote them (a side column for cancel requests, no
# response_truncated, the inventory stored inside a Hello).
V1_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (id TEXT PRIMARY KEY, score TEXT NOT NULL, scope TEXT NOT NULL, targets TEXT NOT NULL,
    params TEXT NOT NULL, secret_keys TEXT NOT NULL, requester TEXT NOT NULL, created_at REAL NOT NULL,
    deadline_at REAL NOT NULL, idempotency_key TEXT UNIQUE, finished_at REAL);
CREATE TABLE tasks (id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id), player TEXT,
    state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, tried TEXT NOT NULL DEFAULT '[]',
    exit_code INTEGER, signal INTEGER NOT NULL DEFAULT 0, response TEXT NOT NULL DEFAULT '{}',
    stdout BLOB NOT NULL DEFAULT x'', stderr BLOB NOT NULL DEFAULT x'',
    stdout_truncated INTEGER NOT NULL DEFAULT 0, stderr_truncated INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '', dispatched_at REAL, started_at REAL, finished_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL);
CREATE INDEX tasks_open ON tasks(state) WHERE state IN ('queued','dispatched','running');
CREATE TABLE players (name TEXT PRIMARY KEY, last_seen REAL NOT NULL, scores BLOB NOT NULL,
    max_concurrent INTEGER NOT NULL, cert_not_after REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO jobs VALUES ('j1', 'sleep', 'all', '["p1"]', '{}', '[]', 'me', 1, 2e9, NULL, NULL);
INSERT INTO tasks (id, job_id, player, state, attempt, started_at, cancel_requested, updated_at)
    VALUES ('j1.0', 'j1', 'p1', 'running', 1, 5, 1, 5);
"""


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_every_outcome_field_round_trips_through_the_store(tmp_path: Path, open_queue: OpenQueue) -> None:
    outcome = TaskOutcome(exit_code=3, signal=0, response={"k": "v"}, response_truncated=True,
                          stdout=b"out", stderr=b"err", stdout_truncated=True, stderr_truncated=False,
                          reason="why", started_at=10.0, finished_at=12.5)

    async def scenario() -> TaskOutcome:
        store = open_queue(tmp_path)
        job_id = (await store.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9))).job_id
        await store.claim(f"{job_id}.0", "p1")
        await store.transition(f"{job_id}.0", TaskState.RUNNING, detail="", outcome=TaskOutcome(started_at=10.0))
        change = await store.transition(f"{job_id}.0", TaskState.FAILED, detail="", outcome=outcome)
        assert change.applied and change.job_finished
        job = await store.get_job(job_id)
        store.close()
        assert job is not None and job.status == "failed"
        return job.tasks[0].outcome

    assert run(scenario()) == outcome


def test_a_refused_one_of_task_is_requeued_until_every_target_refused(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> list[bool]:
        store = open_queue(tmp_path)
        job_id = (await store.submit(NewJob("x", "one", ("p1", "p2"), {}, (), "me", 2e9))).job_id
        task_id = f"{job_id}.0"
        applied = []
        for player in ("p1", "p2"):
            claimed = await store.claim(task_id, player)
            assert claimed is not None
            change = await store.requeue(TaskRef(task_id, player, claimed.attempt),
                                         detail="refused", one_of_only=True, refused_by=player)
            applied.append(change.applied)
        task = await store.task(task_id)
        store.close()
        assert task is not None and task.state == TaskState.DISPATCHED and task.tried == ("p1",)
        return applied

    assert run(scenario()) == [True, False]


def test_expiry_reports_dispatched_tasks_so_their_players_drop_them(tmp_path: Path, open_queue: OpenQueue) -> None:
    async def scenario() -> None:
        store = open_queue(tmp_path)
        job_id = (await store.submit(NewJob("x", "all", ("p1", "p2"), {}, (), "me", 100.0))).job_id
        await store.claim(f"{job_id}.0", "p1")
        expiry = await store.expire_due(200.0)
        assert [(r.task_id, r.player, r.attempt) for r in expiry.dropped] == [(f"{job_id}.0", "p1", 1)]
        assert [c.job_finished for c in expiry.changes] == [True]
        job = await store.get_job(job_id)
        assert job is not None and {t.state for t in job.tasks} == {TaskState.EXPIRED}
        assert job.tasks[0].outcome.reason.startswith("job deadline passed")
        store.close()

    run(scenario())


def test_player_inventory_is_stored_as_data(tmp_path: Path, open_queue: OpenQueue) -> None:
    entry = ScoreEntry("deploy", True, interface="env", timeout_seconds=30,
                       decls=ScoreDecls((ParamDecl("VERSION", required=True, choices=("1", "2")),)))
    record = PlayerRecord("p1", 5.0, 4, 9e9, (entry, ScoreEntry("broken", False, error="line 2: bad")))

    async def scenario() -> dict[str, PlayerRecord]:
        store = open_queue(tmp_path)
        await store.record_player(record)
        players = await store.players()
        store.close()
        return players

    assert run(scenario()) == {"p1": record}


def test_a_version_1_queue_is_upgraded_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "queue.db")
    conn.executescript(V1_TABLES)
    old_inventory = player_pb2.Hello(scores=[common_pb2.ScoreInfo(name="hello", valid=True, interface="env")])
    conn.execute("INSERT INTO players VALUES ('p1', 1, ?, 2, 9e9)", (old_inventory.SerializeToString(),))
    conn.commit()
    conn.close()

    async def scenario() -> None:
        store = open_store(tmp_path)
        task = await store.task("j1.0")
        assert task is not None and task.state == TaskState.CANCELLING
        assert task.outcome.started_at == 5 and not task.outcome.response_truncated
        players = await store.players()
        assert [e.name for e in players["p1"].inventory] == ["hello"]
        done = await store.transition("j1.0", TaskState.CANCELLED, detail="confirmed")
        assert done.applied and done.job_finished
        store.close()

    run(scenario())
    conn = sqlite3.connect(tmp_path / "queue.db")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    assert "cancel_requested" not in columns and "response_truncated" in columns
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(schema.SCHEMA_VERSION)
    index = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_open'").fetchone()[0]
    assert "'cancelling'" in index
    history = [tuple(r) for r in conn.execute("SELECT from_state, to_state FROM task_events ORDER BY id")]
    assert history == [("running", "cancelling"), ("cancelling", "cancelled")]


def test_idempotency_keys_are_per_requester_and_survive_the_upgrade_from_version_3(tmp_path: Path) -> None:
    job = NewJob("hello", "all", ("p1",), {"A": "1", "S": "secret"}, ("S",), "user:alice", 2e9, "k1")

    async def first() -> str:
        store = open_store(tmp_path)
        job_id = (await store.submit(job)).job_id
        store.close()
        return job_id

    job_id = run(first())
    # Make it a version-3 queue: a global key column, no digests.
    conn = sqlite3.connect(tmp_path / "queue.db")
    conn.execute("UPDATE jobs SET idempotency_key = 'k1'")
    conn.execute("ALTER TABLE jobs DROP COLUMN request_digest")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    async def after() -> None:
        store = open_store(tmp_path)
        again = await store.submit(job)
        assert again.existing and again.job_id == job_id and not again.conflict
        other = await store.submit(NewJob("hello", "all", ("p1",), {}, (), "user:bob", 2e9, "k1"))
        assert not other.existing and other.job_id != job_id
        assert (await store.submit(NewJob("hello", "all", ("p1",), {"A": "2"}, (), "user:bob", 2e9, "k1"))).conflict
        # A different secret value is not a different request: it is never kept to compare.
        secret = NewJob("hello", "all", ("p1",), {"S": "x"}, ("S",), "user:bob", 2e9, "k2")
        first_secret = await store.submit(secret)
        same = await store.submit(dataclasses.replace(secret, params={"S": "y"}))
        assert same.existing and same.job_id == first_secret.job_id and not same.conflict
        store.close()

    run(after())
