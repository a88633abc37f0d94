"""The SQLite layout of the conductor's queue, and its upgrades from earlier versions.

Column names of the outcome are the field names of :class:`orchestra.outcome.TaskOutcome`;
the state guard trigger is built from :mod:`conductor.states`, so the database itself
refuses any transition the state table does not allow.
"""

from __future__ import annotations

import json
import sqlite3
import time

from conductor import states
from orchestra.db import Conn, Transaction
from orchestra.errors import StartupError

SCHEMA_VERSION = 7
# The partial index's WHERE must be a literal: the open states, quoted. A query uses the
# index only when its own WHERE spells the same literal (IS_OPEN), not bound parameters.
_OPEN = ", ".join(f"'{state.value}'" for state in sorted(states.OPEN))
IS_OPEN = f"state IN ({_OPEN})"

# Each job under each of its targets, newest last: listjobs --target walks it in order.
JOB_TARGETS_TABLE = """CREATE TABLE IF NOT EXISTS job_targets (
        target TEXT NOT NULL,
        created_at REAL NOT NULL,
        job_id TEXT NOT NULL,
        PRIMARY KEY (target, created_at, job_id)
    ) WITHOUT ROWID"""

# Version 6: names, labels and priorities of jobs, rollouts, retries, the score's limits,
# and drained hosts. Columns added to jobs and tasks (also by _upgrade_from_5).
JOB_COLUMNS_6 = """name TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}' /* JSON object */,
        priority INTEGER NOT NULL DEFAULT 0,
        canary INTEGER NOT NULL DEFAULT 0 /* the first N tasks run first, and must all succeed */,
        batch INTEGER NOT NULL DEFAULT 0 /* at most N tasks in progress at once; 0 = any */,
        max_failures INTEGER /* stop starting tasks after N failed; NULL = never */,
        phase TEXT NOT NULL DEFAULT '' /* '' (no rollout), canary, rolling, stopped, done */,
        phase_reason TEXT NOT NULL DEFAULT '',
        failures INTEGER NOT NULL DEFAULT 0 /* tasks that failed for good (states.FAILURES) */,
        canary_left INTEGER NOT NULL DEFAULT 0 /* canary tasks that have not succeeded yet */,
        retries INTEGER NOT NULL DEFAULT 0 /* the score's automatic retries per task */,
        retry_delay REAL NOT NULL DEFAULT 0,
        concurrency INTEGER NOT NULL DEFAULT 0 /* the score's fleet-wide limit; 0 = none */,
        exclusive INTEGER NOT NULL DEFAULT 0 /* the score runs once at a time per host */"""
TASK_COLUMNS_6 = """retries INTEGER NOT NULL DEFAULT 0 /* times it was queued again after an ending */,
        not_before REAL /* a retry waits until then */"""
# Each job under each of its labels, newest last: listjobs --label walks it in order.
TABLES_6 = """CREATE TABLE IF NOT EXISTS job_labels (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at REAL NOT NULL,
        job_id TEXT NOT NULL,
        PRIMARY KEY (key, value, created_at, job_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs(name, created_at, id);
    -- every earlier attempt of a retried task, as it ended
    CREATE TABLE IF NOT EXISTS task_attempts (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL /* the task's retries before this ending was queued again */,
        attempt INTEGER NOT NULL,
        player TEXT,
        state TEXT NOT NULL,
        outcome BLOB NOT NULL /* orchestra.v1.TaskOutcome */,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    -- hosts and @groups that get no new tasks
    CREATE TABLE IF NOT EXISTS drains (
        name TEXT PRIMARY KEY,
        at REAL NOT NULL,
        by TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    );"""

# Version 7: workflows (their steps are jobs) and schedules.
JOB_COLUMNS_7 = """workflow_id TEXT /* the workflow this job is a step of */,
        step TEXT NOT NULL DEFAULT ''"""
TABLES_7 = """CREATE TABLE IF NOT EXISTS workflows (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}' /* JSON object */,
        params TEXT NOT NULL DEFAULT '{}' /* JSON object: {{ params.KEY }}; emptied once finished */,
        requester TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '{}' /* JSON: the requester, as its steps are checked against the policy */,
        created_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL DEFAULT 'pending' /* then ok, failed or cancelled */,
        reason TEXT NOT NULL DEFAULT '',
        cancelled INTEGER NOT NULL DEFAULT 0 /* cancel requested: no step starts any more */,
        idempotency_key TEXT UNIQUE /* scoped_key(requester, key) */,
        request_digest TEXT NOT NULL DEFAULT '',
        schedule TEXT NOT NULL DEFAULT '' /* the schedule whose run this is */
    );
    CREATE INDEX IF NOT EXISTS workflows_by_finished ON workflows(finished_at);
    CREATE INDEX IF NOT EXISTS workflows_open ON workflows(id) WHERE finished_at IS NULL;
    CREATE TABLE IF NOT EXISTS workflow_steps (
        workflow_id TEXT NOT NULL REFERENCES workflows(id),
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        after TEXT NOT NULL DEFAULT '[]' /* JSON list of step names */,
        on_failure TEXT NOT NULL CHECK (on_failure IN ('stop', 'continue')),
        request BLOB NOT NULL /* orchestra.v1.SubmitRequest, params may hold templates */,
        state TEXT NOT NULL DEFAULT 'waiting'
            CHECK (state IN ('waiting', 'running', 'ok', 'failed', 'partial_fail', 'skipped', 'cancelled')),
        reason TEXT NOT NULL DEFAULT '',
        job_id TEXT UNIQUE /* set once, in the commit of the job it started */,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (workflow_id, name)
    ) WITHOUT ROWID;
    -- a step starts once: its job is set only while it waits (the store's verbs check it too)
    CREATE TRIGGER IF NOT EXISTS step_start_guard BEFORE UPDATE OF job_id ON workflow_steps
    WHEN OLD.job_id IS NOT NULL AND NEW.job_id IS NOT OLD.job_id
    BEGIN SELECT RAISE(ABORT, 'a workflow step starts once'); END;
    CREATE TABLE IF NOT EXISTS schedules (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL /* JSON: the requester it runs as */,
        cron TEXT NOT NULL,
        missed TEXT NOT NULL CHECK (missed IN ('skip', 'once')),
        overlap INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        kind TEXT NOT NULL CHECK (kind IN ('job', 'workflow')),
        request BLOB NOT NULL /* orchestra.v1.SubmitRequest or WorkflowRequest */,
        created_at REAL NOT NULL,
        next_at REAL /* the next run; NULL while paused */,
        last_at REAL,
        last_id TEXT NOT NULL DEFAULT '',
        last_error TEXT NOT NULL DEFAULT ''
    );"""

TABLES = f"""
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        score TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('all', 'one')),
        targets TEXT NOT NULL,              -- JSON list of certnames
        params TEXT NOT NULL,               -- JSON object; secrets redacted once finished
        secret_keys TEXT NOT NULL,          -- JSON list
        requester TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline_at REAL NOT NULL,
        idempotency_key TEXT UNIQUE,       -- scoped_key(requester, key): keys are per requester
        finished_at REAL,
        open_tasks INTEGER NOT NULL DEFAULT 0, -- tasks not ended yet: 0 means finished
        request_digest TEXT /* NewJob.digest, when it has an idempotency key */,
        status TEXT NOT NULL DEFAULT 'pending' /* then ok, failed or partial_fail */,
        {JOB_COLUMNS_6},
        {JOB_COLUMNS_7}
        /* Block comments here: SQLite's DROP COLUMN of the last column trips over a
           line comment after the comma before it. */
    );
    CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        player TEXT,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        tried TEXT NOT NULL DEFAULT '[]',   -- JSON list of one-of targets that refused
        dispatched_at REAL,
        -- the outcome (orchestra.outcome.TaskOutcome), one column per field
        exit_code INTEGER,
        signal INTEGER NOT NULL DEFAULT 0,
        response TEXT NOT NULL DEFAULT '{{}}',
        response_truncated INTEGER NOT NULL DEFAULT 0,
        stdout BLOB NOT NULL DEFAULT x'',
        stderr BLOB NOT NULL DEFAULT x'',
        stdout_truncated INTEGER NOT NULL DEFAULT 0,
        stderr_truncated INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL,
        {TASK_COLUMNS_6}
    );
    CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);
    CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs(finished_at);
    -- listjobs: newest first, overall, per requester (--mine), score, status and target
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created_at, id);
    CREATE INDEX IF NOT EXISTS jobs_by_requester ON jobs(requester, created_at, id);
    CREATE INDEX IF NOT EXISTS jobs_by_score ON jobs(score, created_at, id);
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, created_at, id);
    {JOB_TARGETS_TABLE};
    {TABLES_6}
    {TABLES_7}
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
        scores BLOB NOT NULL,               -- orchestra.v1.Inventory
        max_concurrent INTEGER NOT NULL,
        cert_not_after REAL NOT NULL,
        cert_issuer BLOB NOT NULL DEFAULT x'',  -- DER of the issuer of its last certificate
        cert_serial TEXT NOT NULL DEFAULT '0'   -- and its serial, hex (serials exceed 64 bits)
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
"""
OPEN_INDEX = f"CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state) WHERE {IS_OPEN}"


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 kept a cancel request in a side column and dropped response_truncated."""
    conn.execute("ALTER TABLE tasks ADD COLUMN response_truncated INTEGER NOT NULL DEFAULT 0")
    now = time.time()
    conn.execute("INSERT INTO task_events (task_id, at, from_state, to_state, attempt, player, detail)"
                 " SELECT id, ?, 'running', 'cancelling', attempt, player, 'cancel requested (queue upgraded)'"
                 " FROM tasks WHERE state = 'running' AND cancel_requested = 1", (now,))
    conn.execute("UPDATE tasks SET state = 'cancelling', updated_at = ?"
                 " WHERE state = 'running' AND cancel_requested = 1", (now,))
    if sqlite3.sqlite_version_info >= (3, 35, 0):  # older SQLite cannot drop a column: it stays unused
        conn.execute("ALTER TABLE tasks DROP COLUMN cancel_requested")
    conn.execute("DROP INDEX IF EXISTS tasks_open")


def _upgrade_from_2(conn: sqlite3.Connection) -> None:
    """Version 3 counts each job's open tasks, so a transition need not count them."""
    conn.execute("ALTER TABLE jobs ADD COLUMN open_tasks INTEGER NOT NULL DEFAULT 0")
    is_open = ", ".join("?" * len(states.OPEN))
    conn.execute(f"UPDATE jobs SET open_tasks = (SELECT COUNT(*) FROM tasks WHERE tasks.job_id = jobs.id"
                 f" AND tasks.state IN ({is_open}))", tuple(sorted(states.OPEN)))


def scoped_key(requester: str, key: str) -> str:
    """An idempotency key as stored: one requester's key never finds another's job."""
    return json.dumps([requester, key], separators=(",", ":"))


def _upgrade_from_3(conn: sqlite3.Connection) -> None:
    """Version 4 scopes idempotency keys to their requester and remembers what each key
    was used for (keys of earlier jobs keep working, for their own requester), and keeps
    each player's last certificate (issuer, serial) to check against every new CRL."""
    conn.execute("ALTER TABLE jobs ADD COLUMN request_digest TEXT")
    players = {c[1] for c in conn.execute("PRAGMA table_info(players)")}
    if "cert_issuer" not in players:
        conn.execute("ALTER TABLE players ADD COLUMN cert_issuer BLOB NOT NULL DEFAULT x''")
        conn.execute("ALTER TABLE players ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '0'")
    rows = conn.execute("SELECT id, requester, idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL").fetchall()
    conn.executemany("UPDATE jobs SET idempotency_key = ? WHERE id = ?",
                     [(scoped_key(row[1], row[2]), row[0]) for row in rows])


def finished_status(conn: Conn, job_id: str) -> str:
    """A finished job's status, from its tasks' states (states.job_status)."""
    return states.job_status(states.TaskState(row[0]) for row in
                             conn.execute("SELECT state FROM tasks WHERE job_id = ?", (job_id,)))


def _upgrade_from_4(conn: sqlite3.Connection) -> None:
    """Version 5 keeps each job's status and an index of jobs by target, so listjobs
    filters on both from an index."""
    conn.execute("ALTER TABLE jobs ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'")
    done = [row[0] for row in conn.execute("SELECT id FROM jobs WHERE finished_at IS NOT NULL")]
    conn.executemany("UPDATE jobs SET status = ? WHERE id = ?",
                     [(finished_status(conn, job_id), job_id) for job_id in done])
    conn.execute(JOB_TARGETS_TABLE)
    conn.execute("INSERT OR IGNORE INTO job_targets (target, created_at, job_id)"
                 " SELECT json_each.value, jobs.created_at, jobs.id FROM jobs, json_each(jobs.targets)")


def _upgrade_from_5(conn: sqlite3.Connection) -> None:
    """Version 6: the columns of names, labels, priorities, rollouts, retries and the
    score's limits (every existing job has none of them), and the new tables."""
    for table, columns in (("jobs", JOB_COLUMNS_6), ("tasks", TASK_COLUMNS_6)):
        for column in columns.split(",\n"):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column.strip()}")


def _upgrade_from_6(conn: sqlite3.Connection) -> None:
    """Version 7: which workflow step a job is (none, for every existing job); the new
    tables are created by TABLES."""
    for column in JOB_COLUMNS_7.split(",\n"):
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column.strip()}")


def install(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema, then load the state table into the guard trigger."""
    with Transaction(conn):
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        columns = {c[1] for c in conn.execute("PRAGMA table_info(jobs)")} if row is not None else set()
        if row is not None and "open_tasks" not in columns:
            _upgrade_from_2(conn)  # CREATE TABLE IF NOT EXISTS never adds a column
        if row is not None and "request_digest" not in columns:
            _upgrade_from_3(conn)
        if row is not None and "status" not in columns:
            _upgrade_from_4(conn)
        if row is not None and "phase" not in columns:
            _upgrade_from_5(conn)
        if row is not None and "workflow_id" not in columns:
            _upgrade_from_6(conn)
    conn.executescript(TABLES)
    with Transaction(conn):
        conn.execute("DELETE FROM allowed_transitions")
        conn.executemany("INSERT INTO allowed_transitions VALUES (?, ?)", states.allowed_pairs())
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StartupError(f"the queue was written by a newer conductor (schema {version});"
                               f" this one reads up to schema {SCHEMA_VERSION}")
        if version == 1:
            _upgrade_from_1(conn)
        conn.execute(OPEN_INDEX)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
