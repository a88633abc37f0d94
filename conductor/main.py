"""``conductor [--config FILE]``: the daemon holding the queue and the player sessions."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import grpc

from conductor.audience import Audience
from conductor.audit import AuditLog
from conductor.auth import AuthInterceptor, Gate, Revocation, warn_if_expiring
from conductor.dispatch import Dispatcher
from conductor.index import DispatchIndex
from conductor.lifecycle import Lifecycle
from conductor.link import PlayerLink
from conductor.localsock import LocalSocket
from conductor.players import load_players
from conductor.policy import parse_policy
from conductor.sessions import Sessions
from conductor.store import open_store
from conductor.timers import run_deadlines, run_retention, run_startup_grace
from orchestra import config as configuration
from orchestra import log
from orchestra.daemon import raise_fd_limit, run_daemon, usage
from orchestra.errors import ConfigError, StartupError
from orchestra.stream import sweep
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE, Material, not_after
from orchestra.wire import audience_pb2_grpc, player_pb2_grpc

logger = log.get("conductor")
CRL_POLL_SECONDS = 2.0


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
        self.policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self._pending_certs: grpc.ServerCertificateConfiguration | None = None

    def _fetch_certs(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new handshake: hand over a rotated cert once."""
        pending, self._pending_certs = self._pending_certs, None
        return pending

    def log_stats(self) -> None:
        """SIGUSR1: counters an operator (or the benchmark) can read from the log; at warning
        level, so they are written whatever the log level: they were asked for."""
        lifecycle = self.lifecycle
        logger.warning("stats", **lifecycle.store.stats(), **usage(),
                    sessions=sum(1 for _ in lifecycle.sessions), queued=len(lifecycle.index.queued))

    async def run(self) -> None:
        cfg = self.cfg
        os.umask(0o077)  # queue, audit log and lock are the conductor's alone
        raise_fd_limit("conductor")
        material = Material.load(cfg.tls)
        self.material = material
        roster = load_players(cfg.players_file)
        self.revocation = Revocation(cfg.tls.crl, material.ca)
        self.revocation.load()
        lock = take_lock(cfg.state_dir)
        store = open_store(cfg.state_dir)
        audit = AuditLog(cfg.audit_log)
        sessions = Sessions(roster, await store.players())
        lifecycle = Lifecycle(store, sessions, audit, await DispatchIndex.rebuild(store))
        self.lifecycle = lifecycle
        local = LocalSocket(cfg.audience_socket, 0)
        server = self._server(lifecycle, local)
        port = await self._listen(server, local)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, self.log_stats)
        background = [asyncio.ensure_future(Dispatcher(lifecycle).run()),
                      asyncio.ensure_future(run_deadlines(lifecycle)),
                      asyncio.ensure_future(self._reloads()),
                      asyncio.ensure_future(self._watch_crl()),
                      asyncio.ensure_future(run_startup_grace(lifecycle, cfg.reconnect_grace)),
                      asyncio.ensure_future(run_retention(lifecycle, cfg.job_retention)),
                      asyncio.ensure_future(sweep(lambda: sessions, cfg.heartbeat_seconds, cfg.liveness_timeout))]
        lifecycle.wake()
        warn_if_expiring("conductor", material.certname, not_after(material.cert))
        logger.info("conductor_ready", listen=cfg.listen, port=port, socket=str(cfg.audience_socket),
                    relay_port=local.backend_port,
                    players=len(roster), pid=os.getpid(), certname=material.certname)
        try:
            await self.stopping.wait()
        finally:
            logger.info("conductor_stopping")
            for task in background:
                task.cancel()
            for session in sessions:
                session.close(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            await local.close()
            await server.stop(grace=2)
            store.close()
            audit.close()
            lock.close()
            logger.info("conductor_stopped")

    def _server(self, lifecycle: Lifecycle, local: LocalSocket) -> grpc.aio.Server:
        """Both services behind the one AuthInterceptor that admits every call."""
        cfg, material = self.cfg, self.material
        gate = Gate(lambda: lifecycle.sessions.roster, lambda: self.policy, self.revocation, local,
                    lifecycle.audit)
        options = [("grpc.so_reuseport", 0), *SERVER_KEEPALIVE, *MESSAGE_LIMITS]
        server = grpc.aio.server(options=options, interceptors=[AuthInterceptor(gate)])
        player_pb2_grpc.add_PlayerLinkServicer_to_server(
            PlayerLink(lifecycle, material.certname, cfg.heartbeat_seconds, cfg.liveness_timeout), server)
        self.audience = Audience(lifecycle, cfg.job_deadline, not_after(material.cert), lambda: self.policy)
        audience_pb2_grpc.add_AudienceServicer_to_server(self.audience, server)
        return server

    async def _listen(self, server: grpc.aio.Server, local: LocalSocket) -> int:
        """mTLS for players and remote audience, the relay port, then the unix socket."""
        cfg, material = self.cfg, self.material
        credentials = grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.ca),
            self._fetch_certs, require_client_authentication=True)
        try:
            port: int = server.add_secure_port(cfg.listen, credentials)
            local.backend_port = server.add_insecure_port("127.0.0.1:0")
        except RuntimeError as err:
            raise StartupError(f"cannot listen on {cfg.listen}: {err}") from None
        if port == 0 or local.backend_port == 0:
            raise StartupError(f"cannot listen on {cfg.listen}")
        try:
            cfg.audience_socket.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StartupError(f"cannot use audience_socket {cfg.audience_socket}: {err.strerror}") from None
        await server.start()
        try:
            await local.start()
        except OSError as err:
            raise StartupError(f"cannot listen on unix socket {cfg.audience_socket}: {err.strerror}") from None
        return port

    async def _reloads(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            logger.info("reload_requested")
            try:
                await self.reload()
            except Exception:
                logger.exception("reload_failed")  # the next SIGHUP tries again

    async def reload(self) -> None:
        """SIGHUP: players file, policy, CRL and our own certificate; each kept if bad."""
        try:
            roster = load_players(self.cfg.players_file)
        except ConfigError as err:
            logger.error("players_reload_failed", error=str(err), kept=len(self.lifecycle.sessions.roster))
        else:
            await self.lifecycle.players_removed(self.lifecycle.sessions.set_roster(roster))
        try:
            cfg = configuration.load_conductor(self.cfg.path)
            self.policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
            logger.info("policy_reloaded", rules=len(self.policy.rules), audience=len(self.policy.audience))
        except ConfigError as err:
            logger.error("policy_reload_failed", error=str(err))
        self._reload_crl()
        try:
            material = Material.load(self.cfg.tls)
        except StartupError as err:
            logger.error("certificate_reload_failed", error=str(err))
        else:
            if material.cert != self.material.cert or material.key != self.material.key:
                self._pending_certs = grpc.ssl_server_certificate_configuration(
                    [(material.key, material.cert)], material.ca)
                self.material = material
                self.audience.cert_not_after = not_after(material.cert)
                logger.info("certificate_rotated", not_after=self.audience.cert_not_after)
                warn_if_expiring("conductor", material.certname, self.audience.cert_not_after)
        self.lifecycle.revoked(self.revocation.refuses)

    def _reload_crl(self) -> None:
        try:
            self.revocation.load()
        except StartupError as err:
            logger.error("crl_unusable_failing_closed", error=str(err))
        else:
            if self.revocation.path is not None:
                logger.info("crl_loaded", revoked=len(self.revocation.crl.serials) if self.revocation.crl else 0)

    async def _watch_crl(self) -> None:
        """Reload the CRL when its file changes (Puppet rewrites it), not only on SIGHUP."""
        while True:
            await asyncio.sleep(CRL_POLL_SECONDS)
            if self.revocation.changed():
                self._reload_crl()
                self.lifecycle.revoked(self.revocation.refuses)


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon("conductor", argv, configuration.load_conductor,
                      lambda cfg: Conductor(cfg).run())


if __name__ == "__main__":
    raise SystemExit(main())
