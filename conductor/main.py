# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``conductor [--config FILE]``: the daemon holding the queue and the player sessions."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

# gRPC core reads GRPC_TRACE once, when grpc is first imported. Its handshaker trace is
# the only place gRPC says which peer a failed TLS handshake came from; orchestra.log
# turns those lines into rate-limited tls_handshake_failed events and drops the rest.
# The variable is removed again at once, so nothing the conductor starts inherits it.
# Measured with 10,000 players, the trace costs ~10 KB of memory per session and ~0.3 ms
# of CPU per connection; GRPC_TRACE set in the environment (even empty) turns this off.
_HANDSHAKE_TRACE = "GRPC_TRACE" not in os.environ and "grpc" not in sys.modules
if _HANDSHAKE_TRACE:
    os.environ["GRPC_TRACE"] = "handshaker"
import grpc  # noqa: E402

if _HANDSHAKE_TRACE:
    del os.environ["GRPC_TRACE"]

from conductor.audience import Audience
from conductor.audit import AuditLog
from conductor.auth import AuthInterceptor, Gate, Revocation, warn_if_expiring
from conductor import health
from conductor.dispatch import Dispatcher
from conductor.clusters import Clusters
from conductor.lifecycle import Lifecycle
from conductor.link import PlayerLink
from conductor.localsock import LocalSocket
from conductor.metrics import RELOADED_PARTS, Snapshot, families, take_snapshot
from conductor.players import load_players
from conductor.policy import parse_policy
from conductor.sessions import Sessions
from conductor.store import open_store
from conductor.timers import run_deadlines, run_retention, run_retries, run_startup_grace
from orchestra import config as configuration
from orchestra import log, sdnotify
from orchestra.daemon import raise_fd_limit, run_daemon, usage
from orchestra.errors import ConfigError, StartupError
from orchestra.stream import sweep
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE, Material, not_after
from orchestra.wire import audience_pb2_grpc, player_pb2_grpc

if TYPE_CHECKING:
    from orchestra.metrics import MetricsServer

logger = log.get("conductor")
CRL_POLL_SECONDS = 2.0
AUDIT_FLUSH_SECONDS = 2.0
# Descriptors kept back from the connection cap: the queue, its WAL, the logs, and two
# per local audience call (the socket and its relay connection).
FD_HEADROOM = 512


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


def make_socket_dir(path: Path) -> None:
    """Create the audience socket's directory when missing: mode 0750, so the socket's
    group can reach the 0660 socket (the daemon's umask would make it 0700). A directory
    that exists is the operator's (or systemd's RuntimeDirectory=) and is left alone."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        return
    os.chmod(path, 0o750)


class Conductor:
    def __init__(self, cfg: configuration.ConductorConfig) -> None:
        self.cfg = cfg
        self.policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
        self.stopping = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self._pending_certs: grpc.ServerCertificateConfiguration | None = None
        # Reloads that failed and kept the old value, by part (for the metrics).
        self.reload_failures: Counter[str] = Counter(dict.fromkeys(RELOADED_PARTS, 0))
        self.metrics: MetricsServer | None = None

    def _fetch_certs(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new handshake: hand over a rotated cert once."""
        pending, self._pending_certs = self._pending_certs, None
        return pending

    def log_stats(self) -> None:
        """SIGUSR1: counters an operator (or the benchmark) can read from the log; at warning
        level, so they are written whatever the log level: they were asked for."""
        lifecycle = self.lifecycle
        logger.warning("stats", **lifecycle.store.stats(), **usage(),
                       sessions=sum(1 for _ in lifecycle.sessions), queued=len(lifecycle.index.queued),
                       handshake_failures=log.counters["tls_handshake_failed"],
                       audit_pending=len(lifecycle.audit.backlog))

    async def run(self) -> None:
        cfg = self.cfg
        os.umask(0o077)  # queue, audit log and lock are the conductor's alone
        self.fd_limit = raise_fd_limit("conductor")
        material = Material.load(cfg.tls)
        self.material = material
        roster = load_players(cfg.players_file)
        self.revocation = Revocation(cfg.tls.crl, material.ca)
        self.revocation.load()
        lock = take_lock(cfg.state_dir)
        store = open_store(cfg.state_dir)
        audit = AuditLog(cfg.audit_log)
        sessions = Sessions(roster, await store.players())
        lifecycle = await Lifecycle.restore(store, sessions, audit, Clusters(self.policy.groups))
        self.lifecycle = lifecycle
        local = LocalSocket(cfg.audience_socket, 0)
        self.health = await health.starting()
        server, relay = self._servers(lifecycle, local)
        if cfg.metrics_listen:
            await lifecycle.restore_counts()
            self.metrics = self._serve_metrics()
        self._close_refused()  # players revoked while the conductor was down
        port = await self._listen(server, relay, local)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, self.log_stats)
        background = [asyncio.ensure_future(Dispatcher(lifecycle).run()),
                      asyncio.ensure_future(run_deadlines(lifecycle)),
                      asyncio.ensure_future(run_retries(lifecycle)),
                      asyncio.ensure_future(self._reloads()),
                      asyncio.ensure_future(self._watch_crl()),
                      asyncio.ensure_future(run_startup_grace(lifecycle, cfg.reconnect_grace)),
                      asyncio.ensure_future(run_retention(lifecycle, cfg.job_retention)),
                      asyncio.ensure_future(self._flush_audit(audit)),
                      asyncio.ensure_future(sweep(lambda: sessions, cfg.heartbeat_seconds, cfg.liveness_timeout))]
        lifecycle.wake()
        warn_if_expiring("conductor", material.certname, not_after(material.cert))
        logger.info("conductor_ready", listen=cfg.listen, port=port, socket=str(cfg.audience_socket),
                    relay_port=local.backend_port, fd_limit=self.fd_limit, max_connections=self.max_connections(),
                    players=len(roster), pid=os.getpid(), certname=material.certname)
        await self.health.start([health.AUDIENCE, health.PLAYER_LINK])
        sdnotify.ready(self._status())
        try:
            await self.stopping.wait()
        finally:
            logger.info("conductor_stopping")
            sdnotify.stopping()
            if self.metrics is not None:
                await self.metrics.close()
            await self.health.close()
            self.gate.stopping = True
            lifecycle.watchers.close()
            for task in background:
                task.cancel()
            for session in sessions:
                session.close(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            await local.close()
            await asyncio.gather(server.stop(grace=2), relay.stop(grace=2))
            store.close()
            audit.close()
            lock.close()
            logger.info("conductor_stopped")

    def _serve_metrics(self) -> MetricsServer:
        """The metrics listener (README, "Monitoring"): the conductor's state is read on
        this loop for each scrape; TLS with our own certificate when configured."""
        from orchestra import metrics  # prometheus_client: loaded only when asked for

        async def snapshot() -> Snapshot:
            return await take_snapshot(self)
        collector = metrics.LoopCollector(asyncio.get_running_loop(), "orchestra_conductor", snapshot, families)
        return metrics.serve(self.cfg.metrics_listen, metrics.new_registry(collector),
                             self.cfg.tls if self.cfg.metrics_tls else None, self.cfg.path)

    @staticmethod
    async def _flush_audit(audit: AuditLog) -> None:
        """Audit lines held back by a full disk reach the file once it has room, even
        when nothing new is recorded."""
        while True:
            await asyncio.sleep(AUDIT_FLUSH_SECONDS)
            audit.flush()

    def max_connections(self) -> int:
        """The cap on connections to the public port: what the open-file limit leaves after
        FD_HEADROOM descriptors kept for the queue, the logs and the audience socket."""
        return self.cfg.max_connections or max(FD_HEADROOM, self.fd_limit - FD_HEADROOM)

    def _servers(self, lifecycle: Lifecycle, local: LocalSocket) -> tuple[grpc.aio.Server, grpc.aio.Server]:
        """The public server (players and remote audience over mTLS) and the relay's own
        server for the local socket, each behind the one AuthInterceptor that admits every
        call. The relay has a server of its own so that a flood of connections to the
        public port, capped there, never locks local operators out."""
        cfg, material = self.cfg, self.material
        gate = Gate(lambda: lifecycle.sessions.roster, lambda: self.policy, self.revocation, local,
                    lifecycle.audit, lifecycle.player_revoked)
        self.gate = gate
        options = [("grpc.so_reuseport", 0), *SERVER_KEEPALIVE, *MESSAGE_LIMITS]
        public = grpc.aio.server(interceptors=[AuthInterceptor(gate)], options=[
            *options,
            # A connection that has not finished its TLS handshake by then is closed.
            ("grpc.server_handshake_timeout_ms", int(cfg.handshake_timeout * 1000)),
            ("grpc.max_allowed_incoming_connections", self.max_connections())])
        relay = grpc.aio.server(options=options, interceptors=[AuthInterceptor(gate)])
        player_pb2_grpc.add_PlayerLinkServicer_to_server(
            PlayerLink(lifecycle, material.certname, cfg.heartbeat_seconds, cfg.liveness_timeout), public)
        self.audience = Audience(lifecycle, cfg.job_deadline, not_after(material.cert), lambda: self.policy)
        audience_pb2_grpc.add_AudienceServicer_to_server(self.audience, public)
        audience_pb2_grpc.add_AudienceServicer_to_server(self.audience, relay)
        for server in (public, relay):
            health.add_to(server, self.health)
        return public, relay

    async def _listen(self, server: grpc.aio.Server, relay: grpc.aio.Server, local: LocalSocket) -> int:
        """mTLS for players and remote audience, the relay port, then the unix socket."""
        cfg, material = self.cfg, self.material
        credentials = grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.ca),
            self._fetch_certs, require_client_authentication=True)
        try:
            port: int = server.add_secure_port(cfg.listen, credentials)
            local.backend_port = relay.add_insecure_port("127.0.0.1:0")
        except RuntimeError as err:
            raise StartupError(f"cannot listen on {cfg.listen}: {err}") from None
        if port == 0 or local.backend_port == 0:
            raise StartupError(f"cannot listen on {cfg.listen}")
        try:
            make_socket_dir(cfg.audience_socket.parent)
        except OSError as err:
            raise StartupError(f"cannot use audience_socket {cfg.audience_socket}: {err.strerror}") from None
        await server.start()
        await relay.start()
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
            sdnotify.reloading()
            try:
                await self.reload()
            except Exception:
                logger.exception("reload_failed")  # the next SIGHUP tries again
            sdnotify.ready(self._status())

    def _status(self) -> str:
        """One line for ``systemctl status``."""
        sessions = self.lifecycle.sessions
        return (f"serving {self.cfg.listen}: {sum(1 for _ in sessions)} of"
                f" {len(sessions.roster)} players connected")

    async def reload(self) -> None:
        """SIGHUP: players file, policy, CRL and our own certificate; each kept if bad."""
        try:
            roster = load_players(self.cfg.players_file)
        except ConfigError as err:
            self.reload_failures["players_file"] += 1
            logger.error("players_reload_failed", error=str(err), kept=len(self.lifecycle.sessions.roster))
        else:
            await self.lifecycle.players_removed(self.lifecycle.sessions.set_roster(roster))
        try:
            cfg = configuration.load_conductor(self.cfg.path)
            self.policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
            self.lifecycle.clusters = Clusters(self.policy.groups)
            logger.info("policy_reloaded", rules=len(self.policy.rules), audience=len(self.policy.audience))
        except ConfigError as err:
            self.reload_failures["policy"] += 1
            logger.error("policy_reload_failed", error=str(err))
        self.lifecycle.refresh_drained()  # the players file or the groups may have changed
        self.lifecycle.wake()
        self._reload_crl()
        try:
            material = Material.load(self.cfg.tls)
        except StartupError as err:
            self.reload_failures["certificate"] += 1
            logger.error("certificate_reload_failed", error=str(err))
        else:
            if material.cert != self.material.cert or material.key != self.material.key:
                self._reload_metrics_tls()
                self._pending_certs = grpc.ssl_server_certificate_configuration(
                    [(material.key, material.cert)], material.ca)
                self.material = material
                self.audience.cert_not_after = not_after(material.cert)
                logger.info("certificate_rotated", not_after=self.audience.cert_not_after)
                warn_if_expiring("conductor", material.certname, self.audience.cert_not_after)
        self._close_refused()

    def _reload_metrics_tls(self) -> None:
        """A rotated certificate serves the metrics too, from the next connection on."""
        if self.metrics is None:
            return
        try:
            self.metrics.reload_tls(self.cfg.tls)
        except StartupError as err:
            self.reload_failures["certificate"] += 1
            logger.error("certificate_reload_failed", error=str(err), listener="metrics")

    def _close_refused(self) -> None:
        """Live sessions and streams are never re-checked by TLS: close the refused ones."""
        self.lifecycle.revoked(self.revocation.refuses, self.revocation.revoked)
        self.gate.streams.close_failing(self.revocation.refuses)

    def _reload_crl(self) -> None:
        try:
            self.revocation.load()
        except StartupError as err:
            self.reload_failures["crl"] += 1
            logger.error("crl_unusable_failing_closed", error=str(err))
        else:
            if self.revocation.path is not None:
                logger.info("crl_loaded", revoked=self.revocation.crl.count if self.revocation.crl else 0)

    async def _watch_crl(self) -> None:
        """Reload the CRL when its file changes (Puppet rewrites it), not only on SIGHUP."""
        while True:
            await asyncio.sleep(CRL_POLL_SECONDS)
            if self.revocation.changed():
                self._reload_crl()
                self._close_refused()


def main(argv: Sequence[str] | None = None) -> int:
    log.handshake_trace = _HANDSHAKE_TRACE
    return run_daemon("conductor", argv, configuration.load_conductor,
                      lambda cfg: Conductor(cfg).run())


if __name__ == "__main__":
    raise SystemExit(main())
