# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``player [--config FILE]``: the daemon on each host.

SIGTERM/SIGINT stop it, SIGUSR1 logs its counters, SIGHUP reloads: the scores directory
(announced to the conductor on the live session) and the certificate and key (used from
the next dial; the live session and every running score carry on). A certificate or key
that does not load keeps the old one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestra import config as configuration
from orchestra import log, sdnotify
from orchestra.daemon import run_daemon, usage
from orchestra.config import TLSFiles
from orchestra.errors import OrchestraError, StartupError
from orchestra.tls import Material
from player import interfaces
from player.runner import refuse_fork_support
from player.session import Player
from player.watch import SCORES_CHECK_SECONDS

if TYPE_CHECKING:
    from orchestra.metrics import MetricsServer

logger = log.get("player")
# Overrides SCORES_CHECK_SECONDS (seconds between checks of the scores directory).
SCORES_CHECK_ENV = "ORCHESTRA_SCORES_CHECK_SECONDS"


def log_stats(player: Player) -> None:
    """SIGUSR1: counters an operator (or the benchmark) can read from the log; at warning
    level, so they are written whatever the log level: they were asked for."""
    logger.warning("stats", commits=player.spool.db.commits, writes=player.spool.db.writes, **usage(),
                   running=len(player.executions))


def load_material(files: TLSFiles) -> Material:
    """The CA bundle, certificate and key, checked to be usable together (Material.load:
    all parse, the key is the certificate's) and to name a certname. Raises StartupError."""
    material = Material.load(files)
    if not material.certname:
        raise StartupError(f"{files.cert}: certificate has no usable certname (CN)")
    return material


def reload_material(player: Player) -> bool:
    """SIGHUP: the certificate and key from the same paths, for the next dial. Anything
    wrong with them (unreadable, unparseable, not a pair, expired, another certname)
    keeps the ones in use, and the log says why. True if new ones are in use."""
    files = player.config.tls
    try:
        material = load_material(files)
        cert = material.certificate
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise StartupError(f"{files.cert}: certificate is valid only from"
                               f" {cert.not_valid_before_utc.isoformat()}"
                               f" to {cert.not_valid_after_utc.isoformat()}")
        if material.certname != player.certname:
            raise StartupError(f"{files.cert}: certificate names {material.certname}, this player is"
                               f" {player.certname} (a new name needs a restart)")
    except StartupError as err:
        kept = f"{player.material.certificate.serial_number:x}"
        logger.error("certificate_reload_failed", error=str(err), kept_serial=kept)
        return False
    if material == player.material:
        logger.info("certificate_unchanged", serial=f"{cert.serial_number:x}")
        return False
    player.use_material(material)
    logger.info("certificate_reloaded", serial=f"{cert.serial_number:x}",
                not_after=cert.not_valid_after_utc.isoformat())
    return True


async def reloads(player: Player, requested: asyncio.Event, metrics: MetricsServer | None = None) -> None:
    """Carry out each SIGHUP outside the signal handler; one at a time."""
    while True:
        await requested.wait()
        requested.clear()
        logger.info("reload_requested")
        sdnotify.reloading()
        try:
            if reload_material(player) and metrics is not None:
                try:  # the metrics listener serves the new certificate from its next connection
                    metrics.reload_tls(player.config.tls)
                except StartupError as err:
                    logger.error("certificate_reload_failed", error=str(err), listener="metrics")
            await player.refresh_inventory("reload", force=True)
        except Exception:
            logger.exception("reload_failed")  # the next SIGHUP tries again
        sdnotify.ready(f"running, conductor {player.config.conductor}")


def scores_check_seconds() -> float:
    raw = os.environ.get(SCORES_CHECK_ENV)
    if raw is None:
        return SCORES_CHECK_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise StartupError(f"{SCORES_CHECK_ENV} must be a positive number of seconds, not {raw!r}")
    return seconds


async def _run(cfg: configuration.PlayerConfig) -> None:
    sdnotify.status("starting")  # also takes NOTIFY_SOCKET out of what scores inherit
    refuse_fork_support(os.environ)
    interfaces.load_all()  # every installed score interface, or the one-line reason why not
    material = load_material(cfg.tls)
    check_seconds = scores_check_seconds()
    if not cfg.scores_dir.is_dir():
        raise StartupError(f"scores_dir {cfg.scores_dir} is not a directory")
    try:
        player = Player(cfg, material)
    except OSError as err:
        raise StartupError(f"cannot use spool_dir {cfg.spool_dir}: {err.strerror}") from None
    player.scores_check_seconds = check_seconds
    metrics: MetricsServer | None = None
    if cfg.metrics_listen:
        from player.metrics import serve as serve_metrics
        try:
            metrics = serve_metrics(cfg, player)
        except OrchestraError:
            player.spool.close()
            raise
    reload_requested = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        sdnotify.stopping()
        player.stopping.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log_stats(player))
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    logger.info("player_starting", certname=player.certname, conductor=cfg.conductor,
                pid=os.getpid())
    await player.recover()
    sdnotify.ready(f"running, conductor {cfg.conductor}")
    helpers = [asyncio.ensure_future(reloads(player, reload_requested, metrics)),
               asyncio.ensure_future(player.watch_scores())]
    try:
        await player.serve()
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if metrics is not None:
            await metrics.close()
        await player.close()
        logger.info("player_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    # Until the reload handler is installed a SIGHUP would kill the player: ignore it, as
    # everything is read fresh at start anyway. (The handler that replaces this is reset
    # on exec, so scores never inherit the ignored signal.)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return run_daemon("player", argv, configuration.load_player, _run)


if __name__ == "__main__":
    raise SystemExit(main())
