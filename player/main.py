"""``player [--config FILE]``: the daemon on each host."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

from orchestra import config as configuration
from orchestra import log
from orchestra.daemon import run_daemon, usage
from orchestra.errors import StartupError
from orchestra.tls import Material
from player.session import Player

logger = log.get("player")


def log_stats(player: Player) -> None:
    """SIGUSR1: counters an operator (or the benchmark) can read from the log; at warning
    level, so they are written whatever the log level: they were asked for."""
    logger.warning("stats", commits=player.spool.db.commits, writes=player.spool.db.writes, **usage(),
                   running=len(player.executions))


async def _run(cfg: configuration.PlayerConfig) -> None:
    material = Material.load(cfg.tls)
    if not material.certname:
        raise StartupError(f"{cfg.tls.cert}: certificate has no usable certname (CN)")
    if not cfg.scores_dir.is_dir():
        raise StartupError(f"scores_dir {cfg.scores_dir} is not a directory")
    try:
        player = Player(cfg, material)
    except OSError as err:
        raise StartupError(f"cannot use spool_dir {cfg.spool_dir}: {err.strerror}") from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, player.stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log_stats(player))
    logger.info("player_starting", certname=player.certname, conductor=cfg.conductor,
                pid=os.getpid())
    await player.recover()
    try:
        await player.serve()
    finally:
        await player.close()
        logger.info("player_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon("player", argv, configuration.load_player, _run)


if __name__ == "__main__":
    raise SystemExit(main())
