# PYTHON_ARGCOMPLETE_OK (tab completion: see README "Shell completion")
"""``conductor [--config FILE]``: the daemon holding the queue and the player sessions."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
from conductor.notify import Notifications
from conductor.auth import AuthInterceptor, Gate, Revocation, warn_if_expiring
from conductor import health
from conductor.dispatch import Dispatcher
from conductor.clusters import Clusters
from conductor.lifecycle import Lifecycle
from conductor.link import PlayerLink
from conductor.localsock import LocalSocket
from conductor.metrics import RELOADED_PARTS, Snapshot, families, take_snapshot
from conductor.players import load_players
from conductor.policy import Policy, Requester, parse_policy
from conductor.schedules import Schedules
from conductor.sessions import PlayerSession, Sessions
from conductor.state import ConductorState, Recovery, StateMachine
from conductor.store import open_store
from conductor.timers import run_deadlines, run_retention, run_retries, run_startup_grace
from orchestra import config as configuration
from orchestra import log, sdnotify
from orchestra.daemon import raise_fd_limit, run_daemon, usage
from orchestra.errors import ConfigError, OrchestraError, StartupError
from orchestra.stream import sweep
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE, Material, PeerIdentity, not_after
from orchestra.wire import audience_pb2, audience_pb2_grpc, player_pb2_grpc

if TYPE_CHECKING:
    from conductor.leadership import Lease
    from conductor.web.server import WebView
    from orchestra.metrics import MetricsServer

logger = log.get("conductor")
CRL_POLL_SECONDS = 2.0
AUDIT_FLUSH_SECONDS = 2.0
# Descriptors kept back from the connection cap: the queue, its WAL, the logs, and two
# per local audience call (the socket and its relay connection).
FD_HEADROOM = 512
# The services whose health follows the conductor's state, besides the overall "".
HEALTH_SERVICES = [health.AUDIENCE, health.PLAYER_LINK]


def _did_not_run(late: float) -> str:
    return f"the lease ran out {late:.1f} s ago while this conductor did not run to renew it"


class SteppedDown(OrchestraError):
    """This conductor led and lost the lease: it stopped, and systemd (Restart=on-failure)
    starts it again, as a standby."""


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


class StatefulAudience(Audience):
    """The Audience API, with the conductor's state in ``listplayers``' reply."""

    def __init__(self, lifecycle: Lifecycle, job_deadline: float, cert_not_after: float,
                 policy: Callable[[], Policy], state: StateMachine) -> None:
        super().__init__(lifecycle, job_deadline, cert_not_after, policy)
        self.state = state

    async def ListPlayers(self, request: audience_pb2.ListPlayersRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> audience_pb2.PlayerList:
        reply = await super().ListPlayers(request, context)
        reply.conductor_state = self.state.current.value
        return reply


class Conductor:
    def __init__(self, cfg: configuration.ConductorConfig) -> None:
        self.cfg = cfg
        self.policy = parse_policy(cfg.policy, cfg.groups, cfg.audience, cfg.path)
        self.state = StateMachine()
        self.stopping = asyncio.Event()
        self.stop_signal = ""
        self.stop_now = asyncio.Event()  # a second SIGTERM/SIGINT: stop draining at once
        self.recovered = asyncio.Event()  # every player awaited after the restart is back
        self.reload_requested = asyncio.Event()
        self._pending_certs: grpc.ServerCertificateConfiguration | None = None
        # Reloads that failed and kept the old value, by part (for the metrics).
        self.reload_failures: Counter[str] = Counter(dict.fromkeys(RELOADED_PARTS, 0))
        self.metrics: MetricsServer | None = None
        self.web: WebView | None = None
        self.lease: Lease | None = None  # [store] backend = "postgresql": leading or standing by
        self.lost = ""  # why this conductor stepped down as leader

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
        store_cfg = cfg.store
        # [[notifiers]] and [[audit_sinks]]: a plugin missing or failing stops the start here,
        # before standing by (their events are described from the queue once it is open).
        try:
            notifications = Notifications.configured(cfg, None)  # bound to the queue once open
            audit = AuditLog.configured(cfg)
            epoch = await self._stand_by(material) if store_cfg.backend == "postgresql" else None
        except BaseException:
            lock.close()
            raise
        if self.lease is not None and epoch is None:  # stopped while standing by
            audit.close()
            lock.close()
            logger.info("conductor_stopped")
            return
        # Renewed from now on: rebuilding from a large queue may outlast a lease.
        keeper = asyncio.ensure_future(self._keep_lease()) if self.lease is not None else None
        try:
            store = open_store(cfg.state_dir, store_cfg.backend, store_cfg.dsn, epoch=epoch,
                               on_lost=self._leadership_lost, timeout=store_cfg.lease_seconds)
        except BaseException:
            await self._give_up_lease(keeper)
            lock.close()
            raise
        notifications.bind(store)
        sessions = Sessions(roster, await store.players())
        lifecycle = await Lifecycle.restore(store, sessions, audit, Clusters(self.policy.groups))
        self.lifecycle = lifecycle
        lifecycle.on_finished.append(notifications.hook)
        notifications.start()
        # Read once, before any player can connect: who holds tasks in flight now.
        self.recovery = Recovery((task.player for task in await store.in_flight() if task.player), roster)
        local = LocalSocket(cfg.audience_socket, 0)
        self.health = await health.starting()
        server, relay = self._servers(lifecycle, local)
        if cfg.metrics_listen:
            await lifecycle.restore_counts()
            self.metrics = self._serve_metrics()
        self._close_refused()  # players revoked while the conductor was down
        port = await self._listen(server, relay, local)
        if cfg.web_listen:
            from conductor.web.server import WebView  # aiohttp: loaded only when asked for
            self.web = await WebView.start(self)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop_signalled, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._stop_signalled, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, self.log_stats)
        # What would start new work or change the queue by itself: stopped first on a stop.
        starters = [asyncio.ensure_future(Dispatcher(lifecycle).run()),
                    asyncio.ensure_future(run_deadlines(lifecycle)),
                    asyncio.ensure_future(run_retries(lifecycle)),
                    asyncio.ensure_future(self._reloads()),
                    asyncio.ensure_future(run_startup_grace(lifecycle, cfg.reconnect_grace)),
                    asyncio.ensure_future(run_retention(lifecycle, cfg.job_retention))]
        background = [*starters,
                      *([keeper] if keeper is not None else []),
                      asyncio.ensure_future(self._watch_crl()),
                      asyncio.ensure_future(self._flush_audit(audit)),
                      asyncio.ensure_future(sweep(lambda: sessions, cfg.heartbeat_seconds, cfg.liveness_timeout))]
        lifecycle.wake()
        await self.audience.workflows.restore()  # open workflows carry on from what is committed
        starters.append(asyncio.ensure_future(self.audience.schedules.run()))
        background.append(starters[-1])
        warn_if_expiring("conductor", material.certname, not_after(material.cert))
        logger.info("conductor_ready", listen=cfg.listen, port=port, socket=str(cfg.audience_socket),
                    relay_port=local.backend_port, fd_limit=self.fd_limit, max_connections=self.max_connections(),
                    players=len(roster), pid=os.getpid(), certname=material.certname)
        if self.recovery.done or cfg.reconnect_grace == 0:
            await self._become(ConductorState.SERVING, "no player holds tasks in flight" if not self.recovery.awaited
                               else "every player holding tasks in flight is back" if self.recovery.done
                               else "reconnect_grace is 0")
        else:
            await self._become(ConductorState.RECOVERING, "players holding tasks in flight are not back yet",
                               awaited=len(self.recovery.awaited), waiting=len(self.recovery.waiting),
                               reconnect_grace=cfg.reconnect_grace)
            recovering = asyncio.ensure_future(self._recover())
            starters.append(recovering)
            background.append(recovering)
        sdnotify.ready(self._status())
        try:
            await self.stopping.wait()
            logger.info("conductor_stopping", signal=self.stop_signal)
            sdnotify.stopping()
            await self._drain(starters)
        finally:
            if self.metrics is not None:
                await self.metrics.close()
            await self.health.close()
            self.gate.stopping = True
            lifecycle.watchers.close()
            if self.web is not None:
                await self.web.close()
            self.audience.workflows.close()
            for task in background:
                task.cancel()
            for session in sessions:
                session.close(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            await local.close()
            await asyncio.gather(server.stop(grace=2), relay.stop(grace=2))
            await notifications.close()  # bounded: what is queued gets CLOSE_SECONDS
            store.close()
            await self._give_up_lease(keeper)
            audit.close()
            lock.close()
            logger.info("conductor_stopped")
        if self.lost:
            raise SteppedDown(f"stepped down as leader: {self.lost}")

    def _advertised(self) -> str:
        """The address standbys name for this conductor while it leads."""
        port = self.cfg.listen.rpartition(":")[2]
        return self.cfg.store.advertise or f"{self.material.certname}:{port}"

    async def _stand_by(self, material: Material) -> int | None:
        """Serve refusals until this conductor takes the lease: its epoch, or None when
        stopped first (SIGTERM, SIGINT)."""
        from conductor.leadership import TRIES_PER_LEASE, Lease, Standby, holder_name, instance_name

        cfg = self.cfg.store
        lease = Lease(cfg.dsn, cfg.lease_seconds, holder_name(material.certname), self._advertised(),
                      instance_name(self.cfg.state_dir))
        self.lease = lease
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop_signalled, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._stop_signalled, "SIGINT")
        # Asked for now, done once leading (as their defaults would end the process).
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: logger.warning("stats", state="standby", **usage()))
        standby = Standby(self.cfg.listen, self.cfg.audience_socket, self._credentials(material),
                          [("grpc.server_handshake_timeout_ms", int(self.cfg.handshake_timeout * 1000)),
                           ("grpc.max_allowed_incoming_connections", self.max_connections())])
        try:
            make_socket_dir(self.cfg.audience_socket.parent)
            await standby.start()
        except (RuntimeError, OSError) as err:
            await standby.close()
            lease.close()
            raise StartupError(f"cannot listen on {self.cfg.listen} or {self.cfg.audience_socket}: {err}") from None
        self.state.move(ConductorState.STANDBY, "waiting for the lease", address=self._advertised())
        sdnotify.ready(f"standby {self.cfg.listen}: another conductor leads")
        reported = ""
        try:
            while not self.stopping.is_set():
                epoch = await lease.acquire()
                if epoch is not None:
                    break
                standby.refusals.leader = await lease.leader()
                seen = lease.error or f"leader {standby.refusals.leader or 'none'}"
                if seen != reported:  # said once per change, not every poll
                    reported = seen
                    if lease.error:
                        logger.warning("lease_unavailable", error=lease.error)
                    else:
                        logger.info("standing_by", leader=standby.refusals.leader or "")
                try:
                    await asyncio.wait_for(self.stopping.wait(), cfg.lease_seconds / TRIES_PER_LEASE)
                except TimeoutError:
                    pass
            else:
                await standby.close()
                lease.close()
                return None
        except BaseException:
            await standby.close()
            lease.close()
            raise
        logger.warning("leadership_taken", epoch=epoch, address=self._advertised(), lease_seconds=cfg.lease_seconds)
        await standby.handover()
        self.state.move(ConductorState.STARTING, "leading: the lease is ours", epoch=epoch)
        return epoch

    async def _keep_lease(self) -> None:
        """Renew the lease every fifth of it; step down when it was taken over, or when it
        could not be renewed before it may have expired (by our own clock, which runs
        ahead of the database's: the renewal was asked before the database stamped it)."""
        from conductor.leadership import TRIES_PER_LEASE

        lease = self.lease
        assert lease is not None
        every = lease.seconds / TRIES_PER_LEASE
        while True:
            await asyncio.sleep(every)
            late = time.monotonic() - lease.valid_until
            if late >= 0:  # asleep past the lease's end: frozen (SIGSTOP), or starved of CPU
                self._leadership_lost(_did_not_run(late))
                return
            try:  # a renewal stuck on an unreachable database ends with the lease
                renewed = await asyncio.wait_for(lease.renew(), max(0.0, lease.valid_until - time.monotonic()))
            except TimeoutError:
                late = time.monotonic() - lease.valid_until
                if late >= every:  # the timeout fired long after it was due: frozen mid-renewal
                    self._leadership_lost(_did_not_run(late))
                else:
                    self._leadership_lost(f"could not renew the lease in {lease.seconds:g} s:"
                                          " the database does not answer")
                return
            if renewed is False:
                self._leadership_lost("another conductor took the lease over")
                return
            if renewed is None and time.monotonic() >= lease.valid_until - every:
                self._leadership_lost(f"could not renew the lease in {lease.seconds:g} s: {lease.error}")
                return

    async def _give_up_lease(self, keeper: asyncio.Future[None] | None) -> None:
        """Stop renewing; end the lease now unless it is lost already (then a standby has it,
        or will once it expires)."""
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if self.lease is not None:
            if not self.lost:
                await self.lease.release()  # a standby takes over at once
            self.lease.close()

    def _leadership_lost(self, why: str) -> None:
        """Fenced, cut off, or out-leased: stop at once (nothing more can be committed),
        without waiting for player messages in hand; their players say them again to the
        next leader."""
        if self.lost or self.lease is None:
            return
        self.lost = why
        logger.error("leadership_lost", reason=why, epoch=self.lease.epoch)
        self.stop_signal = "leadership lost"
        self.stop_now.set()
        self.stopping.set()

    def _owner_revoked(self, who: Requester) -> str | None:
        """Why the CRL refuses the certificate a workflow or schedule runs as (None: it
        does not), as it would refuse that certificate's own calls."""
        return self.revocation.refuses(PeerIdentity(who.name, who.serial or 0, 0.0, who.issuer))

    def _stop_signalled(self, name: str) -> None:
        """SIGTERM or SIGINT: the first begins the drain, a second cuts it short."""
        if not self.stopping.is_set():
            self.stop_signal = name
            self.stopping.set()
        elif not self.stop_now.is_set():
            logger.warning("drain_cut_short", signal=name)
            self.stop_now.set()

    async def _become(self, state: ConductorState, reason: str, **fields: object) -> None:
        """Move to ``state`` and say so everywhere at once: the log (one ``conductor_state``
        event), health (the overall status and the state's own name), and systemd's
        STATUS line. The metrics read ``self.state`` at each scrape."""
        self.state.move(state, reason, **fields)
        await self.health.show(state, HEALTH_SERVICES)
        sdnotify.status(self._status())

    def _reconciled(self, session: PlayerSession) -> None:
        """A player's Hello was reconciled: one fewer to wait for after a restart."""
        if self.recovery.reconciled(session.name):
            self.recovered.set()

    async def _recover(self) -> None:
        """``recovering`` ends once every player that held tasks in flight when the
        conductor started is back and reconciled, or after reconnect_grace seconds, the
        moment :func:`run_startup_grace` fails over what the others were sent. (Cancelled
        when the conductor begins to drain.)"""
        grace = self.cfg.reconnect_grace
        try:
            await asyncio.wait_for(self.recovered.wait(), grace)
        except TimeoutError:
            pass
        if self.recovery.done:
            await self._become(ConductorState.SERVING, "every player holding tasks in flight is back")
        else:
            away = sorted(self.recovery.waiting)
            await self._become(ConductorState.SERVING, f"reconnect_grace of {grace:g} s passed",
                               still_away=len(away), players=away[:20])

    async def _drain(self, starters: Sequence[asyncio.Future[None]]) -> None:
        """Stop without cutting short what players already sent.

        At once: health NOT_SERVING, nothing new dispatched (the dispatch loop, the timers
        and reloads are stopped), the audience's calls that would change the queue and new
        player sessions refused (UNAVAILABLE), and no message a player sends from then on
        is handled. The messages already read (Hellos being reconciled, start requests,
        results) are committed and answered to their players, for at most drain_timeout
        seconds; a second signal stops the wait at once. Whatever is left or cut short is
        safe: a player re-sends a result until it is acknowledged, and asks again to start
        after its next Hello.
        """
        self.gate.stopping = True
        self.audience.workflows.stopping = True  # a step that ends now starts nothing new
        for task in starters:
            task.cancel()
        started = time.monotonic()
        in_flight = self.link.stop_taking()
        await self._become(ConductorState.DRAINING, f"{self.stop_signal or 'stop'} received",
                           handlers=in_flight, drain_timeout=self.cfg.drain_timeout)
        drained = asyncio.ensure_future(self.link.drained())
        cut_short = asyncio.ensure_future(self.stop_now.wait())
        try:
            await asyncio.wait({drained, cut_short}, timeout=self.cfg.drain_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            cut_short.cancel()
        finished = not self.link.handling and not self.link.unsent()  # (drain_timeout 0: nothing waited for)
        seconds = round(time.monotonic() - started, 3)
        if finished:
            logger.info("conductor_drained", outcome="done", handlers=in_flight, left=0, seconds=seconds,
                        ignored=self.link.ignored, drain_timeout=self.cfg.drain_timeout)
        else:  # what is left is said again by its player to the next conductor
            logger.warning("conductor_drained", outcome="cut_short" if self.stop_now.is_set() else "timed_out",
                           handlers=in_flight, left=len(self.link.handling), unsent=self.link.unsent(),
                           seconds=seconds, ignored=self.link.ignored, drain_timeout=self.cfg.drain_timeout)

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
        self.link = PlayerLink(lifecycle, material.certname, cfg.heartbeat_seconds, cfg.liveness_timeout,
                               reconciled=self._reconciled)
        player_pb2_grpc.add_PlayerLinkServicer_to_server(self.link, public)
        self.audience = StatefulAudience(lifecycle, cfg.job_deadline, not_after(material.cert),
                                         lambda: self.policy, self.state)
        self.audience.schedules = Schedules(lifecycle, self.audience.submissions, self.audience.workflows)
        self.audience.submissions.revoked = self._owner_revoked
        audience_pb2_grpc.add_AudienceServicer_to_server(self.audience, public)
        audience_pb2_grpc.add_AudienceServicer_to_server(self.audience, relay)
        for server in (public, relay):
            health.add_to(server, self.health)
        return public, relay

    def _credentials(self, material: Material) -> grpc.ServerCredentials:
        """mTLS: a client certificate of the CA required; a rotated certificate is served
        from the next handshake on."""
        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.ca),
            self._fetch_certs, require_client_authentication=True)

    async def _listen(self, server: grpc.aio.Server, relay: grpc.aio.Server, local: LocalSocket) -> int:
        """mTLS for players and remote audience, the relay port, then the unix socket."""
        cfg, material = self.cfg, self.material
        credentials = self._credentials(material)
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
        """One line for ``systemctl status``, beginning with the conductor's state."""
        sessions, state = self.lifecycle.sessions, self.state.current
        connected = f"{sum(1 for _ in sessions)} of {len(sessions.roster)} players connected"
        if state is ConductorState.RECOVERING:
            return (f"recovering {self.cfg.listen}: waiting up to {self.cfg.reconnect_grace:g} s for"
                    f" {len(self.recovery.waiting)} players holding tasks in flight; {connected}")
        if state is ConductorState.DRAINING:
            return f"draining: finishing what players already sent (at most {self.cfg.drain_timeout:g} s)"
        return f"{state.value} {self.cfg.listen}: {connected}"

    async def reload(self) -> None:
        """SIGHUP: players file, policy, CRL and our own certificate; each kept if bad."""
        try:
            roster = load_players(self.cfg.players_file)
        except ConfigError as err:
            self.reload_failures["players_file"] += 1
            logger.error("players_reload_failed", error=str(err), kept=len(self.lifecycle.sessions.roster))
        else:
            removed = self.lifecycle.sessions.set_roster(roster)
            if self.recovery.removed(removed):  # a player that can never come back is not awaited
                self.recovered.set()
            await self.lifecycle.players_removed(removed)
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
        """A rotated certificate serves the metrics and the web view too, from the next
        connection on."""
        listeners: list[tuple[str, MetricsServer | WebView | None]] = [("metrics", self.metrics), ("web", self.web)]
        for name, listener in listeners:
            if listener is None:
                continue
            try:
                listener.reload_tls(self.cfg.tls)
            except StartupError as err:
                self.reload_failures["certificate"] += 1
                logger.error("certificate_reload_failed", error=str(err), listener=name)

    def _close_refused(self) -> None:
        """Live sessions and streams are never re-checked by TLS: close the refused ones."""
        self.lifecycle.revoked(self.revocation.refuses, self.revocation.revoked)
        self.gate.streams.close_failing(self.revocation.refuses)
        if self.web is not None:  # its live views end on a removal from [audience] too
            self.web.close_refused()

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
