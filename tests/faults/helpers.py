"""Shared checks for fault scenarios: markers written by scores, invariants of the queue."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from devtools.devcluster import Cluster
from tests.conftest import queue_rows

OPEN = {"queued", "dispatched", "running"}


def marker_score(marker: Path, sleep: float = 0.0) -> str:
    """A score that appends its task id to marker when it starts: proof of every run."""
    return f"#!/bin/sh\necho \"$ORC_TASK_ID $ORC_PLAYER\" >> {marker}\nsleep {sleep}\necho done\n"


def runs(marker: Path) -> Counter[str]:
    if not marker.exists():
        return Counter()
    return Counter(line.split()[0] for line in marker.read_text().splitlines() if line.strip())


def assert_queue_invariants(cluster: Cluster, marker: Path, acknowledged: list[str]) -> None:
    """Every acknowledged job present, every task terminal once, no score ran twice."""
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
            assert counted[task["id"]] == 1, f"{task['id']} ok but ran {counted[task['id']]} times"
    conn = sqlite3.connect(cluster.state_dir / "queue.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
