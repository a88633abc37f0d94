"""A real network partition: loopback taken down in a private network namespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_CONDUCTOR, FAST_PLAYER

BOUND = max(FAST_CONDUCTOR["liveness_timeout"], FAST_PLAYER["liveness_timeout"]) + 3


def _namespaces_allowed() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) not installed"
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this sandbox does not allow unshare -rn: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_partition_is_detected_by_both_sides_and_the_result_arrives_after_it_heals(
        tmp_path: Path) -> None:
    reason = _namespaces_allowed()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.faults.partition",
                             str(tmp_path / "cluster")], capture_output=True, text=True, timeout=180,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["player_noticed_after"] <= BOUND
    assert report["conductor_noticed_after"] <= BOUND
    assert report["exit"] == 0
    task = report["job"]["tasks"][0]
    assert task["state"] == "ok" and task["response"] == {"slept": "3"}
