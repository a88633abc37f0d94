"""bench/fleet.py runs end to end at a tiny size and writes every figure; no time is judged here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.pgserver import DEBIAN_PACKAGE, find_bindir
from tests.conftest import missing

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fleet.py"
N = 20

REPORT_KEYS = {"settings", "machine", "floors", "sizes", "table", "notes", "ok"}
FLOORS = {"spawn_seconds", "commit_seconds", "rtt_p50_seconds", "rtt_server_cpu_seconds",
          "connect_p50_seconds", "connect_server_cpu_seconds", "server_base_rss_bytes",
          "server_rss_per_session_bytes"}
PHASES = {
    "connect": {"seconds", "conductor_startup_cpu_seconds"},
    "idle": {"seconds", "cpu_percent", "rss_bytes", "heartbeat_seconds"},
    "fanout": {"seconds", "first_dispatch_seconds", "tasks", "tasks_ok", "states",
               "cpu_per_task_seconds", "commits_per_task", "writes_per_task", "stats_note",
               "database_cpu_per_task_seconds"},
    "storm": {"seconds", "conductor_cpu_seconds", "cpu_per_connect_seconds", "ready_seconds"},
}
UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}


def run_bench(tmp_path: Path, *extra: str, timeout: float = 55) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "fleet.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", str(N), "--workers", "1", "--idle-seconds", "2",
         "--floor-samples", "100", "--json", str(out), *extra],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result, json.loads(out.read_text())


def check_size(size: dict[str, Any], backend: str) -> None:
    """One size on one backend ran every phase and every task of its all-of job."""
    assert size["n"] == N
    assert size["backend"] == backend
    assert size["errors"] == []
    for phase, keys in PHASES.items():
        assert keys <= set(size[phase]), phase

    fanout = size["fanout"]
    assert fanout["status"] == "ok"
    assert fanout["tasks"] == fanout["tasks_ok"] == N
    assert fanout["states"] == {"TASK_STATE_OK": N}
    players = size["players"]
    assert players["runs"] == players["results"] == players["acks"] == N
    assert players["welcomes"] >= 2 * N  # the first connect and the reconnect after the restart


def seconds(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


@pytest.mark.timeout(60)
def test_small_fleet_runs_every_phase_and_writes_json(tmp_path: Path) -> None:
    result, report = run_bench(tmp_path, "--backends", "sqlite")

    assert REPORT_KEYS <= set(report)
    assert report["ok"] is True
    assert report["settings"]["backends"] == ["sqlite"]
    assert FLOORS <= set(report["floors"])
    [size] = report["sizes"]
    check_size(size, "sqlite")

    # The tables on stdout, every row of them also in the JSON.
    for row in report["table"]:
        assert row["figure"] in result.stdout
    assert any(row["n"] == N and row["backend"] == "sqlite" and row["figure"].startswith("all-of")
               for row in report["table"])
    assert "PostgreSQL" not in result.stdout
    assert re.search(rf"^N={N} players +\| sqlite$", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.timeout(120)
def test_both_backends_side_by_side(tmp_path: Path) -> None:
    if find_bindir() is None:
        # Without PostgreSQL the default is SQLite alone, and the output says so.
        result, report = run_bench(tmp_path)
        assert report["settings"]["backends"] == ["sqlite"]
        assert "note: postgresql not measured" in result.stdout
        missing("PostgreSQL (initdb, pg_ctl, postgres)", DEBIAN_PACKAGE)

    result, report = run_bench(tmp_path, timeout=110)
    assert report["ok"] is True
    assert report["settings"]["backends"] == ["sqlite", "postgresql"]
    assert report["machine"]["postgresql"]
    floors = report["floors"]
    assert floors["commit_seconds"] > 0 and floors["postgresql_commit_seconds"] > 0
    sqlite, postgresql = report["sizes"]
    check_size(sqlite, "sqlite")
    check_size(postgresql, "postgresql")
    assert sqlite["fanout"]["database_cpu_per_task_seconds"] is None  # SQLite works in the conductor
    assert postgresql["fanout"]["database_cpu_per_task_seconds"] is not None

    # One table for the size, a group of columns per backend, SQLite first.
    out = result.stdout
    assert "durable SQLite insert+commit" in out and "durable PostgreSQL INSERT+COMMIT" in out
    assert re.search(rf"^N={N} players +\| sqlite +\| postgresql$", out, re.MULTILINE), out
    [ended] = [line for line in out.splitlines() if line.startswith("all-of tasks ended ok")]
    assert ended.count(f"{N} of {N}") == 2, ended
    for row in report["table"]:
        assert row["figure"] in out

    # Each backend's figures are set against its own commit floor.
    rows = {(row["backend"], row["figure"]): row for row in report["table"] if row["n"] == N}
    for backend, commit in (("sqlite", floors["commit_seconds"]),
                            ("postgresql", floors["postgresql_commit_seconds"])):
        floor = seconds(str(rows[backend, "all-of first RunTask"]["floor"]))
        assert floor == pytest.approx(2 * commit, rel=0.01, abs=6e-6), backend
        assert rows[backend, "all-of tasks ended ok"]["value"] == f"{N} of {N}"
