"""The PostgreSQL backend of :class:`conductor.store.Store`: one queue for several conductors.

The verbs are the shared ones of :mod:`conductor.store.sql`, run on a connection adapter
that takes their SQLite SQL: ``?`` placeholders become psycopg's, and the two SQLite-only
expressions they use are rewritten (:func:`translate`). Rows read back by position and by
name, as ``sqlite3.Row`` does.

Durability is the database's: each group of writes is one transaction, and a caller
hears of its write only after COMMIT returned, which with ``synchronous_commit`` on (and
``fsync`` on: both checked at start) means the commit is in PostgreSQL's WAL on disk.

Fencing: with several conductors only the leader writes (conductor/leadership.py). Each
group transaction of the leader first reads the lease row ``FOR KEY SHARE`` and checks
its epoch is still the one it was granted. A standby takes the lease over only after
locking that row ``FOR UPDATE``, which waits for every transaction holding the key-share
lock; from then on each transaction of the old leader sees the new epoch and fails
before writing anything. So a deposed or frozen leader can never commit after losing the
lease. (The leader's renewals are plain UPDATEs, whose lock does not conflict with a key
share: a long write transaction never holds up a renewal.) A leader that is
fenced, or loses its connection (it then cannot know whether its last COMMIT landed),
hands the news to ``on_lost`` and steps down: its memory may differ from the queue, and
the next leader rebuilds from the database.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

from conductor import states
from conductor.store.schema import IS_OPEN, SCHEMA_VERSION
from conductor.store.sql import SqlStore
from orchestra import log
from orchestra.db import Cursor, Database, Unavailable
from orchestra.errors import StartupError

logger = log.get("conductor")
MIN_SERVER_VERSION = 140000  # CREATE OR REPLACE TRIGGER
# One lock for whoever lays out or upgrades the schema, so two conductors starting at
# once do not both create it.
SCHEMA_LOCK = 0x6F72636865737472  # "orchestr"


class Fenced(Unavailable):
    """This conductor's lease epoch is no longer the lease's: another conductor leads."""


# ---- the SQL adapter -------------------------------------------------------------------

# The SQLite-only expressions of conductor/store/sql.py and what PostgreSQL says instead.
REWRITES = (
    # the key/value pairs of a JSON object stored as text
    ("json_each(tasks.response) AS entry", "json_each_text(tasks.response::json) AS entry"),
    # SQLite's way of keeping its planner off an index; not an operator on text here
    ("+jobs.status IN", "jobs.status IN"),
)


@functools.lru_cache(maxsize=2048)
def translate(sql: str, with_args: bool) -> str:
    """The store's SQL as psycopg takes it. With arguments, a literal ``%`` is doubled and
    each ``?`` becomes ``%s`` (no statement of the store has a ``?`` inside a literal)."""
    for sqlite, postgresql in REWRITES:
        sql = sql.replace(sqlite, postgresql)
    if with_args:
        sql = sql.replace("%", "%%").replace("?", "%s")
    return sql


@functools.lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """A tuple type whose items are also read by column name, like sqlite3.Row."""
    index = {name: number for number, name in reversed(list(enumerate(names)))}

    class Row(tuple[Any, ...]):
        __slots__ = ()

        def __getitem__(self, key: Any) -> Any:
            if isinstance(key, str):
                return tuple.__getitem__(self, index[key])
            return tuple.__getitem__(self, key)

        def keys(self) -> list[str]:
            return list(names)
    return Row


def _rows(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    """psycopg's row factory: rows as :func:`_row_class` tuples."""
    description = cursor.description
    if description is None:
        return tuple
    return _row_class(tuple(column.name for column in description))


class PgConn:
    """A psycopg connection (autocommit: the store says BEGIN and COMMIT itself) that takes
    the store's SQL and raises :class:`Unavailable` when the database cannot be reached."""

    def __init__(self, raw: psycopg.Connection[Any], lost: Callable[[str], None]) -> None:
        self.raw = raw
        self._lost = lost

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        args = tuple(parameters) if parameters else None
        try:
            cursor: Cursor = self.raw.execute(translate(sql, args is not None), args)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            raise self._unavailable(err) from err
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        rows = [tuple(row) for row in parameters]
        cursor = self.raw.cursor()
        if rows:
            try:
                cursor.executemany(translate(sql, True), rows)
            except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                raise self._unavailable(err) from err
        return cursor

    def _unavailable(self, err: Exception) -> Unavailable:
        """The error as callers understand it; a lost connection is also said to ``lost``."""
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, Unavailable):
            return err
        if self.raw.closed or self.raw.broken:
            self._lost(f"lost the connection to the database: {text}")
        return Unavailable(f"database unavailable: {text}")

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


# ---- connections -----------------------------------------------------------------------

def connect(dsn: str, timeout: float, application: str) -> psycopg.Connection[Any]:
    """A connection that fails within ``timeout`` seconds when the server stops answering
    (connect, and TCP while connected), unless the dsn says otherwise. Errors never show
    the dsn (it may hold a password)."""
    conninfo = psycopg.conninfo.conninfo_to_dict(dsn)
    defaults: dict[str, Any] = {"connect_timeout": max(2, int(timeout)), "application_name": application,
                                "tcp_user_timeout": int(timeout * 1000), "keepalives": 1,
                                "keepalives_idle": max(1, int(timeout / 2)), "keepalives_interval": 1,
                                "keepalives_count": 3}
    for key, value in defaults.items():
        conninfo.setdefault(key, value)
    try:
        return psycopg.connect(psycopg.conninfo.make_conninfo("", **conninfo), autocommit=True,
                               row_factory=_rows)
    except psycopg.Error as err:
        raise StartupError(f"cannot connect to the PostgreSQL database: {_first_line(err)}") from None


def sever(raw: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down under a call that waits on it, which then fails
    at once (closing it would wait for that call)."""
    try:
        duplicate = socket.socket(fileno=os.dup(raw.pgconn.socket))
    except (OSError, psycopg.Error):
        return  # closed already
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def check_dsn(dsn: str) -> None:
    """A dsn libpq can parse; the error does not quote it."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # libpq's message may quote part of it: a password
        raise StartupError("[store] dsn: not a PostgreSQL connection string (libpq cannot parse it)") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_durable(raw: psycopg.Connection[Any]) -> None:
    """Refuse a server on which a COMMIT is not a promise: fsync or synchronous_commit off."""
    version = raw.info.server_version
    if version < MIN_SERVER_VERSION:
        raise StartupError(f"PostgreSQL {version // 10000} is too old: the queue needs 14 or later")
    for setting, unsafe in (("fsync", "off"), ("synchronous_commit", "off")):
        value = raw.execute(f"SHOW {setting}").fetchone()[0]  # type: ignore[index]
        if value == unsafe:
            raise StartupError(f"the PostgreSQL server has {setting} = {value}: a commit would not be durable,"
                               " and a job would be acknowledged before it is safe")


def store_application(epoch: int | None) -> str:
    """The application_name of a leader's store connection: by it, a conductor taking the
    lease over ends the connections of the leader it replaces (conductor/leadership.py)."""
    return "orchestra-conductor" if epoch is None else f"orchestra-conductor epoch {epoch}"


class PgDatabase(Database):
    """:class:`orchestra.db.Database`'s group commit on PostgreSQL, fenced by a lease
    epoch when given one (``None``: no lease is checked, for tools and tests)."""

    def __init__(self, dsn: str, *, epoch: int | None = None, on_lost: Callable[[str], None] | None = None,
                 timeout: float = 5.0) -> None:
        self.dsn, self.epoch, self.timeout = dsn, epoch, timeout
        self.on_lost = on_lost
        self.lost = ""
        super().__init__(Path("postgresql"))

    def _open(self) -> PgConn:
        raw = connect(self.dsn, self.timeout, store_application(self.epoch))
        try:
            check_durable(raw)
            # A transaction left open by a frozen conductor must not hold its locks (the
            # lease row's above all) for ever; nor may a write wait on a lock for ever.
            raw.execute(f"SET idle_in_transaction_session_timeout = {int(self.timeout * 1000)}")
            raw.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
            # And the server's side of this connection notices a vanished conductor as soon.
            for setting, value in (("tcp_keepalives_idle", max(1, int(self.timeout / 2))),
                                   ("tcp_keepalives_interval", 1), ("tcp_keepalives_count", 3),
                                   ("tcp_user_timeout", int(self.timeout * 1000))):
                raw.execute(f"SET {setting} = {value}")
        except psycopg.Error as err:
            raw.close()
            raise StartupError(f"cannot use the PostgreSQL database: {_first_line(err)}") from None
        except StartupError:
            raw.close()
            raise
        return PgConn(raw, self._lose)

    def _lose(self, why: str) -> None:
        if self.lost:
            return
        self.lost = why
        if self.on_lost is not None:
            self.on_lost(why)

    def _begin(self, conn: PgConn) -> None:
        conn.execute("BEGIN")
        if self.epoch is None:
            return
        row = conn.execute("SELECT epoch FROM leader WHERE id = 1 FOR KEY SHARE").fetchone()
        if row is None or row[0] != self.epoch:
            why = (f"fenced: the lease's epoch is {row[0] if row else 'gone'}, this conductor's is {self.epoch}:"
                   " another conductor leads")
            self._lose(why)
            raise Fenced(why)

    def close(self) -> None:
        """Commit what is queued and close, within ``timeout`` seconds each: a database cut
        off by the network answers nothing (its host's silence may look like a live
        connection for minutes), and a conductor stepping down must not wait for it."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        for step in (self._flush, self.conn.close):
            try:
                self._executor.submit(step).result(timeout=self.timeout)
            except concurrent.futures.TimeoutError:
                sever(self.conn.raw)  # the call in progress fails at once; the rest is dropped
                logger.warning("database_close_cut_short", seconds=self.timeout)
                break
            except Exception:  # noqa: BLE001,S112 - closing: the callers of the flush heard why
                continue
        self._executor.shutdown(wait=False)

    def _failed(self, err: Exception) -> Exception:
        if isinstance(err, psycopg.Error):
            return self.conn._unavailable(err)  # type: ignore[no-any-return]
        return err


# ---- the schema ------------------------------------------------------------------------

# The lease of the leading conductor (conductor/leadership.py): one row, its epoch raised
# by every taking over, checked by every write transaction of the leader.
LEASE_TABLE = """CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL /* who holds it: certname, host and pid */,
    instance TEXT NOT NULL DEFAULT '' /* host and state_dir: one conductor at a time (its flock) */,
    address TEXT NOT NULL /* HOST:PORT where it serves players and the audience */,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)"""

# The layout of conductor/store/schema.py, column for column in PostgreSQL's types: REAL
# is DOUBLE PRECISION, INTEGER is BIGINT, BLOB is BYTEA. tasks.rowid keeps the order of
# insertion that SQLite's rowid gives.
TABLES = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    score TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('all', 'one')),
    targets TEXT NOT NULL,
    params TEXT NOT NULL,
    secret_keys TEXT NOT NULL,
    requester TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    deadline_at DOUBLE PRECISION NOT NULL,
    idempotency_key TEXT UNIQUE,
    finished_at DOUBLE PRECISION,
    open_tasks BIGINT NOT NULL DEFAULT 0,
    request_digest TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    name TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{{}}',
    priority BIGINT NOT NULL DEFAULT 0,
    canary BIGINT NOT NULL DEFAULT 0,
    batch BIGINT NOT NULL DEFAULT 0,
    max_failures BIGINT,
    phase TEXT NOT NULL DEFAULT '',
    phase_reason TEXT NOT NULL DEFAULT '',
    failures BIGINT NOT NULL DEFAULT 0,
    canary_left BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    retry_delay DOUBLE PRECISION NOT NULL DEFAULT 0,
    concurrency BIGINT NOT NULL DEFAULT 0,
    exclusive BIGINT NOT NULL DEFAULT 0,
    workflow_id TEXT,
    step TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tasks (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    player TEXT,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    tried TEXT NOT NULL DEFAULT '[]',
    dispatched_at DOUBLE PRECISION,
    exit_code BIGINT,
    signal BIGINT NOT NULL DEFAULT 0,
    response TEXT NOT NULL DEFAULT '{{}}',
    response_truncated BIGINT NOT NULL DEFAULT 0,
    stdout BYTEA NOT NULL DEFAULT '',
    stderr BYTEA NOT NULL DEFAULT '',
    stdout_truncated BIGINT NOT NULL DEFAULT 0,
    stderr_truncated BIGINT NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    retries BIGINT NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);
CREATE INDEX IF NOT EXISTS tasks_by_player ON tasks(player, state);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state) WHERE {IS_OPEN};
CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs(finished_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_requester ON jobs(requester, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_score ON jobs(score, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs(name, created_at, id);
CREATE TABLE IF NOT EXISTS job_targets (
    target TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (target, created_at, job_id)
);
CREATE TABLE IF NOT EXISTS job_labels (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, value, created_at, job_id)
);
CREATE TABLE IF NOT EXISTS task_attempts (
    task_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    player TEXT,
    state TEXT NOT NULL,
    outcome BYTEA NOT NULL,
    PRIMARY KEY (task_id, seq)
);
CREATE TABLE IF NOT EXISTS drains (
    name TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    "by" TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{{}}',
    params TEXT NOT NULL DEFAULT '{{}}',
    requester TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '{{}}',
    created_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT NOT NULL DEFAULT '',
    cancelled BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    request_digest TEXT NOT NULL DEFAULT '',
    schedule TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS workflows_by_finished ON workflows(finished_at);
CREATE INDEX IF NOT EXISTS workflows_open ON workflows(id) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    after TEXT NOT NULL DEFAULT '[]',
    on_failure TEXT NOT NULL CHECK (on_failure IN ('stop', 'continue')),
    request BYTEA NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting'
        CHECK (state IN ('waiting', 'running', 'ok', 'failed', 'partial_fail', 'skipped', 'cancelled')),
    reason TEXT NOT NULL DEFAULT '',
    job_id TEXT UNIQUE,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    PRIMARY KEY (workflow_id, name)
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    cron TEXT NOT NULL,
    missed TEXT NOT NULL CHECK (missed IN ('skip', 'once')),
    overlap BIGINT NOT NULL DEFAULT 0,
    paused BIGINT NOT NULL DEFAULT 0,
    kind TEXT NOT NULL CHECK (kind IN ('job', 'workflow')),
    request BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    next_at DOUBLE PRECISION,
    last_at DOUBLE PRECISION,
    last_id TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS task_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    player TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS task_events_by_task ON task_events(task_id);
CREATE TABLE IF NOT EXISTS players (
    name TEXT PRIMARY KEY,
    last_seen DOUBLE PRECISION NOT NULL,
    scores BYTEA NOT NULL,
    max_concurrent BIGINT NOT NULL,
    cert_not_after DOUBLE PRECISION NOT NULL,
    cert_issuer BYTEA NOT NULL DEFAULT '',
    cert_serial TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS allowed_transitions (
    from_state TEXT NOT NULL, to_state TEXT NOT NULL, PRIMARY KEY (from_state, to_state)
);
-- The state table, enforced by the database itself as in SQLite (conductor/states.py).
CREATE OR REPLACE FUNCTION orchestra_task_state_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> OLD.state AND NOT EXISTS (
            SELECT 1 FROM allowed_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'illegal task state transition' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER task_state_guard BEFORE UPDATE OF state ON tasks
    FOR EACH ROW EXECUTE FUNCTION orchestra_task_state_guard();
CREATE OR REPLACE FUNCTION orchestra_task_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'queued' THEN
        RAISE EXCEPTION 'tasks start queued' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER task_insert_guard BEFORE INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION orchestra_task_insert_guard();
-- a step starts once: its job is set only while it waits
CREATE OR REPLACE FUNCTION orchestra_step_start_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.job_id IS NOT NULL AND NEW.job_id IS DISTINCT FROM OLD.job_id THEN
        RAISE EXCEPTION 'a workflow step starts once' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER step_start_guard BEFORE UPDATE OF job_id ON workflow_steps
    FOR EACH ROW EXECUTE FUNCTION orchestra_step_start_guard();
"""

# Upgrades of the PostgreSQL layout: MIGRATIONS[N] takes schema N to N + 1, in the
# transaction that records N + 1. Version 7 is the first layout on PostgreSQL, so there is
# none yet; a later version adds its step here (and SQLite's in schema.py).
MIGRATIONS: dict[int, str] = {}


@contextlib.contextmanager
def _schema_transaction(conn: PgConn) -> Iterator[None]:
    """One transaction holding the schema lock: committed at the end, rolled back on error."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def install_lease(conn: PgConn) -> None:
    """The lease table, under the schema lock (a standby needs only this much)."""
    with _schema_transaction(conn):
        conn.execute(LEASE_TABLE)


def install(conn: PgConn) -> None:
    """Create or upgrade the schema in one transaction, then load the state table."""
    with _schema_transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(LEASE_TABLE)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StartupError(f"the queue was written by a newer conductor (schema {version});"
                               f" this one reads up to schema {SCHEMA_VERSION}")
        while version < SCHEMA_VERSION:
            conn.execute(MIGRATIONS[version])
            version += 1
        conn.execute(TABLES)
        conn.execute("DELETE FROM allowed_transitions")
        conn.executemany("INSERT INTO allowed_transitions VALUES (?, ?)", states.allowed_pairs())
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE"
                     " SET value = excluded.value", (str(SCHEMA_VERSION),))


class PostgresStore(SqlStore):
    def __init__(self, dsn: str, *, epoch: int | None = None, on_lost: Callable[[str], None] | None = None,
                 timeout: float = 5.0) -> None:
        check_dsn(dsn)
        db = PgDatabase(dsn, epoch=epoch, on_lost=on_lost, timeout=timeout)
        try:
            db.call(install, db.conn)
        except psycopg.Error as err:
            db.close()
            raise StartupError(f"cannot lay out the queue in PostgreSQL: {_first_line(err)}") from None
        except BaseException:
            db.close()
            raise
        super().__init__(db)
