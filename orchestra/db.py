"""Durable SQLite for the conductor's queue and the player's spool.

WAL with synchronous=FULL, read back to be sure: a commit is the promise behind every
acknowledgement (DESIGN-NOTES §3.3). All access goes through one worker thread, so the
event loop never blocks on fsync and transactions never interleave.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from orchestra.errors import StartupError

T = TypeVar("T")


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


class Database:
    """A connection owned by one thread; ``await db.run(fn, ...)`` calls fn(conn, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{path.stem}")
        self.conn = self._executor.submit(connect, path).result()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Synchronous variant for start-up and shutdown code."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
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
