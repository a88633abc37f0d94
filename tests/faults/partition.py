"""Run inside ``unshare -rn``: a conductor and a player, then loopback down and up again.

Prints one JSON object describing what each side noticed; test_partition.py checks it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from devtools.devcluster import Cluster
from tests.conftest import FAST_CONDUCTOR, FAST_PLAYER


def link(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


def main(root: Path) -> int:
    link("up")
    cluster = Cluster(root, ["p1.test"], conductor_settings=dict(FAST_CONDUCTOR),
                      player_settings=dict(FAST_PLAYER))
    report: dict[str, object] = {}
    try:
        cluster.start()
        job = cluster.cli("submitjob", "sleep", "seconds=3", "p1.test").stdout.strip()
        cluster.wait_for(lambda: '"running"' in cluster.cli("getstatus", "--json", job).stdout, "running")
        link("down")
        cut = time.monotonic()
        cluster.wait_for(lambda: "conductor_silent" in cluster.log_text("player-p1.test")
                         or "session_ended" in cluster.log_text("player-p1.test"), "player notices", 30)
        report["player_noticed_after"] = time.monotonic() - cut
        cluster.wait_for(lambda: "player_silent" in cluster.log_text("conductor")
                         or "player_disconnected" in cluster.log_text("conductor"), "conductor notices", 30)
        report["conductor_noticed_after"] = time.monotonic() - cut
        time.sleep(4)  # the score finishes while the network is down
        link("up")
        status = cluster.cli("getstatus", "--wait", "--timeout", "60", "--json", job)
        report["exit"] = status.returncode
        report["job"] = json.loads(status.stdout) if status.stdout else None
    finally:
        cluster.stop()
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
