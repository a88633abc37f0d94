"""The web view's TCP listener, doing TLS itself, one connection at a time.

asyncio could do the handshake for aiohttp, but then a connection would count nowhere
until its handshake was over, and a refused handshake would leave no trace. Here each
connection counts from the moment it is accepted: at most MAX_CONNECTIONS at once,
handshakes under way included (one more is closed at once), so the view can never take
the descriptors the players' port needs; a handshake has ``handshake_timeout`` seconds;
and a refused one (no certificate, another CA, expired, not TLS at all) is logged as
``tls_handshake_failed`` with ``listener="web"``, the peer and the reason, rate-limited,
as on the players' port. Once TLS is up, the connection is aiohttp's.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web
from aiohttp.web_runner import BaseRunner
from aiohttp.web_server import Server

from conductor.web.streams import MAX_STREAMS
from orchestra import log
from orchestra.log import throttled

logger = log.get("conductor")

MAX_CONNECTIONS = MAX_STREAMS + 200  # every live view, and room for its pages and assets


class Listener(web.BaseSite):
    def __init__(self, runner: BaseRunner, host: str, port: int, context: ssl.SSLContext,
                 handshake_timeout: float) -> None:
        super().__init__(runner)  # no ssl_context: the handshake is this listener's
        self.host, self.port, self.context, self.handshake_timeout = host, port, context, handshake_timeout
        self.bound = 0
        self.handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Accepted(self, server), self.host, self.port, reuse_address=True)
        self.bound = int(self._server.sockets[0].getsockname()[1]) if self._server.sockets else self.port

    async def stop(self) -> None:
        await super().stop()
        for task in list(self.handshakes):
            task.cancel()

    def full(self, server: Server) -> bool:
        return len(self.handshakes) + len(server.connections) >= MAX_CONNECTIONS


class _Accepted(asyncio.Protocol):
    """A connection until its handshake is over."""

    def __init__(self, listener: Listener, server: Server) -> None:
        self.listener, self.server = listener, server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = _peer(transport.get_extra_info("peername"))
        if self.listener.full(self.server):
            throttled(logger, "warning", "web_connection_refused", key="busy", peer=peer,
                      reason=f"{MAX_CONNECTIONS} connections already open")
            transport.close()
            return
        transport.pause_reading()  # the ClientHello waits in the socket for the TLS layer
        task = asyncio.ensure_future(self._secure(transport, peer))
        self.listener.handshakes.add(task)
        task.add_done_callback(self.listener.handshakes.discard)

    async def _secure(self, transport: asyncio.Transport, peer: str) -> None:
        handler = self.server()  # aiohttp's, for this connection
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, handler, self.listener.context, server_side=True,
                ssl_handshake_timeout=self.listener.handshake_timeout)
        except (OSError, EOFError, ValueError, TypeError) as err:  # start_tls has closed the connection
            reason = getattr(err, "reason", None) or type(err).__name__
            throttled(logger, "warning", "tls_handshake_failed", key=("web", reason), listener="web", peer=peer,
                      reason=str(reason), error=str(err)[:300])
            return
        if secured is None:  # closed meanwhile
            return
        handler.connection_made(secured)


def _peer(address: object) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)
