"""Live output of a running task, read from the files its score writes anyway.

A follower exists only while the conductor asks for one (someone follows the job). It
reads the task's stdout and stderr files from where it left off, in chunks of at most
CHUNK_BYTES, and queues each for the session. The session's :class:`Window` bounds what
is queued and not yet written to the stream: when gRPC cannot send (a slow network, a
busy conductor), the follower waits and the file, not memory, holds what the score goes
on printing. A follower that falls more than MAX_BEHIND behind skips ahead, and its next
chunk says how many bytes it skipped. The score never waits for any of this: its output
goes to a file whatever happens here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from orchestra import log
from orchestra.wire import player_pb2

logger = log.get("player")

CHUNK_BYTES = 32 * 1024  # data in one OutputChunk at most
WINDOW_BYTES = 256 * 1024  # live output queued for a session and not yet written, at most
START_TAIL = 8 * 1024  # a follower begins this far before the end of what was printed
MAX_BEHIND = 1024 * 1024  # further behind than this, a follower skips ahead
POLL_SECONDS = 0.1  # how often a follower that caught up looks for more
# Live output of one task sent per second at most (with a burst of RATE_BURST): a score
# printing hundreds of MB/s costs the player and the conductor this much, not that much.
RATE_BYTES = 1024 * 1024
RATE_BURST = 4 * CHUNK_BYTES
# How long a task's result waits for its follower's last pass (what the score printed
# last) before it is recorded and sent anyway.
LAST_PASS_SECONDS = 2.0
STREAMS = (("stdout", player_pb2.OUTPUT_STREAM_STDOUT), ("stderr", player_pb2.OUTPUT_STREAM_STDERR))


class Window:
    """The live output bytes a session has queued and not yet written (one per session)."""

    def __init__(self, limit: int = WINDOW_BYTES) -> None:
        self.limit = limit
        self.pending = 0
        self.room = asyncio.Event()
        self.room.set()

    def queued(self, size: int) -> None:
        self.pending += size
        if self.pending >= self.limit:
            self.room.clear()

    def written(self, size: int) -> None:
        self.pending = max(0, self.pending - size)
        if self.pending < self.limit:
            self.room.set()


class _Source:
    """One output file of the task, read from ``position`` on."""

    def __init__(self, path: Path, stream: player_pb2.OutputStream, start: int | None = None) -> None:
        self.path, self.stream = path, stream
        self.fd: int | None = None
        self.start = start  # resume from here; None: the last START_TAIL bytes
        self.position = 0
        self.skipped = 0
        self.cut = False

    def read(self) -> bytes:
        """What was written since the last read (CHUNK_BYTES at most); b"" if nothing."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""  # not created yet (the score is being spawned)
            size = os.fstat(self.fd).st_size
            if self.start is None:
                self.position = self.skipped = max(0, size - START_TAIL)
            else:  # a size below it is caught just below: the cap emptied the file
                self.position = self.start
        size = os.fstat(self.fd).st_size
        if size < self.position:  # the output cap emptied the file: what was between is lost
            self.position, self.cut = 0, True
        if size - self.position > MAX_BEHIND:
            ahead = size - CHUNK_BYTES
            self.skipped += ahead - self.position
            self.position = ahead
        data = os.pread(self.fd, min(CHUNK_BYTES, size - self.position), self.position) if size > self.position else b""
        self.position += len(data)
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def follow(task_id: str, attempt: int, directory: Path, ended: asyncio.Event, window: Window,
                 send: Callable[[player_pb2.OutputChunk], None], starts: tuple[int, int] | None = None) -> None:
    """Send the task's output as it is written until the task ended and all of it that
    was there then is sent (or until cancelled: the conductor no longer asks). With
    ``starts`` (stdout, stderr offsets), resume there instead of at the last START_TAIL."""
    sources = [_Source(directory / name, stream, None if starts is None else starts[index])
               for index, (name, stream) in enumerate(STREAMS)]
    began, sent = time.monotonic(), 0
    try:
        while True:
            last = ended.is_set()  # a pass begun after the end reads everything there is
            progressed = False
            for source in sources:
                await window.room.wait()
                ahead = sent - RATE_BURST - RATE_BYTES * (time.monotonic() - began)
                # Over the rate: wait, and let the file hold what is printed meanwhile.
                await asyncio.sleep(ahead / RATE_BYTES if ahead > 0 else 0)
                data = source.read()
                offset = source.position - len(data)  # where data begins (after any skip or cut)
                if not data and not source.cut and not (last and source.skipped):
                    continue
                chunk = player_pb2.OutputChunk(task_id=task_id, attempt=attempt, stream=source.stream,
                                               data=data, skipped=source.skipped, cut=source.cut, offset=offset)
                source.skipped, source.cut = 0, False
                window.queued(len(data))
                sent += len(data)
                send(chunk)
                progressed = progressed or bool(data)
            if progressed:
                continue
            if last:
                return
            try:
                await asyncio.wait_for(ended.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
    except OSError as err:  # live output is a view: never a reason to disturb the task
        logger.warning("live_output_failed", task_id=task_id, error=str(err))
    finally:
        for source in sources:
            source.close()
