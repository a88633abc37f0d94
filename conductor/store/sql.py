"""The verbs of :class:`conductor.store.Store` in SQL, shared by both backends.

Every verb is one transaction committed before it returns, run on the database's own
thread so the event loop never waits for an fsync or a round trip. Rows become records
here and nowhere else. The SQL is SQLite's, kept to what PostgreSQL reads the same way;
the PostgreSQL adapter (:mod:`conductor.store.postgresql`) translates the placeholders
and the few functions that differ. The backends differ only in how they open their
database and lay out its schema (:mod:`conductor.store.sqlite`,
:mod:`conductor.store.postgresql`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from conductor import rollout, states
from conductor.states import TaskState
from conductor.store import schema
from conductor.store.records import (
    AttemptRecord, Change, Claimed, Drain, Expiry, InFlight, JobFilter, JobProgress, JobRecord, JobSummary,
    KeyedJob, NewJob, NewWorkflow, OpenJob, PendingTask, PlayerRecord, QueuedTask, Retried, ScheduleFire,
    ScheduleRecord, ScoreRules, StepRecord, StepSettled, Submitted, TaskRecord, TaskRef, WorkflowRecord,
    WorkflowSubmitted, task_number,
)
from conductor.store.records import task_id as make_task_id
from orchestra.db import Conn, Database
from orchestra.inventory import decode_inventory, encode_inventory
from orchestra.joboptions import Rollout
from orchestra.outcome import TaskOutcome
from orchestra.params import redact
from orchestra.wire import common_pb2

_OUTCOME_FIELDS = dataclasses.fields(TaskOutcome)
# A row read back: by position and by column name (sqlite3.Row, or the adapter's).
Row = Any


def _in(column: str, values: Iterable[TaskState]) -> tuple[str, tuple[str, ...]]:
    """``column IN (?, ...)`` and its arguments, for a set of states."""
    return _in_cached(column, frozenset(values))


@functools.lru_cache(maxsize=64)
def _in_cached(column: str, values: frozenset[TaskState]) -> tuple[str, tuple[str, ...]]:
    names = tuple(sorted(str(state) for state in values))
    return f"{column} IN ({','.join('?' * len(names))})", names


def new_job_id() -> str:
    """48 bits of milliseconds then 80 random bits: sortable by time, unguessable."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def _outcome_columns(outcome: TaskOutcome) -> dict[str, object]:
    """The outcome as column values; the columns are named as the dataclass fields."""
    columns: dict[str, object] = {}
    for spec in _OUTCOME_FIELDS:
        value = getattr(outcome, spec.name)
        if spec.name == "response":
            value = json.dumps(dict(value), sort_keys=True) if value else "{}"
        elif isinstance(value, bool):
            value = int(value)
        columns[spec.name] = value
    return columns


def _outcome(row: Row) -> TaskOutcome:
    values: dict[str, Any] = {}
    for spec in _OUTCOME_FIELDS:
        value = row[spec.name]
        if spec.name == "response":
            value = json.loads(value)
        elif isinstance(spec.default, bool):
            value = bool(value)
        values[spec.name] = value
    return TaskOutcome(**values)


def _task(row: Row, history: Sequence[AttemptRecord] = ()) -> TaskRecord:
    return TaskRecord(row["id"], row["job_id"], row["player"], TaskState(row["state"]),
                      row["attempt"], tuple(json.loads(row["tried"])), row["dispatched_at"],
                      _outcome(row), row["retries"], row["not_before"], tuple(history))


def _rollout(row: Row) -> Rollout:
    return Rollout(row["canary"], row["batch"], row["max_failures"])


def _rules(row: Row) -> ScoreRules:
    return ScoreRules(row["retries"], row["retry_delay"], row["concurrency"], bool(row["exclusive"]))


def _job(row: Row, tasks: Sequence[TaskRecord]) -> JobRecord:
    return JobRecord(row["id"], row["score"], row["scope"], tuple(json.loads(row["targets"])),
                     json.loads(row["params"]), tuple(json.loads(row["secret_keys"])),
                     row["requester"], row["created_at"], row["deadline_at"], row["finished_at"],
                     tuple(tasks), row["name"], json.loads(row["labels"]), row["priority"], _rollout(row),
                     row["phase"], row["phase_reason"], row["failures"], _rules(row), row["workflow_id"],
                     row["step"])


def _attempt(row: Row) -> AttemptRecord:
    outcome = common_pb2.TaskOutcome.FromString(row["outcome"])
    return AttemptRecord(row["attempt"], row["player"], TaskState(row["state"]), TaskOutcome.from_wire(outcome))


def _archive_attempt(conn: Conn, task_id: str) -> None:
    """Keep the attempt that just ended, before the task is queued again: one row per
    ending (numbered by the task's retries so far), even for an ending that no new
    dispatch followed (a retry that expired before it was sent)."""
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    conn.execute("INSERT INTO task_attempts (task_id, seq, attempt, player, state, outcome)"
                 " VALUES (?,?,?,?,?,?)", (task_id, row["retries"], row["attempt"], row["player"], row["state"],
                                           _outcome(row).to_wire().SerializeToString()))


# The outcome columns of a task queued again: its new attempt has no outcome yet.
_FRESH_OUTCOME = _outcome_columns(TaskOutcome())


def _queued_again(conn: Conn, task_id: str, job: Row, old: TaskState, detail: str,
                  not_before: float | None) -> QueuedTask:
    """An ended task back in the queue as a new attempt (retryjob, or the score's
    retries): the ending is archived, the history row says why, the job counts it open."""
    _archive_attempt(conn, task_id)
    row = conn.execute("SELECT player, tried FROM tasks WHERE id = ?", (task_id,)).fetchone()
    one_of = job["scope"] == "one"
    targets = conn.execute("SELECT targets FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0] if one_of else "[]"
    _move(conn, task_id, job["id"], old, TaskState.QUEUED, detail, not_before=not_before,
          player=None if one_of else row["player"], tried="[]", **_FRESH_OUTCOME)
    conn.execute("UPDATE tasks SET retries = retries + 1 WHERE id = ?", (task_id,))
    return QueuedTask(task_id, job["scope"], None if one_of else row["player"],
                      tuple(json.loads(targets)), (),
                      job["deadline_at"], job["created_at"], job["priority"], not_before, job["score"])


def _keyed(conn: Conn, key: str) -> KeyedJob | None:
    row = conn.execute("SELECT id, request_digest, secret_keys FROM jobs WHERE idempotency_key = ?",
                       (key,)).fetchone()
    return None if row is None else KeyedJob(row["id"], row["request_digest"], tuple(json.loads(row["secret_keys"])))


def _player(row: Row) -> PlayerRecord:
    return PlayerRecord(row["name"], row["last_seen"], row["max_concurrent"], row["cert_not_after"],
                        decode_inventory(row["scores"]), bytes(row["cert_issuer"]), int(row["cert_serial"], 16))


def _move(conn: Conn, task_id: str, job_id: str, old: TaskState, new: TaskState,
          detail: str, **columns: object) -> None:
    """The one UPDATE of a task's state, with its history row and its job's count of
    open tasks, inside the caller's transaction."""
    states.check(old, new)
    columns = {"state": new.value, "updated_at": time.time(), **columns}
    sets = ", ".join(f"{name} = ?" for name in columns)
    cur = conn.execute(f"UPDATE tasks SET {sets} WHERE id = ? AND state = ?",
                       (*columns.values(), task_id, old.value))
    if cur.rowcount != 1:
        raise states.IllegalTransition(f"task {task_id} is no longer {old}")
    conn.execute("INSERT INTO task_events (task_id, at, from_state, to_state, attempt, player, detail)"
                 " SELECT id, ?, ?, ?, attempt, player, ? FROM tasks WHERE id = ?",
                 (time.time(), old.value, new.value, detail, task_id))
    if old in states.OPEN and new not in states.OPEN:
        conn.execute("UPDATE jobs SET open_tasks = open_tasks - 1 WHERE id = ?", (job_id,))
    elif new in states.OPEN and old not in states.OPEN:
        conn.execute("UPDATE jobs SET open_tasks = open_tasks + 1 WHERE id = ?", (job_id,))


# What an ending needs of its job (rollout, retries, where a retry goes): never the
# targets or params, which a fleet-wide job has thousands of bytes of, read per result.
_ENDING_COLUMNS = ("id, scope, created_at, deadline_at, priority, score, retries, retry_delay, canary, batch,"
                   " max_failures, phase, phase_reason, failures, canary_left")


def _retry_automatically(conn: Conn, job: Row, task_id: str, old: TaskState,
                         new: TaskState) -> QueuedTask | None:
    """The score's ``retries``: a task that failed or timed out while running (not while
    being cancelled) is queued again as a new attempt, after ``retry_delay``, while it
    has retries left, its job's deadline is ahead and its rollout has not stopped."""
    if new not in states.AUTO_RETRIED or old != TaskState.RUNNING or not job["retries"]:
        return None
    retries = conn.execute("SELECT retries FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
    now = time.time()
    not_before = now + job["retry_delay"] if job["retry_delay"] else None
    if retries >= job["retries"] or job["phase"] == rollout.STOPPED or (not_before or now) >= job["deadline_at"]:
        return None
    detail = f"retry {retries + 1} of {job['retries']} (the score's retries)"
    if not_before is not None:
        detail += f" in {job['retry_delay']:g} s"
    return _queued_again(conn, task_id, job, new, detail, not_before)


def _standing(job: Row) -> rollout.Standing:
    return rollout.Standing(job["phase"], job["canary_left"], job["failures"], job["phase_reason"])


def _after_endings(conn: Conn, job: Row, ended: Sequence[tuple[int, TaskState]]) -> \
        tuple[str | None, tuple[str, ...]]:
    """Apply the rollout rule (rollout.after_ending) for tasks of the job that ended for
    good; a stop skips every task of the job still queued, in the same transaction.
    Returns the new phase (None: unchanged) and the skipped tasks."""
    before = _standing(job)
    if before.phase not in (rollout.CANARY, rollout.ROLLING):
        return None, ()
    plan, standing = _rollout(job), before
    for number, state in ended:
        standing = rollout.after_ending(plan, standing, number, state)
    if standing == before:
        return None, ()
    conn.execute("UPDATE jobs SET phase = ?, canary_left = ?, failures = ?, phase_reason = ? WHERE id = ?",
                 (standing.phase, standing.canary_left, standing.failures, standing.reason, job["id"]))
    skipped: tuple[str, ...] = ()
    if standing.phase == rollout.STOPPED:
        reason = f"rollout stopped: {standing.reason}"
        columns = _outcome_columns(TaskOutcome.ended(reason, time.time()))
        skipped = tuple(r[0] for r in conn.execute(
            "SELECT id FROM tasks WHERE job_id = ? AND state = 'queued'", (job["id"],)))
        for task_id in skipped:
            _move(conn, task_id, job["id"], TaskState.QUEUED, TaskState.SKIPPED, reason, not_before=None, **columns)
    return (standing.phase if standing.phase != before.phase else None), skipped


def _finish_job_if_done(conn: Conn, job_id: str) -> bool:
    """Mark the job finished once its last open task ended: O(1), from its counter."""
    row = conn.execute("SELECT open_tasks, params, secret_keys FROM jobs WHERE id = ? AND finished_at IS NULL",
                       (job_id,)).fetchone()
    if row is None or row["open_tasks"] > 0:
        return False
    # Secret values were needed only to run the tasks: forget them now.
    params = row["params"]
    secrets = json.loads(row["secret_keys"])
    if secrets:
        params = json.dumps(redact(json.loads(params), secrets), sort_keys=True)
    conn.execute("UPDATE jobs SET finished_at = ?, params = ?, status = ?,"
                 " phase = CASE WHEN phase IN (?, ?) THEN ? ELSE phase END WHERE id = ?",
                 (time.time(), params, schema.finished_status(conn, job_id), rollout.CANARY, rollout.ROLLING,
                  rollout.DONE, job_id))
    return True


def _forget_job(conn: Conn, job_id: str) -> None:
    """Delete a job, its tasks, their history and its index rows, each index row by its
    whole key (no walk of a host's or a label's jobs)."""
    job = conn.execute("SELECT targets, labels, created_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.executemany("DELETE FROM job_targets WHERE target = ? AND created_at = ? AND job_id = ?",
                     [(target, job["created_at"], job_id) for target in dict.fromkeys(json.loads(job["targets"]))])
    conn.executemany("DELETE FROM job_labels WHERE key = ? AND value = ? AND created_at = ? AND job_id = ?",
                     [(k, v, job["created_at"], job_id) for k, v in json.loads(job["labels"]).items()])
    conn.execute("DELETE FROM task_events WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)", (job_id,))
    conn.execute("DELETE FROM task_attempts WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)", (job_id,))
    conn.execute("DELETE FROM tasks WHERE job_id = ?", (job_id,))
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _insert_job(conn: Conn, job: NewJob) -> Submitted:
    """Commit a job and its queued tasks (or find the job its idempotency key names). A
    workflow's step is marked running with it, and a schedule moved on to its next run,
    in the same transaction, or nothing is committed (``stale``) when the step no longer
    waits or the schedule is no longer due then: neither ever starts twice."""
    key = schema.scoped_key(job.requester, job.idempotency_key) if job.idempotency_key else None
    if key is not None:
        keyed = _keyed(conn, key)
        if keyed is not None:
            return Submitted(keyed.job_id, True, conflict=not keyed.matches(job))
    job_id, now = new_job_id(), time.time()
    if job.workflow_id is not None and conn.execute(
            "UPDATE workflow_steps SET state = 'running', job_id = ?, started_at = ?"
            " WHERE workflow_id = ? AND name = ? AND state = 'waiting' AND job_id IS NULL",
            (job_id, now, job.workflow_id, job.step)).rowcount != 1:
        return Submitted("", False, stale=True)
    if job.workflow_id is not None and job.secret_keys:  # its job has them now, and forgets them at its end
        row = conn.execute("SELECT request FROM workflow_steps WHERE workflow_id = ? AND name = ?",
                           (job.workflow_id, job.step)).fetchone()
        conn.execute("UPDATE workflow_steps SET request = ? WHERE workflow_id = ? AND name = ?",
                     (_without_values(bytes(row[0]), job.secret_keys), job.workflow_id, job.step))
    if job.fires is not None and not _fired(conn, job.fires, job_id, now):
        return Submitted("", False, stale=True)
    players: Sequence[str | None] = job.targets if job.scope == "all" else [None]
    plan, rules = job.rollout, job.rules
    conn.execute(
        "INSERT INTO jobs (id, score, scope, targets, params, secret_keys, requester,"
        " created_at, deadline_at, idempotency_key, request_digest, open_tasks, name, labels, priority,"
        " canary, batch, max_failures, phase, canary_left, retries, retry_delay, concurrency, exclusive,"
        " workflow_id, step) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (job_id, job.score, job.scope, json.dumps(list(job.targets)),
         json.dumps(dict(job.params), sort_keys=True), json.dumps(list(job.secret_keys)),
         job.requester, now, job.deadline_at, key, job.digest(job.secret_keys) if key else None,
         len(players), job.name, json.dumps(dict(job.labels), sort_keys=True), job.priority,
         plan.canary, plan.batch, plan.max_failures, rollout.first_phase(plan), plan.canary,
         rules.retries, rules.retry_delay, rules.concurrency, int(rules.exclusive), job.workflow_id, job.step))
    ids = [make_task_id(job_id, n) for n in range(len(players))]
    conn.executemany("INSERT INTO job_targets (target, created_at, job_id) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                     [(target, now, job_id) for target in job.targets])
    conn.executemany("INSERT INTO job_labels (key, value, created_at, job_id) VALUES (?,?,?,?)",
                     [(k, v, now, job_id) for k, v in job.labels.items()])
    conn.executemany(
        "INSERT INTO tasks (id, job_id, player, state, updated_at) VALUES (?,?,?,?,?)",
        [(tid, job_id, player, TaskState.QUEUED, now) for tid, player in zip(ids, players, strict=True)])
    targets = tuple(job.targets) if job.scope == "one" else ()
    return Submitted(job_id, False, tuple(
        QueuedTask(tid, job.scope, player, targets, (), job.deadline_at, now, job.priority, None, job.score)
        for tid, player in zip(ids, players, strict=True)))


def _fired(conn: Conn, fires: ScheduleFire, run_id: str, now: float) -> bool:
    """Move a schedule on past the run due at ``fires.due_at``, naming the run; False when
    it is no longer due then (paused, removed, or already run)."""
    return conn.execute(
        "UPDATE schedules SET next_at = ?, last_at = ?, last_id = ?, last_error = ''"
        " WHERE name = ? AND next_at = ? AND paused = 0",
        (fires.next_at, now, run_id, fires.name, fires.due_at)).rowcount == 1


def _step(row: Row) -> StepRecord:
    return StepRecord(row["name"], tuple(json.loads(row["after"])), row["on_failure"], bytes(row["request"]),
                      row["state"], row["reason"], row["job_id"], row["started_at"], row["finished_at"],
                      row["job_status"], row["job_finished_at"])


def _workflow(conn: Conn, workflow_id: str) -> WorkflowRecord | None:
    row = conn.execute("SELECT * FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    if row is None:
        return None
    steps = [_step(r) for r in conn.execute(
        "SELECT s.*, j.status AS job_status, j.finished_at AS job_finished_at FROM workflow_steps AS s"
        " LEFT JOIN jobs AS j ON j.id = s.job_id WHERE s.workflow_id = ? ORDER BY s.position", (workflow_id,))]
    return WorkflowRecord(row["id"], row["name"], json.loads(row["labels"]), json.loads(row["params"]),
                          row["requester"], json.loads(row["owner"]), row["created_at"], row["finished_at"],
                          row["status"], row["reason"],
                          bool(row["cancelled"]), row["schedule"], tuple(steps))


def _forget_workflow(conn: Conn, workflow_id: str) -> None:
    """Delete a finished workflow, its steps and the finished jobs they ran."""
    for (job_id,) in conn.execute("SELECT id FROM jobs WHERE workflow_id = ? AND finished_at IS NOT NULL",
                                  (workflow_id,)).fetchall():  # one reopened by retryjob stays, on its own
        _forget_job(conn, job_id)
    conn.execute("DELETE FROM workflow_steps WHERE workflow_id = ?", (workflow_id,))
    conn.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))


def _without_values(request: bytes, keys: Collection[str] | None = None) -> bytes:
    """A step's request with the values of these parameters (None: all) blanked, their
    keys kept."""
    from orchestra.wire import audience_pb2  # only workflows need it

    message = audience_pb2.SubmitRequest.FromString(request)
    for key in list(message.params):
        if keys is None or key.upper() in keys:
            message.params[key] = ""
    return message.SerializeToString()


def _schedule(row: Row) -> ScheduleRecord:
    return ScheduleRecord(row["name"], json.loads(row["owner"]), row["cron"], row["missed"], bool(row["overlap"]),
                          bool(row["paused"]), row["kind"], bytes(row["request"]), row["created_at"],
                          row["next_at"], row["last_at"], row["last_id"], row["last_error"])


def list_sql(match: JobFilter, before: tuple[float, str] | None) -> tuple[str, tuple[object, ...]]:
    """The query of a job listing (its LIMIT the last argument, left to the caller):
    newest first along an index, so it reads only as many rows as it returns when the
    filter names one target (job_targets), a label (job_labels), one state, a score, a
    name or a requester; other filters (several states or targets, more labels, --since)
    are checked on the rows it walks."""
    where: list[str] = []
    args: list[object] = []
    labels = list(match.labels)
    if len(match.targets) == 1:
        source, key = "job_targets AS t JOIN jobs ON jobs.id = t.job_id", "t.created_at, t.job_id"
        where.append("t.target = ?")
        args += match.targets
    elif labels:
        source, key = "job_labels AS l JOIN jobs ON jobs.id = l.job_id", "l.created_at, l.job_id"
        where.append("l.key = ? AND l.value = ?")
        args += labels.pop(0)
    else:
        source, key = "jobs", "jobs.created_at, jobs.id"
    if len(match.targets) > 1:
        where.append("EXISTS (SELECT 1 FROM job_targets AS o WHERE o.target IN"
                     f" ({','.join('?' * len(match.targets))}) AND o.created_at = jobs.created_at"
                     " AND o.job_id = jobs.id)")
        args += match.targets
    for label in labels:
        where.append("EXISTS (SELECT 1 FROM job_labels AS o WHERE o.key = ? AND o.value = ?"
                     " AND o.created_at = jobs.created_at AND o.job_id = jobs.id)")
        args += label
    if len(match.statuses) == 1:
        where.append("jobs.status = ?")
        args += match.statuses
    elif match.statuses:  # '+': several states are read in creation order, not sorted
        where.append(f"+jobs.status IN ({','.join('?' * len(match.statuses))})")
        args += sorted(match.statuses)
    if match.score is not None:
        where.append("jobs.score = ?")
        args.append(match.score)
    if match.name is not None:
        where.append("jobs.name = ?")
        args.append(match.name)
    if match.requesters:
        where.append(f"jobs.requester IN ({','.join('?' * len(match.requesters))})")
        args += match.requesters
    if match.since is not None:
        where.append("jobs.created_at >= ?")
        args.append(match.since)
    if before is not None:
        where.append(f"({key}) < (?, ?)")
        args += before
    order = ", ".join(f"{column} DESC" for column in key.split(", "))
    return ("SELECT jobs.id, jobs.score, jobs.scope, jobs.targets, jobs.params, jobs.requester,"
            " jobs.created_at, jobs.finished_at, jobs.status, jobs.name, jobs.labels, jobs.priority, jobs.phase,"
            " jobs.workflow_id, jobs.step"
            f" FROM {source} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order} LIMIT ?"), tuple(args)


def _queued(row: Row, targets: tuple[str, ...]) -> QueuedTask:
    return QueuedTask(row["id"], row["scope"], row["player"], targets if row["scope"] == "one" else (),
                      tuple(json.loads(row["tried"])), row["deadline_at"], row["created_at"], row["priority"],
                      row["not_before"], row["score"])


class SqlStore:
    """Every verb, over a :class:`Database` whose schema a backend has installed."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def close(self) -> None:
        self.db.close()

    def stats(self) -> dict[str, int]:
        return {"commits": self.db.commits, "writes": self.db.writes}

    # ---- jobs ------------------------------------------------------------------------

    async def submit(self, job: NewJob) -> Submitted:
        return await self.db.write(lambda conn: _insert_job(conn, job))

    async def find_keyed(self, requester: str, key: str) -> KeyedJob | None:
        def op(conn: Conn) -> KeyedJob | None:
            return _keyed(conn, schema.scoped_key(requester, key))
        return await self.db.run(op, self.db.conn)

    async def get_job(self, job_id: str) -> JobRecord | None:
        def op(conn: Conn) -> JobRecord | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            history: dict[str, list[AttemptRecord]] = {}
            for attempt in conn.execute("SELECT * FROM task_attempts WHERE task_id IN"
                                        " (SELECT id FROM tasks WHERE job_id = ? AND retries > 0)"
                                        " ORDER BY task_id, seq", (job_id,)):
                history.setdefault(attempt["task_id"], []).append(_attempt(attempt))
            tasks = [_task(r, history.get(r["id"], ())) for r in
                     conn.execute("SELECT * FROM tasks WHERE job_id = ? ORDER BY rowid", (job_id,))]
            return _job(row, tasks)
        return await self.db.run(op, self.db.conn)

    async def purge_finished(self, before: float) -> int:
        def op(conn: Conn) -> int:
            # A step's job stays while its workflow runs: later steps may read its response.
            old = conn.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM workflows AS w WHERE w.id = jobs.workflow_id AND w.finished_at IS NULL)"
                " LIMIT 10000", (before,)).fetchall()
            for row in old:
                _forget_job(conn, row[0])
            flows = conn.execute("SELECT id FROM workflows WHERE finished_at IS NOT NULL AND finished_at < ?"
                                 " LIMIT 1000", (before,)).fetchall()
            for row in flows:
                _forget_workflow(conn, row[0])
            return len(old) + len(flows)
        return await self.db.write(op)

    async def delete_job(self, job_id: str) -> bool | None:
        """Forget one finished job and its history. None: no such job; False: not finished."""
        def op(conn: Conn) -> bool | None:
            row = conn.execute("SELECT finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] is None:
                return False
            _forget_job(conn, job_id)
            return True
        return await self.db.write(op)

    async def open_jobs(self) -> list[OpenJob]:
        """Every job not finished yet, with its deadline, rollout and the score's limits."""
        def op(conn: Conn) -> list[OpenJob]:
            return [OpenJob(r["id"], r["deadline_at"], r["score"], _rollout(r), r["phase"], _rules(r))
                    for r in conn.execute("SELECT * FROM jobs WHERE finished_at IS NULL")]
        return await self.db.run(op, self.db.conn)

    async def in_flight(self) -> list[InFlight]:
        def op(conn: Conn) -> list[InFlight]:
            in_flight, names = _in_cached("state", states.IN_FLIGHT)
            return [InFlight(r[0], r[1], r[2]) for r in conn.execute(
                f"SELECT id, job_id, player FROM tasks WHERE {in_flight}", names)]
        return await self.db.run(op, self.db.conn)

    async def list_jobs(self, match: JobFilter, limit: int,
                        before: tuple[float, str] | None = None) -> list[JobSummary]:
        sql, args = list_sql(match, before)

        def op(conn: Conn) -> list[JobSummary]:
            return [JobSummary(r["id"], r["score"], r["scope"], tuple(json.loads(r["targets"])),
                               json.loads(r["params"]), r["requester"], r["created_at"], r["finished_at"],
                               r["status"], {}, r["name"], json.loads(r["labels"]), r["priority"], r["phase"],
                               r["workflow_id"], r["step"])
                    for r in conn.execute(sql, (*args, limit))]
        return await self.db.run(op, self.db.conn)

    async def task_counts(self, job_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        def op(conn: Conn) -> dict[str, dict[TaskState, int]]:
            counts: dict[str, dict[TaskState, int]] = {job_id: {} for job_id in job_ids}
            for start in range(0, len(job_ids), 500):  # under SQLite's limit on parameters
                chunk = job_ids[start:start + 500]
                for job_id, state, count in conn.execute(
                        f"SELECT job_id, state, COUNT(*) FROM tasks WHERE job_id IN ({','.join('?' * len(chunk))})"
                        " GROUP BY job_id, state", tuple(chunk)):
                    counts[job_id][TaskState(state)] = count
            return counts
        return await self.db.run(op, self.db.conn)

    async def job_progress(self, job_id: str, slowest: int = 5) -> JobProgress | None:
        in_flight, names = _in_cached("state", states.OPEN)

        def op(conn: Conn) -> JobProgress | None:
            job = conn.execute("SELECT created_at, finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                return None
            counts = {TaskState(state): count for state, count in conn.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY state", (job_id,))}
            waiting = conn.execute(
                "SELECT player, state, COALESCE(started_at, dispatched_at, ?) AS since FROM tasks"
                f" WHERE job_id = ? AND {in_flight} ORDER BY since, rowid LIMIT ?",
                (job["created_at"], job_id, *names, slowest))
            return JobProgress(job_id, job["created_at"], job["finished_at"] is not None, counts,
                               tuple(PendingTask(r["player"], TaskState(r["state"]), r["since"]) for r in waiting))
        return await self.db.run(op, self.db.conn)

    # ---- reading tasks ---------------------------------------------------------------

    async def task(self, task_id: str) -> TaskRecord | None:
        def op(conn: Conn) -> TaskRecord | None:
            row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return _task(row) if row else None
        return await self.db.run(op, self.db.conn)

    async def tasks_of(self, player: str, wanted: Iterable[TaskState]) -> list[TaskRecord]:
        in_wanted, names = _in("state", wanted)

        def op(conn: Conn) -> list[TaskRecord]:
            rows = conn.execute(f"SELECT * FROM tasks WHERE player = ? AND {in_wanted}", (player, *names))
            return [_task(r) for r in rows]
        return await self.db.run(op, self.db.conn)

    async def queued(self) -> list[QueuedTask]:
        """Every queued task, oldest first: what dispatch's index is rebuilt from. Each
        job's target list is decoded once, and only for one-of jobs."""
        def op(conn: Conn) -> list[QueuedTask]:
            rows = conn.execute(
                "SELECT t.id, t.job_id, j.scope, t.player, t.tried, j.deadline_at, j.created_at, j.priority,"
                " t.not_before, j.score FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.state = 'queued'"
                " ORDER BY j.created_at, t.rowid")
            targets: dict[str, tuple[str, ...]] = {}
            result = []
            for row in rows:
                if row["scope"] == "one" and row["job_id"] not in targets:
                    found = conn.execute("SELECT targets FROM jobs WHERE id = ?", (row["job_id"],)).fetchone()
                    targets[row["job_id"]] = tuple(json.loads(found[0]))
                result.append(_queued(row, targets.get(row["job_id"], ())))
            return result
        return await self.db.run(op, self.db.conn)

    async def open_task_counts(self) -> dict[TaskState, int]:
        def op(conn: Conn) -> dict[TaskState, int]:
            counts = dict.fromkeys(sorted(states.OPEN), 0)
            # Literal states, not parameters: only then can SQLite read the partial index.
            for state, count in conn.execute(f"SELECT state, COUNT(*) FROM tasks WHERE {schema.IS_OPEN}"
                                             " GROUP BY state"):
                counts[TaskState(state)] = count
            return counts
        return await self.db.run(op, self.db.conn)

    async def players_with(self, state: TaskState) -> list[str]:
        def op(conn: Conn) -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT player FROM tasks WHERE state = ? AND player IS NOT NULL", (state.value,))]
        return await self.db.run(op, self.db.conn)

    # ---- moving tasks ----------------------------------------------------------------

    async def claim(self, task_id: str, player: str) -> Claimed | None:
        claimed = await self.claim_many([(task_id, player)])
        return claimed[0] if claimed else None

    async def claim_many(self, pairs: Sequence[tuple[str, str]]) -> list[Claimed]:
        """queued -> dispatched, for each (task, player) still queued; one commit for all."""
        def op(conn: Conn) -> list[Claimed]:
            claimed = []
            jobs: dict[str, Row] = {}
            now = time.time()
            for tid, player in pairs:
                row = conn.execute("SELECT state, attempt, job_id FROM tasks WHERE id = ?", (tid,)).fetchone()
                if row is None or row["state"] != TaskState.QUEUED:
                    continue
                job = jobs.get(row["job_id"])
                if job is None:
                    job = jobs[row["job_id"]] = conn.execute(
                        "SELECT score, params, requester, deadline_at FROM jobs WHERE id = ?",
                        (row["job_id"],)).fetchone()
                attempt = row["attempt"] + 1
                _move(conn, tid, row["job_id"], TaskState.QUEUED, TaskState.DISPATCHED, f"sent to {player}",
                      player=player, attempt=attempt, dispatched_at=now, not_before=None)
                claimed.append(Claimed(tid, row["job_id"], attempt, player, job["score"],
                                       json.loads(job["params"]), job["requester"], job["deadline_at"]))
            return claimed
        return await self.db.write(op)

    async def transition(self, task_id: str, new: TaskState, *, detail: str,
                         expect_attempt: int | None = None, expect_player: str | None = None,
                         expect_state: TaskState | None = None,
                         outcome: TaskOutcome | None = None) -> Change:
        """Returns applied=False instead of raising when the task has moved on (a stale or
        duplicate message) or the move is not allowed from where it now stands. An
        outcome without a start time keeps the one recorded at the grant."""
        columns = {} if outcome is None else _outcome_columns(outcome)
        if outcome is not None and outcome.started_at is None:
            del columns["started_at"]

        def op(conn: Conn) -> Change:
            row = conn.execute("SELECT job_id, state, attempt, player FROM tasks WHERE id = ?",
                               (task_id,)).fetchone()
            if row is None:
                return Change(False, "", task_id=task_id)
            old = TaskState(row["state"])
            found = {"task_id": task_id, "player": row["player"], "attempt": row["attempt"]}
            stale = ((expect_attempt is not None and row["attempt"] != expect_attempt)
                     or (expect_player is not None and row["player"] != expect_player)
                     or (expect_state is not None and old != expect_state))
            if stale or not states.allowed(old, new) or (old.terminal and new == TaskState.QUEUED):
                return Change(False, row["job_id"], state=old, **found)
            _move(conn, task_id, row["job_id"], old, new, detail, **columns)
            if not new.terminal:
                return Change(True, row["job_id"], False, new, **found)
            job = conn.execute(f"SELECT {_ENDING_COLUMNS} FROM jobs WHERE id = ?", (row["job_id"],)).fetchone()
            queued = _retry_automatically(conn, job, task_id, old, new)
            if queued is not None:
                return Change(True, row["job_id"], False, TaskState.QUEUED, **found, queued=queued, ended=new)
            phase, skipped = _after_endings(conn, job, [(task_number(task_id), new)])
            return Change(True, row["job_id"], _finish_job_if_done(conn, row["job_id"]), new, **found,
                          phase=phase, skipped=skipped)
        return await self.db.write(op)

    async def requeue(self, task: TaskRef, *, detail: str, one_of_only: bool = False,
                      refused_by: str | None = None) -> Change:
        """A one-of task also loses its player, so any target may take it next; refused_by
        adds that target to the ones not to try again, and nothing is requeued when no
        target is left. Not applied when the task moved on, or (one_of_only) is all-of."""
        def op(conn: Conn) -> Change:
            row = conn.execute(
                "SELECT t.id, t.job_id, t.state, t.attempt, t.player, t.tried, j.scope, j.targets,"
                " j.deadline_at, j.created_at, j.priority, j.score, j.phase, j.phase_reason"
                " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?", (task.task_id,)).fetchone()
            if (row is None or row["state"] != TaskState.DISPATCHED or row["attempt"] != task.attempt
                    or row["player"] != task.player):
                return Change(False, row["job_id"] if row else "", task_id=task.task_id)
            one_of = row["scope"] == "one"
            if one_of_only and not one_of:
                return Change(False, row["job_id"], task_id=task.task_id)
            columns: dict[str, object] = {"player": None} if one_of else {}
            tried = json.loads(row["tried"])
            if refused_by is not None:
                tried.append(refused_by)
                if all(target in tried for target in json.loads(row["targets"])):
                    return Change(False, row["job_id"], task_id=task.task_id)
                columns["tried"] = json.dumps(tried)
            _move(conn, task.task_id, row["job_id"], TaskState.DISPATCHED, TaskState.QUEUED, detail, **columns)
            if row["phase"] == rollout.STOPPED:  # never started, and its rollout starts nothing more
                reason = f"rollout stopped: {row['phase_reason']}"
                _move(conn, task.task_id, row["job_id"], TaskState.QUEUED, TaskState.SKIPPED, reason,
                      **_outcome_columns(TaskOutcome.ended(reason, time.time())))
                return Change(True, row["job_id"], _finish_job_if_done(conn, row["job_id"]), TaskState.SKIPPED,
                              task_id=task.task_id, player=row["player"], attempt=row["attempt"])
            queued = QueuedTask(task.task_id, row["scope"], None if one_of else row["player"],
                                tuple(json.loads(row["targets"])) if one_of else (), tuple(tried),
                                row["deadline_at"], row["created_at"], row["priority"], None, row["score"])
            return Change(True, row["job_id"], state=TaskState.QUEUED, task_id=task.task_id,
                          player=queued.player, attempt=row["attempt"], queued=queued)
        return await self.db.write(op)

    async def expire_due(self, now: float, job_ids: Collection[str] | None = None) -> Expiry:
        """Not started means queued, or dispatched without a start grant: nothing ran.
        The dispatched ones come back in ``dropped``: their players must forget them.
        With job_ids, only those jobs are looked at (the deadline heap names them)."""
        def op(conn: Conn) -> Expiry:
            reason = "job deadline passed before the task started"
            columns = _outcome_columns(TaskOutcome.ended(reason, now))
            unstarted, names = _in("t.state", states.UNSTARTED)
            select = ("SELECT t.id, t.job_id, t.state, t.attempt, t.player FROM tasks t"
                      f" JOIN jobs j ON j.id = t.job_id WHERE {unstarted} AND j.deadline_at <= ?")
            if job_ids is None:
                rows = conn.execute(select, (*names, now)).fetchall()
            else:
                rows = [row for job_id in dict.fromkeys(job_ids)
                        for row in conn.execute(select + " AND t.job_id = ?", (*names, now, job_id))]
            for row in rows:
                _move(conn, row["id"], row["job_id"], TaskState(row["state"]), TaskState.EXPIRED, reason,
                      **columns)
            dropped = tuple(TaskRef(row["id"], row["player"], row["attempt"]) for row in rows
                            if row["state"] == TaskState.DISPATCHED)
            changes = []
            for job_id in dict.fromkeys(row["job_id"] for row in rows):
                job = conn.execute(f"SELECT {_ENDING_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
                phase, skipped = _after_endings(conn, job, [(task_number(row["id"]), TaskState.EXPIRED)
                                                            for row in rows if row["job_id"] == job_id])
                changes.append(Change(True, job_id, _finish_job_if_done(conn, job_id), phase=phase,
                                      skipped=skipped))
            return Expiry(tuple(changes), dropped, tuple(row["id"] for row in rows))
        return await self.db.write(op)

    async def retry(self, job_id: str, wanted: Collection[TaskState]) -> Retried:
        """Queue the job's tasks that ended in one of ``wanted`` (each in states.RETRYABLE)
        again as new attempts, in one commit: their endings are kept as history, a
        finished job is open again (with a new deadline as long as its first, counted
        from now, when the old one has passed), and a rollout resumes with a fresh failure
        budget. Refused (with why) when there is nothing to retry, or when the job
        finished with secret parameters (their values are forgotten by then)."""
        def op(conn: Conn) -> Retried:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                return Retried(job_id, refused="no such job")
            chosen, names = _in("state", wanted)
            rows = conn.execute(f"SELECT id, state FROM tasks WHERE job_id = ? AND {chosen} ORDER BY rowid",
                                (job_id, *names)).fetchall()
            shown = ", ".join(sorted(str(state) for state in wanted))
            if not rows:
                return Retried(job_id, refused=f"job {job_id} has no tasks that ended {shown}")
            if job["finished_at"] is not None and json.loads(job["secret_keys"]):
                return Retried(job_id, refused=f"job {job_id} finished, and its secret parameters were forgotten"
                                               " then; submit it again")
            plan = _rollout(job)
            if plan.canary:  # a canary that did not succeed and is not retried would hold the rest for ever
                chosen_ids = {row["id"] for row in rows}
                for task_id, state in conn.execute(
                        "SELECT id, state FROM tasks WHERE job_id = ? AND state != 'ok' AND"
                        " CAST(substr(id, 34) AS INTEGER) < ?", (job_id, plan.canary)):
                    if task_id not in chosen_ids and TaskState(state).terminal:
                        return Retried(job_id, refused=f"canary task {task_number(task_id)} of job {job_id} ended"
                                                       f" {state} and would not be retried: retry it too"
                                                       f" (retryjob --{state.replace('_', '-')})")
            now = time.time()
            deadline = job["deadline_at"]
            if deadline <= now:
                deadline = now + max(60.0, job["deadline_at"] - job["created_at"])
            conn.execute("UPDATE jobs SET finished_at = NULL, status = 'pending', deadline_at = ? WHERE id = ?",
                         (deadline, job_id))
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            queued = tuple(_queued_again(conn, row["id"], job, TaskState(row["state"]), "retried by request",
                                         None) for row in rows)
            phase = ""
            if job["phase"]:
                canary_left = conn.execute(
                    "SELECT COUNT(*) FROM tasks WHERE job_id = ? AND state != 'ok' AND"
                    " CAST(substr(id, 34) AS INTEGER) < ?", (job_id, plan.canary)).fetchone()[0]
                standing = rollout.after_retry(plan, canary_left)
                phase = standing.phase
                conn.execute("UPDATE jobs SET phase = ?, canary_left = ?, failures = 0, phase_reason = ''"
                             " WHERE id = ?", (phase, canary_left, job_id))
            in_flight, names = _in_cached("state", states.IN_FLIGHT)
            flying = tuple(r[0] for r in conn.execute(f"SELECT id FROM tasks WHERE job_id = ? AND {in_flight}",
                                                      (job_id, *names)))
            counts = {TaskState(state): count for state, count in conn.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY state", (job_id,))}
            return Retried(job_id, queued, deadline, phase, _rollout(job), job["score"], _rules(job),
                           in_flight=flying, counts=counts)
        return await self.db.write(op)

    # ---- drains ----------------------------------------------------------------------

    # ---- workflows ---------------------------------------------------------------------

    async def submit_workflow(self, flow: NewWorkflow) -> WorkflowSubmitted:
        def op(conn: Conn) -> WorkflowSubmitted:
            key = schema.scoped_key(flow.requester, flow.idempotency_key) if flow.idempotency_key else None
            if key is not None:
                row = conn.execute("SELECT id, request_digest FROM workflows WHERE idempotency_key = ?",
                                   (key,)).fetchone()
                if row is not None:
                    return WorkflowSubmitted(row[0], True, conflict=row[1] != flow.digest)
            workflow_id, now = "w" + new_job_id(), time.time()
            if flow.fires is not None and not _fired(conn, flow.fires, workflow_id, now):
                return WorkflowSubmitted("", False, stale=True)
            conn.execute("INSERT INTO workflows (id, name, labels, params, requester, owner, created_at,"
                         " idempotency_key, request_digest, schedule) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (workflow_id, flow.name, json.dumps(dict(flow.labels), sort_keys=True),
                          json.dumps(dict(flow.params), sort_keys=True), flow.requester,
                          json.dumps(dict(flow.owner), sort_keys=True), now, key, flow.digest, flow.schedule))
            conn.executemany("INSERT INTO workflow_steps (workflow_id, name, position, after, on_failure, request)"
                             " VALUES (?,?,?,?,?,?)",
                             [(workflow_id, step.name, n, json.dumps(list(step.after)), step.on_failure, step.request)
                              for n, step in enumerate(flow.steps)])
            return WorkflowSubmitted(workflow_id, False)
        return await self.db.write(op)

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        return await self.db.run(_workflow, self.db.conn, workflow_id)

    async def open_workflows(self) -> list[str]:
        def op(conn: Conn) -> list[str]:
            return [r[0] for r in conn.execute("SELECT id FROM workflows WHERE finished_at IS NULL ORDER BY id")]
        return await self.db.run(op, self.db.conn)

    async def settle_workflow(self, workflow_id: str, steps: Sequence[StepSettled],
                              finished: tuple[str, str] | None = None) -> bool:
        def op(conn: Conn) -> bool:
            row = conn.execute("SELECT finished_at FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
            if row is None or row[0] is not None:
                return False
            for step in steps:
                conn.execute("UPDATE workflow_steps SET state = ?, reason = ?, finished_at = ?"
                             " WHERE workflow_id = ? AND name = ? AND state IN ('waiting', 'running')",
                             (step.state, step.reason, step.finished_at, workflow_id, step.name))
            if finished is not None:
                # Values given for steps that never ran are needed no more: forget them (secrets).
                unused = [(r["name"], r["request"]) for r in conn.execute(
                    "SELECT name, request FROM workflow_steps WHERE workflow_id = ? AND job_id IS NULL",
                    (workflow_id,))]
                for name, request in unused:
                    conn.execute("UPDATE workflow_steps SET request = ? WHERE workflow_id = ? AND name = ?",
                                 (_without_values(bytes(request)), workflow_id, name))
                conn.execute("UPDATE workflows SET finished_at = ?, status = ?, reason = ?, params = '{}'"
                             " WHERE id = ?", (time.time(), finished[0], finished[1], workflow_id))
            return True
        return await self.db.write(op)

    async def cancel_workflow(self, workflow_id: str, reason: str) -> WorkflowRecord | None:
        """No step of the workflow starts any more: those waiting end cancelled."""
        def op(conn: Conn) -> WorkflowRecord | None:
            conn.execute("UPDATE workflows SET cancelled = 1 WHERE id = ? AND finished_at IS NULL", (workflow_id,))
            conn.execute("UPDATE workflow_steps SET state = 'cancelled', reason = ?, finished_at = ?"
                         " WHERE workflow_id = ? AND state = 'waiting' AND job_id IS NULL",
                         (reason, time.time(), workflow_id))
            return _workflow(conn, workflow_id)
        return await self.db.write(op)

    async def response_values(self, job_id: str, key: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` different values of ``key`` in the responses of the job's tasks
        that ended ok: read from the stored JSON, never whole responses."""
        def op(conn: Conn) -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT DISTINCT entry.value FROM tasks, json_each(tasks.response) AS entry"
                " WHERE tasks.job_id = ? AND tasks.state = 'ok' AND entry.key = ? LIMIT ?", (job_id, key, limit))]
        return await self.db.run(op, self.db.conn)

    # ---- schedules ---------------------------------------------------------------------

    async def add_schedule(self, schedule: ScheduleRecord) -> bool:
        """False: a schedule of that name exists."""
        def op(conn: Conn) -> bool:
            cur = conn.execute(
                "INSERT INTO schedules (name, owner, cron, missed, overlap, paused, kind, request,"
                " created_at, next_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (schedule.name, json.dumps(dict(schedule.owner), sort_keys=True), schedule.cron, schedule.missed,
                 int(schedule.overlap), int(schedule.paused), schedule.kind, schedule.request,
                 schedule.created_at, schedule.next_at))
            return cur.rowcount == 1
        return await self.db.write(op)

    async def schedules(self) -> list[ScheduleRecord]:
        def op(conn: Conn) -> list[ScheduleRecord]:
            return [_schedule(r) for r in conn.execute("SELECT * FROM schedules ORDER BY name")]
        return await self.db.run(op, self.db.conn)

    async def set_schedule(self, name: str, *, paused: bool | None = None, next_at: float | None = None,
                           remove: bool = False) -> ScheduleRecord | None:
        """Pause (next_at NULL), resume (at next_at) or remove a schedule; None: no such one."""
        def op(conn: Conn) -> ScheduleRecord | None:
            row = conn.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            if remove:
                conn.execute("DELETE FROM schedules WHERE name = ?", (name,))
                return _schedule(row)
            if paused is not None:
                conn.execute("UPDATE schedules SET paused = ?, next_at = ? WHERE name = ?",
                             (int(paused), None if paused else next_at, name))
            return _schedule(conn.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone())
        return await self.db.write(op)

    async def skip_run(self, fires: ScheduleFire, error: str) -> bool:
        """A run that was not submitted (refused, overlapping, missed): the schedule moves
        on to its next run, saying why; False when it was no longer due then."""
        def op(conn: Conn) -> bool:
            return conn.execute(
                "UPDATE schedules SET next_at = ?, last_error = ? WHERE name = ? AND next_at = ? AND paused = 0",
                (fires.next_at, error, fires.name, fires.due_at)).rowcount == 1
        return await self.db.write(op)

    async def drains(self) -> list[Drain]:
        def op(conn: Conn) -> list[Drain]:
            return [Drain(r["name"], r["at"], r["by"], r["reason"]) for r in
                    conn.execute("SELECT * FROM drains ORDER BY name")]
        return await self.db.run(op, self.db.conn)

    async def set_drains(self, names: Sequence[str], drained: bool, by: str, reason: str = "") -> list[Drain]:
        """Drain (or undrain) these hosts and @groups; returns every drain now."""
        def op(conn: Conn) -> list[Drain]:
            if drained:
                conn.executemany('INSERT INTO drains (name, at, "by", reason) VALUES (?,?,?,?) ON CONFLICT (name)'
                                 ' DO UPDATE SET at = excluded.at, "by" = excluded."by", reason = excluded.reason',
                                 [(name, time.time(), by, reason) for name in names])
            else:
                conn.executemany("DELETE FROM drains WHERE name = ?", [(name,) for name in names])
            return [Drain(r["name"], r["at"], r["by"], r["reason"]) for r in
                    conn.execute("SELECT * FROM drains ORDER BY name")]
        return await self.db.write(op)

    # ---- players ---------------------------------------------------------------------

    async def record_player(self, player: PlayerRecord) -> None:
        def op(conn: Conn) -> None:
            conn.execute("INSERT INTO players (name, last_seen, scores, max_concurrent, cert_not_after,"
                         " cert_issuer, cert_serial) VALUES (?,?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET"
                         " last_seen = excluded.last_seen, scores = excluded.scores,"
                         " max_concurrent = excluded.max_concurrent, cert_not_after = excluded.cert_not_after,"
                         " cert_issuer = excluded.cert_issuer, cert_serial = excluded.cert_serial",
                         (player.name, player.last_seen, encode_inventory(player.inventory),
                          player.max_concurrent, player.cert_not_after, player.cert_issuer,
                          f"{player.cert_serial:x}"))
        await self.db.write(op)

    async def players(self) -> dict[str, PlayerRecord]:
        def op(conn: Conn) -> dict[str, PlayerRecord]:
            return {row["name"]: _player(row) for row in conn.execute("SELECT * FROM players")}
        return await self.db.run(op, self.db.conn)
