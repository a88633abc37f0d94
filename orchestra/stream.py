"""The two loops both ends of a player session run: heartbeats out, liveness in.

Either side sends a heartbeat when it has had nothing else to send for
``heartbeat`` seconds, and gives up on the peer after ``liveness`` seconds without a
message (DESIGN-NOTES §1.6: app heartbeats are real DATA frames, so they also keep
HTTP/2's ping accounting happy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

M = TypeVar("M")


class PeerSilent(Exception):
    """Nothing arrived from the peer within the liveness timeout."""


async def send_with_heartbeats(outbox: asyncio.Queue[M], write: Callable[[M], Awaitable[Any]],
                               heartbeat: float, beat: Callable[[], M]) -> None:
    """Write every queued message; write ``beat()`` after ``heartbeat`` idle seconds. Forever."""
    while True:
        try:
            message = await asyncio.wait_for(outbox.get(), heartbeat)
        except TimeoutError:
            message = beat()
        await write(message)


async def receive_until_silent(read: Callable[[], Awaitable[Any]], liveness: float,
                               *stoppers: asyncio.Future[Any]) -> AsyncGenerator[Any, None]:
    """Yield each message read; end at the end of the stream or when a stopper is done.

    Raises :class:`PeerSilent` when nothing arrives for ``liveness`` seconds.
    """
    while True:
        reader = asyncio.ensure_future(read())
        done, _ = await asyncio.wait({reader, *stoppers}, timeout=liveness,
                                     return_when=asyncio.FIRST_COMPLETED)
        if reader not in done:
            reader.cancel()
            if done:
                return
            raise PeerSilent(f"no message within {liveness:g} seconds")
        message = reader.result()
        if message is grpc.aio.EOF:
            return
        yield message
