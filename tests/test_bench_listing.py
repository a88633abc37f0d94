"""bench/listing.py runs end to end on a tiny queue and writes every figure; no time is judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "listing.py"
JOBS = 300
RUNS = 2

FIGURES = {
    "listjobs_newest_ms", "listjobs_limit_1000_ms", "listjobs_state_failed_ms", "listjobs_state_pending_ms",
    "listjobs_score_ms", "listjobs_target_ms", "listjobs_rare_target_ms", "listjobs_requester_ms",
    "listjobs_since_ms", "getstatus_ms",
}
ROW_KEYS = {"label", "unit", "value", "floor", "ratio", "conductor_cpu_ms_per_call", "rows"}


@pytest.mark.timeout(60)
def test_tiny_queue_lists_every_filter_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "listing.json"
    result = subprocess.run([sys.executable, str(BENCH), "--jobs", str(JOBS), "--runs", str(RUNS),
                             "--json", str(out)],
                            capture_output=True, text=True, timeout=55, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert {"sizes", "machine", "fill", "floors", "figures", "commands", "raw", "notes"} <= set(report)
    assert report["sizes"]["jobs"] == JOBS
    assert isinstance(report["floors"]["import_grpc_ms"], (int, float))
    fill = report["fill"]
    assert fill["jobs"] == JOBS and fill["seconds"] > 0
    assert sum(fill["statuses"].values()) == JOBS
    assert "fill:" in result.stdout and "import grpc" in result.stdout

    figures = report["figures"]
    assert set(figures) == FIGURES == set(report["raw"]) == set(report["commands"])
    for key, row in figures.items():
        assert set(row) == ROW_KEYS, key
        assert row["label"] in result.stdout, key
        for name in ("value", "floor", "ratio", "conductor_cpu_ms_per_call"):
            assert isinstance(row[name], (int, float)), (key, name)
        raw = report["raw"][key]
        assert len(raw["ms"]) == len(raw["floor_ms"]) == len(raw["conductor_cpu_ms"]) == RUNS, key

    # Each listing printed the jobs the fill put there for it to find.
    def rows(key: str) -> int:
        count = figures[key]["rows"]
        assert isinstance(count, int), key
        return count

    statuses, scores, targets = fill["statuses"], fill["scores"], fill["targets"]
    assert rows("listjobs_newest_ms") == rows("listjobs_since_ms") == 50
    assert rows("listjobs_limit_1000_ms") == JOBS
    assert rows("listjobs_state_failed_ms") == min(50, statuses["failed"]) > 0
    assert rows("listjobs_state_pending_ms") == min(50, statuses["pending"]) > 0
    assert rows("listjobs_score_ms") == min(50, scores["reboot"]) > 0
    assert rows("listjobs_target_ms") == min(50, targets["web07.example"]) > 0
    assert rows("listjobs_rare_target_ms") == min(50, targets["spare01.example"]) > 0
    assert rows("listjobs_requester_ms") == min(50, fill["requesters"]["cert:backup.example"]) > 0
    assert figures["getstatus_ms"]["rows"] is None
