"""Keeping player sessions alive cheaply, on both ends.

Each end reads with a plain ``await read()`` per message and writes from an outbox with a
plain ``await write()``: no timer, future or ``wait_for`` per message. Liveness and
heartbeats are one periodic :func:`sweep` over every session a process holds: a session
that has sent nothing for ``heartbeat`` seconds gets a heartbeat queued; a peer heard
nothing from for ``liveness`` seconds is given up on. So an idle session costs one
heartbeat message each way per ``heartbeat`` seconds and one check per sweep, and a
frozen peer is detected within ``liveness + heartbeat / 2`` seconds (DESIGN-NOTES §1.6:
heartbeats are real DATA frames, and gRPC keepalive pings run underneath as well).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

M = TypeVar("M")


class Peer(Protocol):
    heard_at: float  # time.monotonic() of the last message received
    sent_at: float   # time.monotonic() of the last message written

    def beat(self) -> None:
        """Queue a heartbeat."""

    def silent(self, seconds: float) -> None:
        """Nothing heard for ``seconds``: end the session."""


def sweep_interval(heartbeat: float, liveness: float) -> float:
    return max(0.05, min(heartbeat, liveness - heartbeat) / 2)


async def sweep(peers: Callable[[], Iterable[Peer]], heartbeat: float, liveness: float) -> None:
    """Forever: heartbeats for idle sessions, an end for silent ones. One loop for all."""
    interval = sweep_interval(heartbeat, liveness)
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for peer in peers():
            if now - peer.heard_at > liveness:
                peer.silent(now - peer.heard_at)
            elif now - peer.sent_at >= heartbeat:
                peer.beat()


async def write_all(outbox: asyncio.Queue[M], write: Callable[[M], Awaitable[Any]], peer: Peer) -> None:
    """Write every queued message, in order, forever (backpressure from the stream)."""
    while True:
        message = await outbox.get()
        peer.sent_at = time.monotonic()
        await write(message)


async def send_with_heartbeats(outbox: asyncio.Queue[M], write: Callable[[M], Awaitable[Any]],
                               heartbeat: float, beat: Callable[[], M]) -> None:
    """One session's writer: every queued message, and ``beat()`` once nothing was
    written for ``heartbeat`` seconds. Forever. (A process with many sessions uses
    :func:`sweep` instead of one ticker each.)"""
    peer = _Ticker(outbox, beat)
    ticker = asyncio.ensure_future(sweep(lambda: [peer], heartbeat, float("inf")))
    try:
        await write_all(outbox, write, peer)
    finally:
        ticker.cancel()


class _Ticker:
    def __init__(self, outbox: asyncio.Queue[M], beat: Callable[[], M]) -> None:
        self.outbox: asyncio.Queue[Any] = outbox
        self.make_beat = beat
        self.heard_at = self.sent_at = time.monotonic()

    def beat(self) -> None:
        self.outbox.put_nowait(self.make_beat())

    def silent(self, seconds: float) -> None:
        pass  # only writes are watched here


class Heard:
    """When one session last heard its peer; :meth:`watch` returns once it fell silent."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def now(self) -> None:
        self.at = time.monotonic()

    async def watch(self, liveness: float, heartbeat: float) -> None:
        interval = sweep_interval(heartbeat, liveness)
        while time.monotonic() - self.at <= liveness:
            await asyncio.sleep(interval)
