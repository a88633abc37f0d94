"""``conductor [--config FILE]``: the daemon holding the queue and the player sessions."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import grpc

from conductor.audience import Audience
from conductor.hub import Hub
from conductor.link import PlayerLink
from conductor.players import load_players
from conductor.store import Store
from orchestra import config as configuration
from orchestra import log
from orchestra.errors import ConfigError, OrchestraError, StartupError
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE, Material, not_after, server_credentials
from orchestra.wire import audience_pb2_grpc, player_pb2_grpc

logger = log.get("conductor")


def take_lock(state_dir: Path) -> IO[bytes]:
    """An exclusive flock held for the process lifetime: one conductor per state dir."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / "conductor.lock", "a+b")  # noqa: SIM115 - held until exit
    except OSError as err:
        raise StartupError(f"cannot use state_dir {state_dir}: {err.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(f"another conductor is running on state_dir {state_dir}") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle


class Conductor:
    def __init__(self, cfg: configuration.ConductorConfig) -> None:
        self.cfg = cfg
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()

    async def run(self) -> None:
        cfg = self.cfg
        material = Material.load(cfg.tls)
        roster = load_players(cfg.players_file)
        lock = take_lock(cfg.state_dir)
        store = Store(cfg.state_dir)
        hub = Hub(store, roster)
        options = [("grpc.so_reuseport", 0), *SERVER_KEEPALIVE, *MESSAGE_LIMITS]
        server = grpc.aio.server(options=options)
        player_pb2_grpc.add_PlayerLinkServicer_to_server(
            PlayerLink(hub, material.certname, cfg.heartbeat_seconds, cfg.liveness_timeout), server)
        audience_pb2_grpc.add_AudienceServicer_to_server(
            Audience(hub, cfg.job_deadline, not_after(material.cert)), server)
        try:
            port = server.add_secure_port(cfg.listen, server_credentials(material))
        except RuntimeError as err:
            raise StartupError(f"cannot listen on {cfg.listen}: {err}") from None
        if port == 0:
            raise StartupError(f"cannot listen on {cfg.listen}")
        socket_path = cfg.audience_socket
        try:
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            socket_path.unlink(missing_ok=True)  # stale from a crash; we hold the lock
        except OSError as err:
            raise StartupError(f"cannot use audience_socket {socket_path}: {err.strerror}") from None
        old_umask = os.umask(0o117)  # the socket is born 0660: owner and group only
        try:
            if server.add_insecure_port(f"unix:{socket_path}") == 0:
                raise StartupError(f"cannot listen on unix socket {socket_path}")
        finally:
            os.umask(old_umask)
        await server.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        background = [asyncio.ensure_future(hub.run_dispatch()),
                      asyncio.ensure_future(hub.run_deadlines()),
                      asyncio.ensure_future(self._reloads(hub)),
                      asyncio.ensure_future(hub.run_startup_grace(cfg.reconnect_grace))]
        hub.wake()
        logger.info("conductor_ready", listen=cfg.listen, port=port, socket=str(socket_path),
                    players=len(roster), pid=os.getpid(), certname=material.certname)
        try:
            await self.stopping.wait()
        finally:
            logger.info("conductor_stopping")
            for task in background:
                task.cancel()
            for session in list(hub.sessions.values()):
                session.close(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            await server.stop(grace=2)
            store.close()
            socket_path.unlink(missing_ok=True)
            lock.close()
            logger.info("conductor_stopped")

    async def _reloads(self, hub: Hub) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                roster = load_players(self.cfg.players_file)
            except ConfigError as err:
                logger.error("players_reload_failed", error=str(err), kept=len(hub.roster))
                continue
            await hub.set_roster(roster)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductor", description="Orchestra conductor daemon")
    parser.add_argument("--config", help="conductor.toml (default: $ORCHESTRA_CONFIG or /etc/orchestra/conductor.toml)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    log.setup(args.log_level)
    try:
        cfg = configuration.load_conductor(configuration.resolve_path("conductor", args.config))
        asyncio.run(Conductor(cfg).run())
    except OrchestraError as err:
        sys.stderr.write(f"conductor: {err}\n")
        return int(err.exit_code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
