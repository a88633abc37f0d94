"""The benchmark script keeps working (a tiny run); it prints figures, nothing is timed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def test_benchmark_runs_and_prints_every_figure() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--samples", "5", "--jobs", "8"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ["spawn+wait of /bin/true", "SQLite insert+commit", "latency, 1 player",
                  "throughput, 1 player", "throughput, 4 players"]:
        assert label in result.stdout
