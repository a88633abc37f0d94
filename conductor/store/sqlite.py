"""The SQLite backend of :class:`conductor.store.Store`: the embedded default.

One file, ``queue.db`` in the state directory, in WAL with synchronous=FULL
(:mod:`orchestra.db`); its layout and upgrades are :mod:`conductor.store.schema`. The
verbs are the shared ones of :mod:`conductor.store.sql`.
"""

from __future__ import annotations

from pathlib import Path

from conductor.store import schema
from conductor.store.sql import SqlStore, list_sql
from orchestra.db import Database

__all__ = ["SqliteStore", "list_sql"]


class SqliteStore(SqlStore):
    def __init__(self, state_dir: Path) -> None:
        db = Database(state_dir / "queue.db")
        db.call(schema.install, db.conn)
        super().__init__(db)
