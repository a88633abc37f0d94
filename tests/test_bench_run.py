"""bench/run.py --quick runs end to end and writes every figure; no figure is judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"

FIGURES = {
    "latency_p50_ms", "latency_p99_ms",
    "throughput_1p_small_backlog", "throughput_1p_large_backlog", "throughput_1p_flatness",
    "throughput_4p",
    "conductor_cpu_ms_per_task_small_backlog", "conductor_cpu_ms_per_task_large_backlog",
    "player_cpu_ms_per_task_small_backlog", "player_cpu_ms_per_task_large_backlog",
    "conductor_commits_per_task", "player_commits_per_task",
    "getstatus_ms", "player_rss_idle_mb", "player_rss_after_mb", "fleet_submit_wait_ms",
}
ROW_KEYS = {"label", "unit", "value", "floor", "ratio", "goal", "met"}
FLOORS = {"spawn_ms", "spawn_cpu_ms", "commit_ms", "latency_floor_ms", "spawn_rate_per_s",
          "import_grpc_ms"}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=55, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert {"sizes", "machine", "floors", "figures", "runs", "raw", "notes"} <= set(report)
    assert FLOORS <= set(report["floors"])
    assert set(report["figures"]) == FIGURES
    for key, row in report["figures"].items():
        assert set(row) == ROW_KEYS, key
        assert row["label"] in result.stdout, key
    # Figures that need nothing from the daemons beyond /proc are always measured.
    for key in FIGURES - {"conductor_commits_per_task", "player_commits_per_task"}:
        assert isinstance(report["figures"][key]["value"], (int, float)), key
    assert [run["name"] for run in report["runs"]] == ["backlog_8", "backlog_40", "four_players"]
    for run in report["runs"]:
        assert {"conductor", "players_cost", "tasks", "tasks_per_s", "seconds"} <= set(run)
    # The labels of the original figures are still printed.
    for label in ["spawn+wait of /bin/true", "SQLite insert+commit", "latency, 1 player",
                  "throughput, 1 player", "throughput, 4 players"]:
        assert label in result.stdout
