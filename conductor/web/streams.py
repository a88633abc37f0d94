"""Server-Sent Events: what every live page's stream shares.

* **A bounded number**: at most MAX_STREAMS at once (each holds a connection and a
  little state); one more is answered 503 before anything is sent.
* **Bounded memory, latest state wins**: a stream computes what to send when it can
  send it, never queues updates; a write that the client does not take within
  WRITE_TIMEOUT ends the stream (a reader that stopped reading holds nothing).
* **Heartbeats**: a comment line every HEARTBEAT_SECONDS, so proxies and the browser
  see a live connection, and a vanished client is noticed.
* **Ended by what would refuse the request now**: each stream is registered with the
  certificate it was admitted on (``conductor.auth.LiveStreams``, as open gRPC streams
  are); a CRL change, or a reload that removes the certname from ``[audience]``, ends it
  with a last event saying why. A conductor shutting down ends every stream the same way.
* **A last event**: ``end``, with what the page needs to show it is over; the page's
  script then closes its EventSource (which would otherwise reconnect by itself).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from conductor.auth import LiveStreams, current_identity
from conductor.web.calls import Refused
from orchestra import log
from orchestra.log import throttled
from orchestra.tls import PeerIdentity

logger = log.get("conductor")
T = TypeVar("T")

MAX_STREAMS = 1000
HEARTBEAT_SECONDS = 15.0
WRITE_TIMEOUT = 30.0
RETRY_MILLISECONDS = 5000  # how soon a browser tries again after a dropped connection


class Gone(Exception):
    """The client went away or stopped reading: the stream ends without a last word."""


class EventStream:
    """One ``text/event-stream`` answer."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                    "X-Accel-Buffering": "no"})

    async def start(self) -> None:
        await self.response.prepare(self.request)
        await self._write(f"retry: {RETRY_MILLISECONDS}\n\n")

    async def send(self, event: str, data: Any) -> None:
        """One event; its data is one line of JSON."""
        await self._write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n")

    async def beat(self) -> None:
        await self._write(": still here\n\n")

    async def _write(self, text: str) -> None:
        try:
            await asyncio.wait_for(self.response.write(text.encode()), WRITE_TIMEOUT)
        except (ConnectionError, TimeoutError, RuntimeError) as err:  # RuntimeError: the connection closed
            raise Gone(str(err)) from None


class Streams:
    """The event streams open now, each with the certificate it was admitted on."""

    def __init__(self, refuses: Callable[[PeerIdentity], str | None], limit: int = MAX_STREAMS) -> None:
        self.refuses = refuses
        self.limit = limit
        self.open = 0
        self.closing = asyncio.Event()  # the conductor is stopping: every stream says so and ends
        self._live = LiveStreams()

    def close_refused(self) -> int:
        """End the streams whose certificate would be refused now (revoked, or no longer an
        audience identity); returns how many."""
        return self._live.close_failing(self.refuses)

    async def serve(self, request: web.Request, body: Callable[[EventStream], Awaitable[None]]) -> web.StreamResponse:
        """Run ``body`` as one event stream: 503 when MAX_STREAMS are open; afterwards a
        last ``end`` event when it was ended from here (revocation, shutdown) or refused."""
        if request.method == "HEAD":  # the headers of a stream, and no stream
            return web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        if self.open >= self.limit:
            throttled(logger, "warning", "web_streams_full", key="streams", limit=self.limit, path=request.path[:300])
            raise Refused(503, f"{self.limit} live views are open; try again later")
        identity = current_identity.get()
        if identity is None:  # admission sets it for every request; fail closed all the same
            raise Refused(403, "no verified identity")
        self.open += 1
        task = self._live.opened(identity)
        stream = EventStream(request)
        try:
            await stream.start()
            await body(stream)
        except asyncio.CancelledError:
            reason = self._live.ended(task)
            if reason is None:
                raise
            if task is not None:
                task.uncancel()
            await self._last(stream, f"access ended: {reason}")
        except Refused as err:  # after the stream began: the conductor is stopping, or the job is gone
            await self._last(stream, err.message)
        except Gone:
            pass
        finally:
            self._live.ended(task)
            self.open -= 1
        return stream.response

    @staticmethod
    async def _last(stream: EventStream, message: str) -> None:
        try:
            await stream.send("end", {"message": message})
        except Gone:
            pass

    async def pump(self, items: AsyncIterator[T], stream: EventStream) -> AsyncGenerator[T, None]:
        """The items of ``items`` as they come, with a heartbeat on ``stream`` whenever
        none came for HEARTBEAT_SECONDS; stops (closing ``items``) when the conductor is
        stopping, or when the caller stops asking."""
        pending: asyncio.Future[T] | None = None
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            while not self.closing.is_set():
                if pending is None:
                    pending = asyncio.ensure_future(anext(items))
                waited: set[asyncio.Future[Any]] = {pending, closing}
                done, _ = await asyncio.wait(waited, timeout=HEARTBEAT_SECONDS,
                                             return_when=asyncio.FIRST_COMPLETED)
                if pending in done:
                    finished, pending = pending, None
                    try:
                        item = finished.result()
                    except StopAsyncIteration:
                        return
                    yield item
                elif not done:
                    await stream.beat()
            raise Refused(503, "conductor shutting down")
        finally:
            closing.cancel()
            if pending is not None:  # let the generator's own clean-up run before it is closed
                pending.cancel()
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()  # it ended anyway (the stream is over): nothing is left unread
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def ticks(self, seconds: float) -> AsyncIterator[None]:
        """Once at once, then every ``seconds`` until the conductor stops (heartbeats
        are not needed between ticks shorter than HEARTBEAT_SECONDS)."""
        while not self.closing.is_set():
            yield None
            try:
                await asyncio.wait_for(self.closing.wait(), seconds)
            except TimeoutError:
                pass
        raise Refused(503, "conductor shutting down")
