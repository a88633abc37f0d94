"""Many players in one process, each with the real player code and its own certificate.

``python -m tests.faults.swarm CONFIG...`` runs one Player per player.toml until SIGTERM.
Used to restart a conductor under 50 connected players without 50 interpreters.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import structlog

from orchestra import config, log
from orchestra.tls import Material
from player.session import Player


async def run(paths: list[Path]) -> None:
    players = [Player(cfg, Material.load(cfg.tls)) for cfg in map(config.load_player, paths)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def one(player: Player) -> None:
        structlog.contextvars.bind_contextvars(player=player.certname)
        await player.recover()
        await player.serve()

    tasks = [asyncio.ensure_future(one(p)) for p in players]
    await stop.wait()
    for player in players:
        await player.close()
    await asyncio.wait(tasks, timeout=10)


if __name__ == "__main__":
    log.setup("info")
    asyncio.run(run([Path(p) for p in sys.argv[1:]]))
