"""The player's metrics (README, "Monitoring"): imported only with ``metrics_listen`` set.

A scrape asks the event loop for a :class:`Snapshot` (:func:`take_snapshot`: one count of
the spool by step, on the spool's database thread; the rest in memory) and adds the size
of the spool on disk, read from the file system in the scraping thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from orchestra import metrics
from orchestra.config import PlayerConfig
from orchestra.tls import Material
from player.session import Player
from player.spool import Step

PREFIX = "orchestra_player"


@dataclass(frozen=True)
class Snapshot:
    connected: bool
    reconnects: int
    running: int
    spool: dict[str, int]
    material: Material
    spool_dir: Path


async def take_snapshot(player: Player) -> Snapshot:
    counts = await player.spool.counts()
    return Snapshot(connected=player.connected, reconnects=player.reconnects, running=len(player.executions),
                    spool={step.value: count for step, count in counts.items()}, material=player.material,
                    spool_dir=player.config.spool_dir)


def spool_bytes(spool_dir: Path) -> int:
    """Bytes the spool takes on disk: its database (with the WAL) and the output files of
    the tasks it still holds. One stat per file: a few per unacknowledged task."""
    total = 0
    for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
        try:
            total += os.stat(spool_dir / name).st_blocks * 512
        except OSError:
            pass
    try:
        tasks = list(os.scandir(spool_dir / "tasks"))
    except OSError:
        return total
    for task in tasks:
        try:
            with os.scandir(task.path) as files:
                for entry in files:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue  # acknowledged and removed meanwhile
    return total


def families(snapshot: Snapshot) -> list[Metric]:
    p = PREFIX
    return [
        GaugeMetricFamily(f"{p}_connected", "1 while a session with the conductor is established, else 0.",
                          value=1.0 if snapshot.connected else 0.0),
        metrics.counter(f"{p}_reconnects_total", "Sessions with the conductor established again after one ended.",
                        snapshot.reconnects),
        GaugeMetricFamily(f"{p}_tasks_running", "Tasks whose score is running now.", value=snapshot.running),
        metrics.gauges(f"{p}_spool_entries", "Tasks in the spool, by step (acked: tombstones kept for a week).",
                       "step", snapshot.spool),
        GaugeMetricFamily(f"{p}_results_unacknowledged",
                          "Results recorded and not yet acknowledged by the conductor.",
                          value=snapshot.spool.get(Step.FINISHED.value, 0)),
        GaugeMetricFamily(f"{p}_spool_bytes", "Bytes the spool takes on disk: its database and the output files"
                          " of the tasks it holds.", value=spool_bytes(snapshot.spool_dir)),
        metrics.certificate_gauges(f"{p}_certificate_expires_in_seconds",
                                   "Seconds until the player's certificate and each CA certificate of its bundle"
                                   " expire.", metrics.certificate_expiries("player", snapshot.material.cert,
                                                                           snapshot.material.ca), time.time()),
    ]


def serve(config: PlayerConfig, player: Player) -> metrics.MetricsServer:
    """The player's metrics listener; its state is read on the running loop."""
    async def snapshot() -> Snapshot:
        return await take_snapshot(player)
    collector = metrics.LoopCollector(asyncio.get_running_loop(), PREFIX, snapshot, families)
    return metrics.serve(config.metrics_listen, metrics.new_registry(collector),
                         config.tls if config.metrics_tls else None, config.path)
