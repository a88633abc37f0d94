"""The PlayerLink service: admit a session, then turn each player message into an event.

The AuthInterceptor has already checked the certificate and the players file. Here: the
Hello and its protocol version, the session's reader and writer, and one lifecycle call
per message. Heartbeats and liveness are the one sweep of :mod:`orchestra.stream`.
Nothing here decides a task's state.

When the conductor drains (:meth:`PlayerLink.stop_taking`), every message already read
(a Hello being reconciled, a start request, a result, an inventory) is carried to its
end: its commit, and its answer (StartGrant, ResultAck) written to the player.
:meth:`PlayerLink.drained` waits for that. Sessions keep reading, so heartbeats and
liveness go on as usual, but what players send from then on is left alone (counted in
``ignored``), and a new session is refused: each player says it again to the next
conductor, a result until it is acknowledged, a start request after its next Hello.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from conductor.auth import SHUTTING_DOWN, current_identity, warn_if_expiring
from conductor.lifecycle import Lifecycle
from conductor.sessions import PlayerSession
from orchestra import log
from orchestra.inventory import PROTOCOL_VERSION
from orchestra.stream import write_all
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2, player_pb2_grpc

logger = log.get("conductor")
MAX_HANDLING = 256  # messages of one session being handled at once
# While draining, how often to look whether the answers queued for players have been
# written (once per shutdown, for at most drain_timeout: not worth a wakeup per write).
FLUSH_POLL = 0.02


@dataclass(eq=False)
class _Stream:
    """What a drain needs of one session's stream: its writer, and whether the writer is
    in the middle of a write (a message taken from the outbox is not written yet)."""

    writer: asyncio.Future[None] | None = None
    writing: bool = False


class PlayerLink(player_pb2_grpc.PlayerLinkServicer):
    def __init__(self, lifecycle: Lifecycle, conductor_name: str, heartbeat: float, liveness: float,
                 reconciled: Callable[[PlayerSession], None] | None = None) -> None:
        self.lifecycle = lifecycle
        self.sessions = lifecycle.sessions
        self.conductor_name = conductor_name
        self.heartbeat = heartbeat
        self.liveness = liveness
        # Told once a session's Hello has been reconciled (the conductor's recovery).
        self.reconciled = reconciled
        # False once the conductor drains: no new session, no new message handled.
        self.taking = True
        self.ignored = 0  # messages left alone since then (their players send them again)
        # Every message read from a player and being handled, over all sessions.
        self.handling: set[asyncio.Future[None]] = set()
        self._streams: dict[PlayerSession, _Stream] = {}

    def _track(self, future: asyncio.Future[None]) -> None:
        self.handling.add(future)
        future.add_done_callback(self.handling.discard)

    def stop_taking(self) -> int:
        """The conductor drains: no new session, and no message read from now on is
        handled. Returns how many messages already read are still being handled."""
        self.taking = False
        return len(self.handling)

    def unsent(self) -> int:
        """Sessions whose answers are not all written yet (a writer that ended, with its
        player gone, never will)."""
        return sum(1 for session, stream in self._streams.items()
                   if stream.writer is not None and not stream.writer.done()
                   and (stream.writing or not session.outbox.empty()))

    async def drained(self) -> None:
        """Until every message read has been handled and every answer it queued has been
        written to its player. Not bounded here: the caller bounds it (drain_timeout)."""
        while self.handling or self.unsent():
            if self.handling:
                await asyncio.wait(set(self.handling))
            else:
                await asyncio.sleep(FLUSH_POLL)

    async def _hello(self, identity: PeerIdentity, context: grpc.aio.ServicerContext) -> player_pb2.Hello:
        try:
            first = await asyncio.wait_for(context.read(), self.liveness)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello received")
        if first is grpc.aio.EOF or first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        if not self.taking:  # the drain began meanwhile: the player says it again to the next conductor
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        hello: player_pb2.Hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            logger.warning("player_refused", player=identity.certname, reason="protocol version",
                           version=hello.protocol_version)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"protocol version {hello.protocol_version} is not supported;"
                                f" this conductor speaks {PROTOCOL_VERSION}: upgrade the player or the"
                                " conductor so both run the same release")
        return hello

    async def Session(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        identity = current_identity.get()  # set by the AuthInterceptor, which admitted it
        if identity is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no verified client certificate")
        assert identity is not None
        hello = await self._hello(identity, context)
        session = PlayerSession(name=identity.certname, identity=identity,
                                max_concurrent=max(1, hello.max_concurrent))
        self.sessions.attach(session)
        logger.info("player_connected", player=session.name, scores=len(hello.scores),
                    spool=len(hello.spool), serial=session.serial)
        warn_if_expiring("player", session.name, identity.not_after)
        stream = self._streams[session] = _Stream()

        async def write(message: player_pb2.ConductorMessage) -> None:
            stream.writing = True
            try:
                await context.write(message)
            finally:
                stream.writing = False
        writer = stream.writer = asyncio.ensure_future(write_all(session.outbox, write, session))
        relay: asyncio.Future[None] | None = None
        handling: set[asyncio.Future[None]] = set()  # messages received, being handled
        try:
            session.send(welcome=player_pb2.Welcome(
                protocol_version=PROTOCOL_VERSION, conductor=self.conductor_name,
                heartbeat_seconds=int(self.heartbeat)))
            reconciling = asyncio.ensure_future(self.lifecycle.player_connected(session, hello))
            self._track(reconciling)
            await asyncio.shield(reconciling)  # see Lifecycle._apply
            if session.ready:
                self.lifecycle.output.reconnected(session.name)
                if self.reconciled is not None:
                    self.reconciled(session)
            # Read until the stream ends, or until the session is closed (liveness sweep,
            # replacement, removal, revocation): whichever comes first.
            relay = asyncio.ensure_future(self._relay(session, context, handling))
            closed = asyncio.ensure_future(session.closed.wait())
            try:
                await asyncio.wait({relay, closed, writer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
        finally:
            # Shielded: gRPC cancels this handler when the player's connection drops,
            # and the session must still be wound up to the end.
            await asyncio.shield(self._wind_up(session, relay, writer, handling))
        if session.close_code is not None:
            await context.abort(session.close_code, session.close_details)

    async def _wind_up(self, session: PlayerSession, relay: asyncio.Future[None] | None,
                       writer: asyncio.Future[None], handling: set[asyncio.Future[None]]) -> None:
        """Handle what was received, let the session go, and fail over what it held."""
        reconciled, session.ready = session.ready, False
        # The stream is over: a message still waiting for a full disk stops retrying (the
        # player says it again after its next Hello) instead of keeping the session attached.
        session.closed.set()
        if relay is not None:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
        if handling:  # to the end, even if the relay was cancelled while it waited for them
            await asyncio.gather(*handling, return_exceptions=True)
        writer.cancel()
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            logger.info("player_write_failed", player=session.name, error=repr(writer.exception()))
        self._streams.pop(session, None)
        self.sessions.detach(session)
        try:
            # A reconciled session knows every task it held; holding none, nothing can
            # fail over, and the store need not be asked (10,000 sessions end together
            # when the conductor stops).
            if session.in_flight or not reconciled:
                await self.lifecycle.player_gone(session.name)
            else:
                self.lifecycle.wake()
        finally:
            session.finished.set()
        logger.info("player_disconnected", player=session.name, reason=session.close_details or "stream ended")

    async def _relay(self, session: PlayerSession, context: grpc.aio.ServicerContext,
                     handling: set[asyncio.Future[None]]) -> None:
        """One plain read per message. Start requests and results are handled concurrently
        (at most MAX_HANDLING per session), so their commits join one group; the wind-up
        waits for every one of them before the session is let go."""
        room = asyncio.Semaphore(MAX_HANDLING)

        def done(future: asyncio.Future[None]) -> None:
            handling.discard(future)
            room.release()
            if not future.cancelled() and future.exception() is not None:
                logger.error("player_message_failed", player=session.name, error=repr(future.exception()))

        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            session.heard()
            kind = message.WhichOneof("body")
            if kind == "hello":
                session.close(grpc.StatusCode.INVALID_ARGUMENT, "hello sent twice")
                return
            if not self.taking and kind != "heartbeat":
                self.ignored += 1  # draining: heard (liveness), but left for the next conductor
                continue
            if kind == "inventory":
                # In order (a later list replaces an earlier one), and to the end even if
                # the session is wound up meanwhile.
                recording = asyncio.ensure_future(self.lifecycle.inventory_updated(session, message.inventory))
                handling.add(recording)
                recording.add_done_callback(handling.discard)
                self._track(recording)
                await asyncio.shield(recording)
                continue
            if kind == "output":  # handed on without waiting: a viewer holds what it can
                self.lifecycle.output.chunk(session.name, message.output)
                continue
            if kind not in ("start_request", "result"):
                continue  # a heartbeat: being heard was all it was for
            await room.acquire()
            future = asyncio.ensure_future(
                self.lifecycle.grant(session, message.start_request) if kind == "start_request"
                else self.lifecycle.result(session, message.result))
            handling.add(future)
            future.add_done_callback(done)
            self._track(future)
