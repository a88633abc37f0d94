"""Durable SQL for the conductor's queue and the player's spool, with group commit.

SQLite runs in WAL with synchronous=FULL, read back to be sure: a commit is the promise
behind every acknowledgement (DESIGN-NOTES §3.3). All access goes through one worker
thread, so the event loop never blocks on fsync and transactions never interleave.

Writes are committed in groups: ``await db.write(fn)`` queues ``fn``; the worker takes
every write queued at that moment, runs each inside its own SAVEPOINT of one shared
transaction, commits once (one fsync of the WAL) and only then resolves each caller. A
write that raises is rolled back to its savepoint alone; if the COMMIT itself fails,
every write of the group fails. So a caller still learns of its write only once it is
on disk, exactly as with one transaction per write, while a burst of N writes costs
one fsync instead of N.

The same group commit serves PostgreSQL (conductor/store/postgresql.py): a subclass opens
the connection and begins each group its own way (:meth:`Database._begin`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from orchestra.errors import StartupError

T = TypeVar("T")
# A write nobody waits for (write_later) is committed with the next awaited write, or
# after this long at the latest.
LATER_SECONDS = 0.5


class Cursor(Protocol):
    """What the store's SQL reads back: rows by position and by column name."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The part of a DB-API connection the store uses: ``sqlite3.Connection`` itself, or
    the PostgreSQL adapter, which takes the same SQL (``?`` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


class Unavailable(sqlite3.OperationalError):
    """The queue cannot be written now: the database is unreachable, or this conductor
    is no longer the leader. A kind of OperationalError, so every caller that copes with
    a full disk (try again later, tell the client "storage") copes with it alike."""


def connect(path: Path) -> sqlite3.Connection:
    """Open path with WAL + synchronous=FULL and autocommit (explicit BEGIN only)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    except sqlite3.Error as err:
        raise StartupError(f"cannot open database {path}: {err}") from None
    if mode != "wal" or sync != 2:
        raise StartupError(f"{path}: expected WAL and synchronous=FULL, got {mode} and {sync}")
    return conn


@dataclass
class _Write:
    fn: Callable[..., Any]
    args: tuple[object, ...]
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Database:
    """A connection owned by one thread.

    ``await db.run(fn, ...)`` calls fn(conn, ...) for reads (or a transaction of its
    own); ``await db.write(fn, ...)`` joins the next group commit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{path.stem}")
        self.conn: Any = self._executor.submit(self._open).result()
        self.commits = 0  # group transactions committed: one WAL fsync each
        self.writes = 0   # writes those transactions carried
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._flush_queued = False
        self._later: asyncio.TimerHandle | None = None

    def _open(self) -> Any:
        """The connection, opened on the database thread."""
        return connect(self.path)

    def _begin(self, conn: Any) -> None:
        """Begin a group's transaction: SQLite takes its write lock at once."""
        conn.execute("BEGIN IMMEDIATE")

    def _failed(self, err: Exception) -> Exception:
        """What the callers of a group learn when BEGIN or COMMIT failed (a subclass may
        say it its own way)."""
        return err

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Synchronous variant for start-up and shutdown code."""
        return self._executor.submit(fn, *args).result()

    async def write(self, fn: Callable[..., T], *args: object) -> T:
        """fn(conn, *args) inside the next group transaction; returns once it is committed.

        fn must not BEGIN or COMMIT itself; raising undoes fn's own changes only.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue(_Write(fn, args, future, loop), flush=True)
        return await future

    def write_later(self, fn: Callable[..., object], *args: object) -> None:
        """Like :meth:`write`, but nobody waits: for records whose loss in a crash costs
        nothing (each use says why). Committed with the next awaited write, or within
        LATER_SECONDS."""
        self._queue(_Write(fn, args, None, None), flush=False)
        if self._later is None:
            self._later = asyncio.get_running_loop().call_later(LATER_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._later = None
        self._queue(None, flush=True)

    def _queue(self, item: _Write | None, flush: bool) -> None:
        with self._lock:
            if item is not None:
                self._pending.append(item)
            if not flush or self._flush_queued or not self._pending:
                return
            self._flush_queued = True
        self._executor.submit(self._flush)

    def _flush(self) -> None:
        """On the database thread: every queued write in one transaction, one fsync."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._flush_queued = False
        if not batch:
            return
        conn = self.conn
        results: list[tuple[bool, Any]] = []
        try:
            self._begin(conn)
            for item in batch:
                conn.execute("SAVEPOINT write")
                try:
                    value = item.fn(conn, *item.args)
                except Exception as err:  # the caller gets it; the rest of the group commits
                    conn.execute("ROLLBACK TO write")
                    results.append((False, err))
                else:
                    results.append((True, value))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except Exception as err:  # BEGIN or COMMIT failed (disk full, I/O error): nothing is on disk
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:  # noqa: S110 - the transaction is gone either way; the callers learn of err
                pass
            results = [(False, self._failed(err))] * len(batch)
        else:
            self.commits += 1
            self.writes += len(batch)
        finally:
            # Every caller hears back, whatever happened above.
            if len(results) != len(batch):
                results = [(False, RuntimeError("the database write was interrupted"))] * len(batch)
            for item, (ok, value) in zip(batch, results, strict=True):
                if item.future is not None and item.loop is not None:
                    try:
                        item.loop.call_soon_threadsafe(_settle, item.future, ok, value)
                    except RuntimeError:
                        pass  # its event loop is closed: nobody is waiting any more

    def close(self) -> None:
        """Commit what is still queued (deferred writes too), then close."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._executor.submit(self._flush).result()
        self._executor.submit(self.conn.close).result()
        self._executor.shutdown(wait=True)


class Transaction:
    """``with Transaction(conn):`` = BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
