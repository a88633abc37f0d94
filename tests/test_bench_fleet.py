"""bench/fleet.py runs end to end at a tiny size and writes every figure; no time is judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
               "cpu_per_task_seconds", "commits_per_task", "writes_per_task", "stats_note"},
    "storm": {"seconds", "conductor_cpu_seconds", "cpu_per_connect_seconds", "ready_seconds"},
}


@pytest.mark.timeout(60)
def test_small_fleet_runs_every_phase_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", str(N), "--workers", "1", "--idle-seconds", "2",
         "--floor-samples", "100", "--json", str(out)],
        capture_output=True, text=True, timeout=55, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert REPORT_KEYS <= set(report)
    assert report["ok"] is True
    assert FLOORS <= set(report["floors"])
    [size] = report["sizes"]
    assert size["n"] == N
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

    # One table on stdout, every row of it also in the JSON.
    for row in report["table"]:
        assert row["figure"] in result.stdout
    assert any(row["figure"].startswith(f"N={N} all-of") for row in report["table"])
