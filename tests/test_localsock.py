"""The local audience socket's relay, with real sockets: a standby handing over ends the
connections it relays instead of leaving them to a gRPC server that may never answer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from conductor.localsock import LocalSocket


async def relayed_then_closed(tmp_path: Path, cut: bool) -> bytes | None:
    """A client's bytes relayed to a backend that accepts and never answers (a connection
    a stopping gRPC server has not finished setting up); then the socket is closed. What
    the client reads within 2 s: b"" (the connection ended) or None (still hanging)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    local = LocalSocket(tmp_path / "audience.sock", silent.getsockname()[1])
    await local.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(local.path))
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await writer.drain()
        loop = asyncio.get_running_loop()
        backend, _ = await loop.run_in_executor(None, silent.accept)  # the relay reached it
        for _ in range(100):
            if local.links:
                break
            await asyncio.sleep(0.01)
        assert len(local.links) == 2
        await local.close(cut=cut)
        assert not local.path.exists()
        try:
            return await asyncio.wait_for(reader.read(), 2)
        except TimeoutError:
            return None
        finally:
            writer.close()
            backend.close()
    finally:
        silent.close()


@pytest.mark.parametrize("cut", [True, False])
def test_closing_with_cut_ends_the_connections_being_relayed(tmp_path: Path, cut: bool) -> None:
    assert asyncio.run(relayed_then_closed(tmp_path, cut)) == (b"" if cut else None)
