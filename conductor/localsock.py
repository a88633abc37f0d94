"""The local audience socket, with the peer's verified Unix identity (SO_PEERCRED).

gRPC Python cannot tell who is on the other end of a unix socket (DESIGN-NOTES §5), so
the conductor accepts local connections itself, reads SO_PEERCRED from the kernel, and
relays the bytes to its gRPC server over a private loopback connection. The relay's
source port identifies the local peer to the gRPC handlers; a connection to that
loopback port that did not come through the relay has no entry and is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from orchestra import log

logger = log.get("conductor")
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


class LocalSocket:
    def __init__(self, path: Path, backend_port: int) -> None:
        self.path = path
        self.backend_port = backend_port
        self.peers: dict[int, PeerCred] = {}
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()  # both ends of every connection relayed now

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # stale from a crash; the caller holds the lock
        old = os.umask(0o117)  # born 0660: owner and group only
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)

    async def close(self, cut: bool = False) -> None:
        """Stop accepting and remove the socket; with ``cut``, also end the connections
        being relayed, rather than leave them to the gRPC server's stop: a standby handing
        over does, since its relay may keep a connection it had not finished setting up
        open until that connection's handshake timeout."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.path.unlink(missing_ok=True)
        if cut:
            for writer in list(self.links):
                writer.close()

    def lookup(self, peer: str) -> PeerCred | None:
        """The local peer behind a gRPC peer string like ``ipv4:127.0.0.1:PORT``."""
        host, _, port = peer.rpartition(":")
        if host != "ipv4:127.0.0.1" or not port.isdigit():
            return None
        return self.peers.get(int(port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        try:
            back_reader, back_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError as err:
            logger.error("local_relay_failed", error=str(err))
            writer.close()
            return
        port = back_writer.get_extra_info("sockname")[1]
        self.peers[port] = PeerCred(pid, uid, gid)
        self.links.update((writer, back_writer))
        try:
            await asyncio.gather(_pump(reader, back_writer), _pump(back_reader, writer))
        except asyncio.CancelledError:
            # Shutdown. Ending normally matters: on Python 3.11 asyncio's stream callback
            # calls exception() on the handler task, which raises (and logs a traceback)
            # for a task that ended cancelled.
            pass
        finally:
            self.peers.pop(port, None)  # before the port can be reused
            self.links.difference_update((writer, back_writer))
            for w in (back_writer, writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
