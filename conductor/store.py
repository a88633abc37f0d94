"""The conductor's durable queue: jobs, tasks, their transitions and known players.

Every change is one SQLite transaction (WAL, synchronous=FULL) committed before anyone is
told about it. Task states change only through :meth:`Store.transition`-style helpers
that consult :mod:`conductor.states`, and a trigger built from the same table refuses
any other change at the database level.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conductor import states
from conductor.states import TaskState
from orchestra.db import Database, Transaction
from orchestra.params import redact

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NewJob:
    score: str
    scope: str  # "all" | "one"
    targets: tuple[str, ...]
    params: dict[str, str]
    secret_keys: tuple[str, ...]
    requester: str
    deadline_at: float
    idempotency_key: str | None = None


@dataclass
class TaskRecord:
    task_id: str
    job_id: str
    player: str | None
    state: TaskState
    attempt: int
    tried: list[str]
    exit_code: int | None
    signal: int
    response: dict[str, str]
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    reason: str
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRecord:
        return cls(row["id"], row["job_id"], row["player"], TaskState(row["state"]), row["attempt"],
                   json.loads(row["tried"]), row["exit_code"], row["signal"],
                   json.loads(row["response"]), row["stdout"], row["stderr"],
                   bool(row["stdout_truncated"]), bool(row["stderr_truncated"]), row["reason"],
                   row["dispatched_at"], row["started_at"], row["finished_at"],
                   bool(row["cancel_requested"]))


@dataclass
class JobRecord:
    job_id: str
    score: str
    scope: str
    targets: list[str]
    params: dict[str, str]
    secret_keys: list[str]
    requester: str
    created_at: float
    deadline_at: float
    finished_at: float | None
    tasks: list[TaskRecord] = field(default_factory=list)

    @property
    def status(self) -> str:
        return states.job_status(task.state for task in self.tasks)

    @classmethod
    def from_row(cls, row: sqlite3.Row, tasks: list[TaskRecord]) -> JobRecord:
        return cls(row["id"], row["score"], row["scope"], json.loads(row["targets"]),
                   json.loads(row["params"]), json.loads(row["secret_keys"]), row["requester"],
                   row["created_at"], row["deadline_at"], row["finished_at"], tasks)


@dataclass(frozen=True)
class Claimed:
    """A task just moved to dispatched: everything the RunTask message needs."""

    task_id: str
    job_id: str
    attempt: int
    player: str
    score: str
    params: dict[str, str]
    requester: str
    deadline_at: float


@dataclass(frozen=True)
class Change:
    """Outcome of a transition attempt."""

    applied: bool
    job_id: str
    job_finished: bool = False
    state: TaskState | None = None


def new_job_id() -> str:
    """48 bits of milliseconds then 80 random bits: sortable by time, unguessable."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def _schema(conn: sqlite3.Connection) -> None:
    conn.executescript("""
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            score TEXT NOT NULL,
            scope TEXT NOT NULL CHECK (scope IN ('all', 'one')),
            targets TEXT NOT NULL,
            params TEXT NOT NULL,
            secret_keys TEXT NOT NULL,
            requester TEXT NOT NULL,
            created_at REAL NOT NULL,
            deadline_at REAL NOT NULL,
            idempotency_key TEXT UNIQUE,
            finished_at REAL
        );
        CREATE TABLE IF NOT EXISTS tasks (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs(id),
            player TEXT,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            tried TEXT NOT NULL DEFAULT '[]',
            exit_code INTEGER,
            signal INTEGER NOT NULL DEFAULT 0,
            response TEXT NOT NULL DEFAULT '{}',
            stdout BLOB NOT NULL DEFAULT x'',
            stderr BLOB NOT NULL DEFAULT x'',
            stdout_truncated INTEGER NOT NULL DEFAULT 0,
            stderr_truncated INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '',
            dispatched_at REAL,
            started_at REAL,
            finished_at REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);
        CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state) WHERE state IN ('queued','dispatched','running');
        CREATE INDEX IF NOT EXISTS tasks_by_player ON tasks(player, state);
        CREATE TABLE IF NOT EXISTS task_events (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL,
            at REAL NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            player TEXT,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX IF NOT EXISTS task_events_by_task ON task_events(task_id);
        CREATE TABLE IF NOT EXISTS players (
            name TEXT PRIMARY KEY,
            last_seen REAL NOT NULL,
            scores BLOB NOT NULL,
            max_concurrent INTEGER NOT NULL,
            cert_not_after REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS allowed_transitions (
            from_state TEXT NOT NULL, to_state TEXT NOT NULL, PRIMARY KEY (from_state, to_state)
        );
        CREATE TRIGGER IF NOT EXISTS task_state_guard BEFORE UPDATE OF state ON tasks
        WHEN OLD.state != NEW.state AND NOT EXISTS (
            SELECT 1 FROM allowed_transitions WHERE from_state = OLD.state AND to_state = NEW.state)
        BEGIN SELECT RAISE(ABORT, 'illegal task state transition'); END;
        CREATE TRIGGER IF NOT EXISTS task_insert_guard BEFORE INSERT ON tasks
        WHEN NEW.state != 'queued'
        BEGIN SELECT RAISE(ABORT, 'tasks start queued'); END;
    """)
    with Transaction(conn):
        conn.execute("DELETE FROM allowed_transitions")
        conn.executemany("INSERT INTO allowed_transitions VALUES (?, ?)", states.allowed_pairs())
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


_OPEN = ("queued", "dispatched", "running")


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "queue.db")
        self.db.call(_schema, self.db.conn)

    def close(self) -> None:
        self.db.close()

    # ---- jobs ------------------------------------------------------------------------

    async def submit(self, job: NewJob) -> tuple[str, bool]:
        """Commit a job and its queued tasks; returns (job_id, existing)."""
        def op(conn: sqlite3.Connection) -> tuple[str, bool]:
            with Transaction(conn):
                if job.idempotency_key:
                    row = conn.execute("SELECT id FROM jobs WHERE idempotency_key = ?",
                                       (job.idempotency_key,)).fetchone()
                    if row:
                        return row["id"], True
                job_id, now = new_job_id(), time.time()
                conn.execute(
                    "INSERT INTO jobs (id, score, scope, targets, params, secret_keys, requester,"
                    " created_at, deadline_at, idempotency_key) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job_id, job.score, job.scope, json.dumps(list(job.targets)),
                     json.dumps(job.params, sort_keys=True), json.dumps(list(job.secret_keys)),
                     job.requester, now, job.deadline_at, job.idempotency_key))
                players: Sequence[str | None] = job.targets if job.scope == "all" else [None]
                conn.executemany(
                    "INSERT INTO tasks (id, job_id, player, state, updated_at) VALUES (?,?,?,?,?)",
                    [(f"{job_id}.{n}", job_id, player, TaskState.QUEUED, now)
                     for n, player in enumerate(players)])
                return job_id, False
        return await self.db.run(op, self.db.conn)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self.db.run(_get_job, self.db.conn, job_id)

    async def open_jobs(self) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT id FROM jobs WHERE finished_at IS NULL")]
        return await self.db.run(op, self.db.conn)

    # ---- dispatch --------------------------------------------------------------------

    async def queued(self, players: Iterable[str] | None = None
                     ) -> list[tuple[str, str, str | None, list[str], list[str], float]]:
        """Queued tasks: (task_id, scope, player, targets, tried, deadline_at), oldest first.

        With players given, only tasks bound to one of them or not bound yet (one-of):
        dispatch then never reads the backlog of players that cannot take work.
        """
        names = None if players is None else sorted(players)

        def op(conn: sqlite3.Connection) -> list[tuple[str, str, str | None, list[str], list[str], float]]:
            where = "t.state = 'queued'"
            args: tuple[object, ...] = ()
            if names is not None:
                where += f" AND (t.player IS NULL OR t.player IN ({','.join('?' * len(names))}))"
                args = tuple(names)
            rows = conn.execute(
                "SELECT t.id, j.scope, t.player, j.targets, t.tried, j.deadline_at FROM tasks t"
                f" JOIN jobs j ON j.id = t.job_id WHERE {where} ORDER BY j.created_at, t.rowid", args)
            return [(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5]) for r in rows]
        return await self.db.run(op, self.db.conn)

    async def purge_finished(self, before: float) -> int:
        """Forget jobs finished before `before` (with their tasks and history)."""
        def op(conn: sqlite3.Connection) -> int:
            with Transaction(conn):
                old = [r[0] for r in conn.execute(
                    "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 10000",
                    (before,))]
                for job_id in old:
                    conn.execute("DELETE FROM task_events WHERE task_id IN"
                                 " (SELECT id FROM tasks WHERE job_id = ?)", (job_id,))
                    conn.execute("DELETE FROM tasks WHERE job_id = ?", (job_id,))
                    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                return len(old)
        return await self.db.run(op, self.db.conn)

    async def claim(self, task_id: str, player: str) -> Claimed | None:
        """queued -> dispatched to player with a new attempt number, in one transaction."""
        def op(conn: sqlite3.Connection) -> Claimed | None:
            with Transaction(conn):
                row = conn.execute(
                    "SELECT t.state, t.attempt, t.job_id, j.score, j.params, j.requester, j.deadline_at"
                    " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?", (task_id,)).fetchone()
                if row is None or row["state"] != TaskState.QUEUED:
                    return None
                attempt = row["attempt"] + 1
                _move(conn, task_id, TaskState.QUEUED, TaskState.DISPATCHED, f"sent to {player}",
                      player=player, attempt=attempt, dispatched_at=time.time())
                return Claimed(task_id, row["job_id"], attempt, player, row["score"],
                               json.loads(row["params"]), row["requester"], row["deadline_at"])
        return await self.db.run(op, self.db.conn)

    # ---- transitions -----------------------------------------------------------------

    async def transition(self, task_id: str, new: TaskState, *, expect_attempt: int | None = None,
                         expect_player: str | None = None, expect_state: TaskState | None = None,
                         detail: str = "", **fields: object) -> Change:
        """Move a task to new if it is legal and (when given) attempt/player/state still match.

        Returns applied=False instead of raising when the task has moved on (a stale or
        duplicate message): callers treat that as "already handled".
        """
        def op(conn: sqlite3.Connection) -> Change:
            with Transaction(conn):
                row = conn.execute("SELECT job_id, state, attempt, player FROM tasks WHERE id = ?",
                                   (task_id,)).fetchone()
                if row is None:
                    return Change(False, "")
                old = TaskState(row["state"])
                stale = ((expect_attempt is not None and row["attempt"] != expect_attempt)
                         or (expect_player is not None and row["player"] != expect_player)
                         or (expect_state is not None and old != expect_state))
                if stale or new not in states.ALLOWED[old]:
                    return Change(False, row["job_id"], state=old)
                _move(conn, task_id, old, new, detail, **fields)
                finished = _finish_job_if_done(conn, row["job_id"])
                return Change(True, row["job_id"], finished, new)
        return await self.db.run(op, self.db.conn)

    async def requeue(self, task_id: str, *, attempt: int, player: str, detail: str,
                      one_of_only: bool = False, refused_by: str | None = None) -> Change:
        """dispatched -> queued: the task was never started, so it may be sent again.

        A one-of task also loses its player, so any target may take it next; refused_by
        adds that target to the ones not to try again, and nothing is requeued when no
        target is left. Not applied when the task moved on, or (one_of_only) is all-of.
        """
        def op(conn: sqlite3.Connection) -> Change:
            with Transaction(conn):
                row = conn.execute(
                    "SELECT t.job_id, t.state, t.attempt, t.player, t.tried, j.scope, j.targets"
                    " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?", (task_id,)).fetchone()
                if (row is None or row["state"] != TaskState.DISPATCHED or row["attempt"] != attempt
                        or row["player"] != player):
                    return Change(False, row["job_id"] if row else "")
                one_of = row["scope"] == "one"
                if one_of_only and not one_of:
                    return Change(False, row["job_id"])
                fields: dict[str, object] = {"player": None} if one_of else {}
                if refused_by is not None:
                    tried = [*json.loads(row["tried"]), refused_by]
                    if all(target in tried for target in json.loads(row["targets"])):
                        return Change(False, row["job_id"])
                    fields["tried"] = json.dumps(tried)
                _move(conn, task_id, TaskState.DISPATCHED, TaskState.QUEUED, detail, **fields)
                return Change(True, row["job_id"], state=TaskState.QUEUED)
        return await self.db.run(op, self.db.conn)

    async def tasks_of(self, player: str, wanted: Iterable[TaskState]) -> list[TaskRecord]:
        names = [s.value for s in wanted]

        def op(conn: sqlite3.Connection) -> list[TaskRecord]:
            marks = ",".join("?" * len(names))
            rows = conn.execute(f"SELECT * FROM tasks WHERE player = ? AND state IN ({marks})",
                                (player, *names))
            return [TaskRecord.from_row(r) for r in rows]
        return await self.db.run(op, self.db.conn)

    async def task(self, task_id: str) -> TaskRecord | None:
        def op(conn: sqlite3.Connection) -> TaskRecord | None:
            row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return TaskRecord.from_row(row) if row else None
        return await self.db.run(op, self.db.conn)

    async def expire_due(self, now: float) -> tuple[list[Change], list[tuple[str, str, int]]]:
        """Tasks not started by their job's deadline -> expired.

        Returns the changes and the (task_id, player, attempt) of dispatched ones, whose
        players must be told to drop them. Not started means queued, or dispatched
        without a start grant: either way nothing ran.
        """
        def op(conn: sqlite3.Connection) -> tuple[list[Change], list[tuple[str, str, int]]]:
            changes, dropped = [], []
            reason = "job deadline passed before the task started"
            with Transaction(conn):
                rows = conn.execute(
                    "SELECT t.id, t.job_id, t.state, t.attempt, t.player FROM tasks t"
                    " JOIN jobs j ON j.id = t.job_id"
                    " WHERE t.state IN ('queued', 'dispatched') AND j.deadline_at <= ?", (now,)).fetchall()
                for row in rows:
                    _move(conn, row["id"], TaskState(row["state"]), TaskState.EXPIRED, reason,
                          reason=reason, finished_at=now)
                    if row["state"] == TaskState.DISPATCHED:
                        dropped.append((row["id"], row["player"], row["attempt"]))
                for job_id in {row["job_id"] for row in rows}:
                    changes.append(Change(True, job_id, _finish_job_if_done(conn, job_id)))
            return changes, dropped
        return await self.db.run(op, self.db.conn)

    async def request_cancel(self, task_id: str) -> bool:
        """Mark a running task for cancellation (its state changes when the player confirms)."""
        def op(conn: sqlite3.Connection) -> bool:
            with Transaction(conn):
                cur = conn.execute("UPDATE tasks SET cancel_requested = 1, updated_at = ?"
                                   " WHERE id = ? AND state = 'running'", (time.time(), task_id))
                return cur.rowcount == 1
        return await self.db.run(op, self.db.conn)

    async def players_with(self, state: TaskState) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT player FROM tasks WHERE state = ? AND player IS NOT NULL", (state.value,))]
        return await self.db.run(op, self.db.conn)

    async def next_deadline(self) -> float | None:
        def op(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT MIN(j.deadline_at) FROM tasks t JOIN jobs j ON j.id = t.job_id"
                               " WHERE t.state IN ('queued', 'dispatched')").fetchone()
            return row[0]
        return await self.db.run(op, self.db.conn)

    # ---- players ---------------------------------------------------------------------

    async def record_player(self, name: str, scores: bytes, max_concurrent: int,
                            cert_not_after: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                conn.execute("INSERT OR REPLACE INTO players VALUES (?,?,?,?,?)",
                             (name, time.time(), scores, max_concurrent, cert_not_after))
        await self.db.run(op, self.db.conn)

    async def players(self) -> dict[str, sqlite3.Row]:
        def op(conn: sqlite3.Connection) -> dict[str, sqlite3.Row]:
            return {row["name"]: row for row in conn.execute("SELECT * FROM players")}
        return await self.db.run(op, self.db.conn)

    async def touch_player(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE players SET last_seen = ? WHERE name = ?", (time.time(), name))
        await self.db.run(op, self.db.conn)

    async def integrity_check(self) -> str:
        return await self.db.run(lambda conn: conn.execute("PRAGMA integrity_check").fetchone()[0],
                                 self.db.conn)


def _move(conn: sqlite3.Connection, task_id: str, old: TaskState, new: TaskState, detail: str,
          **fields: object) -> None:
    """The one UPDATE of a task's state, with its history row, inside the caller's transaction."""
    states.check(old, new)
    fields = {"state": new.value, "updated_at": time.time(), **fields}
    sets = ", ".join(f"{name} = ?" for name in fields)
    cur = conn.execute(f"UPDATE tasks SET {sets} WHERE id = ? AND state = ?",
                       (*fields.values(), task_id, old.value))
    if cur.rowcount != 1:
        raise states.IllegalTransition(f"task {task_id} is no longer {old}")
    conn.execute("INSERT INTO task_events (task_id, at, from_state, to_state, attempt, player, detail)"
                 " SELECT id, ?, ?, ?, attempt, player, ? FROM tasks WHERE id = ?",
                 (time.time(), old.value, new.value, detail, task_id))


def _finish_job_if_done(conn: sqlite3.Connection, job_id: str) -> bool:
    open_tasks = conn.execute(
        f"SELECT COUNT(*) FROM tasks WHERE job_id = ? AND state IN {_OPEN!r}", (job_id,)).fetchone()[0]
    if open_tasks:
        return False
    cur = conn.execute("UPDATE jobs SET finished_at = ? WHERE id = ? AND finished_at IS NULL",
                       (time.time(), job_id))
    if cur.rowcount != 1:
        return False
    # Secret values were needed only to run the tasks: forget them now.
    row = conn.execute("SELECT params, secret_keys FROM jobs WHERE id = ?", (job_id,)).fetchone()
    secrets = json.loads(row["secret_keys"])
    if secrets:
        params = redact(json.loads(row["params"]), secrets)
        conn.execute("UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(params, sort_keys=True), job_id))
    return True


def _get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    tasks = [TaskRecord.from_row(r) for r in
             conn.execute("SELECT * FROM tasks WHERE job_id = ? ORDER BY rowid", (job_id,))]
    return JobRecord.from_row(row, tasks)
