"""Shared checks for fault scenarios: markers written by scores, invariants of the queue."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import psycopg
from psycopg import sql

from devtools.devcluster import Cluster
from tests.conftest import queue_rows, store_dsn

OPEN = {"queued", "dispatched", "running"}


def marker_score(marker: Path, sleep: float = 0.0) -> str:
    """A score that appends its task id to marker when it starts: proof of every run."""
    return f"#!/bin/sh\necho \"$ORC_TASK_ID $ORC_PLAYER\" >> {marker}\nsleep {sleep}\necho done\n"


def runs(marker: Path) -> Counter[str]:
    if not marker.exists():
        return Counter()
    return Counter(line.split()[0] for line in marker.read_text().splitlines() if line.strip())


def assert_queue_invariants(cluster: Cluster, marker: Path, acknowledged: list[str]) -> None:
    """Every acknowledged job present, every task terminal once, no score ran twice,
    the store intact."""
    jobs = {row["id"] for row in queue_rows(cluster, "jobs")}
    missing = set(acknowledged) - jobs
    assert not missing, f"acknowledged jobs lost: {missing}"
    tasks = queue_rows(cluster, "tasks")
    open_tasks = [t["id"] for t in tasks if t["state"] in OPEN]
    assert not open_tasks, f"tasks never finished: {open_tasks}"
    events = queue_rows(cluster, "task_events")
    for task in tasks:
        terminal_moves = [e for e in events if e["task_id"] == task["id"] and e["to_state"] not in OPEN]
        assert len(terminal_moves) == 1, (task["id"], terminal_moves)
    counted = runs(marker)
    twice = {task_id: n for task_id, n in counted.items() if n > 1}
    assert not twice, f"scores ran more than once: {twice}"
    for task in tasks:
        if task["state"] == "ok":
            assert counted[str(task["id"])] == 1, f"{task['id']} ok but ran {counted[str(task['id'])]} times"
    assert_store_intact(cluster)


# Schema for the checking functions of amcheck: the conductor's own schema stays as it made it.
CHECKS_SCHEMA = "integrity_checks"


def assert_store_intact(cluster: Cluster) -> None:
    """The queue's storage is consistent: SQLite's ``PRAGMA integrity_check``; on
    PostgreSQL, amcheck's verification of every table and B-tree index (each index
    against its table's rows too)."""
    dsn = store_dsn(cluster)
    if dsn is None:
        conn = sqlite3.connect(cluster.state_dir / "queue.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        return
    with psycopg.connect(dsn, autocommit=True) as pg:
        schema = sql.Identifier(CHECKS_SCHEMA)
        pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        pg.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA {}").format(schema))
        relations = pg.execute(
            "SELECT c.oid::regclass::text, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_am am ON am.oid = c.relam"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', %s)"
            " AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"
            " AND (c.relkind = 'r' OR (c.relkind = 'i' AND am.amname = 'btree'))",
            (CHECKS_SCHEMA,)).fetchall()
        for name, kind in relations:
            if kind == "r":
                damage = pg.execute(sql.SQL("SELECT * FROM {}.verify_heapam(%s::regclass)").format(schema),
                                    (name,)).fetchall()
                assert not damage, f"table {name} is damaged: {damage}"
            else:  # raises, naming the index and the damage, if it is inconsistent
                pg.execute(sql.SQL("SELECT {}.bt_index_check(%s::regclass, true)").format(schema), (name,))
