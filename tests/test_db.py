"""Group commit on a real SQLite file: a caller hears of its write only once it is on
disk, a burst shares commits, a failing write is undone alone, and deferred writes land."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from orchestra.db import LATER_SECONDS, Database


def _table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")


def _insert(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("INSERT INTO t (id, body) VALUES (?, ?)", (n, f"row {n}"))
    return n


def _rows(path: Path) -> list[int]:
    """Read by another connection, as another process would: only committed rows."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
    finally:
        conn.close()


def test_a_burst_of_writes_shares_commits_and_each_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "q.db"

    async def main() -> None:
        db = Database(path)
        try:
            await db.run(_table, db.conn)

            async def one(n: int) -> None:
                assert await db.write(_insert, n) == n
                assert n in _rows(path)  # committed before the caller was resolved
            await asyncio.gather(*(one(n) for n in range(200)))
            assert db.writes == 200
            assert db.commits < 200  # grouped: fewer fsyncs than writes
        finally:
            db.close()
    asyncio.run(main())
    assert _rows(path) == list(range(200))


def test_a_failing_write_is_undone_alone_and_its_caller_gets_the_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"

    def half_then_fail(conn: sqlite3.Connection) -> None:
        _insert(conn, 1000)
        raise ValueError("refused")

    async def main() -> None:
        db = Database(path)
        try:
            await db.run(_table, db.conn)
            results = await asyncio.gather(db.write(_insert, 1), db.write(half_then_fail),
                                           db.write(_insert, 2), return_exceptions=True)
            assert results[0] == 1 and results[2] == 2
            assert isinstance(results[1], ValueError)
            with pytest.raises(sqlite3.IntegrityError):
                await db.write(_insert, 1)  # a duplicate key fails alone too
        finally:
            db.close()
    asyncio.run(main())
    assert _rows(path) == [1, 2]


def test_deferred_writes_land_with_the_next_write_within_the_delay_or_at_close(tmp_path: Path) -> None:
    path = tmp_path / "q.db"

    async def main() -> None:
        db = Database(path)
        try:
            await db.run(_table, db.conn)
            db.write_later(_insert, 1)
            assert _rows(path) == []  # nobody waits for it, nothing forces it yet
            await db.write(_insert, 2)
            assert _rows(path) == [1, 2]  # it joined the next awaited write
            db.write_later(_insert, 3)
            await asyncio.sleep(LATER_SECONDS + 0.5)
            assert _rows(path) == [1, 2, 3]  # or landed on its own
            db.write_later(_insert, 4)
        finally:
            db.close()
    asyncio.run(main())
    assert _rows(path) == [1, 2, 3, 4]  # close commits what is still queued
