"""The PlayerLink service: admit a session, then turn each player message into an event.

The AuthInterceptor has already checked the certificate and the players file. Here: the
Hello and its protocol version, the session's heartbeat and liveness loops, and one
lifecycle call per message. Nothing here decides a task's state.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from conductor.auth import current_identity, warn_if_expiring
from conductor.lifecycle import Lifecycle
from conductor.sessions import PlayerSession
from orchestra import log
from orchestra.inventory import PROTOCOL_VERSION
from orchestra.stream import PeerSilent, receive_until_silent, send_with_heartbeats
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2, player_pb2_grpc

logger = log.get("conductor")


class PlayerLink(player_pb2_grpc.PlayerLinkServicer):
    def __init__(self, lifecycle: Lifecycle, conductor_name: str, heartbeat: float, liveness: float) -> None:
        self.lifecycle = lifecycle
        self.sessions = lifecycle.sessions
        self.conductor_name = conductor_name
        self.heartbeat = heartbeat
        self.liveness = liveness

    async def _hello(self, identity: PeerIdentity, context: grpc.aio.ServicerContext) -> player_pb2.Hello:
        try:
            first = await asyncio.wait_for(context.read(), self.liveness)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello received")
        if first is grpc.aio.EOF or first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        hello: player_pb2.Hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            logger.warning("player_refused", player=identity.certname, reason="protocol version",
                           version=hello.protocol_version)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"protocol version {hello.protocol_version} is not supported;"
                                f" this conductor speaks {PROTOCOL_VERSION}")
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
        writer = asyncio.ensure_future(send_with_heartbeats(
            session.outbox, context.write, self.heartbeat,
            lambda: player_pb2.ConductorMessage(heartbeat=player_pb2.Heartbeat(sent_at=time.time()))))
        try:
            await context.write(player_pb2.ConductorMessage(welcome=player_pb2.Welcome(
                protocol_version=PROTOCOL_VERSION, conductor=self.conductor_name,
                heartbeat_seconds=int(self.heartbeat))))
            await self.lifecycle.player_connected(session, hello)
            await self._relay(session, context)
        finally:
            session.ready = False
            writer.cancel()
            self.sessions.detach(session)
            try:
                await self.lifecycle.player_gone(session.name)
            finally:
                session.finished.set()
            logger.info("player_disconnected", player=session.name,
                        reason=session.close_details or "stream ended")
        if session.close_code is not None:
            await context.abort(session.close_code, session.close_details)

    async def _relay(self, session: PlayerSession, context: grpc.aio.ServicerContext) -> None:
        closed = asyncio.ensure_future(session.closed.wait())
        try:
            async for message in receive_until_silent(context.read, self.liveness, closed):
                session.last_seen = time.time()
                kind = message.WhichOneof("body")
                if kind == "start_request":
                    await self.lifecycle.grant(session, message.start_request)
                elif kind == "result":
                    await self.lifecycle.result(session, message.result)
                elif kind == "hello":
                    session.close(grpc.StatusCode.INVALID_ARGUMENT, "hello sent twice")
                    return
        except PeerSilent:
            logger.warning("player_silent", player=session.name, seconds=self.liveness)
            session.close(grpc.StatusCode.UNAVAILABLE, "no message within the liveness timeout")
        finally:
            closed.cancel()
