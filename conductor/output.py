"""Live output: from the players running a job's tasks to whoever follows the job.

Nothing streams while nobody looks. When someone follows a job (``getstatus --follow``,
the web view), the hub asks the player of each of its running tasks to watch that task's
output (``WatchOutput``), and again for every task that starts while the follow lasts;
when the last viewer of a task leaves, it asks the player to stop.

Memory is bounded at every step, and a slow viewer slows nothing but itself:

* the player reads the output files the score writes anyway, at most a window of chunks
  ahead of what gRPC has sent, and skips (counting the bytes) what it fell behind by;
* the hub hands each chunk to each viewer without waiting: a viewer holds at most
  VIEWER_BYTES; what does not fit is dropped and counted, and the viewer's next piece of
  that stream says how many bytes it missed;
* the reader of a viewer (an audience stream, a web page) takes what is there when it
  can send it.

The stored output tails and the output cap are untouched by any of this: live output is
a view, never a record.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field

from conductor.sessions import Sessions
from conductor.states import TaskState
from conductor.store import Change, Store
from orchestra import log
from orchestra.wire import player_pb2

logger = log.get("conductor")

VIEWER_BYTES = 1024 * 1024  # output one viewer holds for its reader at most
RECENT_BYTES = 8192  # of each stream of each watched task, for a viewer that comes later
MAX_VIEWERS = 1000  # viewers open at once (each can hold VIEWER_BYTES)
STREAMS = {player_pb2.OUTPUT_STREAM_STDOUT: "stdout", player_pb2.OUTPUT_STREAM_STDERR: "stderr"}
# A task prints while it runs, and while it is being stopped (cancelling: TERM, kill_grace).
WATCHABLE = frozenset({TaskState.RUNNING, TaskState.CANCELLING})


class TooManyViewers(RuntimeError):
    """MAX_VIEWERS are open: str() says so."""


@dataclass(frozen=True)
class Piece:
    """What a viewer gets: a piece of one host's output, or (``state`` set, no stream) a
    move of one of the job's tasks (running, or an end)."""

    host: str
    stream: str = ""   # "stdout" or "stderr"; "" for a task move
    data: bytes = b""  # raw bytes: may end mid-line, or mid UTF-8 character
    skipped: int = 0   # bytes of this stream not shown before data
    cut: bool = False  # the player's output cap emptied the file before data: an unknown amount lost
    state: str = ""    # for a task move: the task's new state


@dataclass(eq=False)
class Viewer:
    """One follower of a job (or of one host of it). Fed by the hub without waiting."""

    job_id: str
    host: str | None
    limit: int = VIEWER_BYTES
    closed: bool = False
    _queue: deque[Piece] = field(default_factory=deque)
    _held: int = 0
    _missed: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    # Task moves not taken yet: only the latest of each host (bounded by the job's hosts).
    _moves: dict[str, str] = field(default_factory=dict)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, host: str | None) -> bool:
        return self.host is None or self.host == host

    def offer(self, piece: Piece) -> bool:
        """Keep the piece if there is room (True); otherwise count it as missed, to be
        said with the next piece of its stream that fits (or when the reader catches up)."""
        if self.closed:
            return True
        if not piece.stream:
            self._moves[piece.host] = piece.state
            self._ready.set()
            return True
        if piece.stream:
            key = (piece.host, piece.stream)
            if self._held + len(piece.data) > self.limit:
                skipped, cut = self._missed.get(key, (0, False))
                self._missed[key] = (skipped + piece.skipped + len(piece.data), cut or piece.cut)
                self._ready.set()
                return False
            missed = self._missed.pop(key, None)
            if missed is not None:
                piece = Piece(piece.host, piece.stream, piece.data, piece.skipped + missed[0], piece.cut or missed[1])
            self._held += len(piece.data)
        self._queue.append(piece)
        self._ready.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def take(self) -> list[Piece]:
        """Everything held now, without waiting (what arrived before the job's end)."""
        if not self._queue and not self._missed and not self._moves:
            return []
        return self._taken()

    async def pieces(self) -> list[Piece]:
        """Everything held now (waiting for at least one piece); [] once closed."""
        while not self._queue and not self._missed and not self._moves and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed and not self._queue:
            return []
        return self._taken()

    def _taken(self) -> list[Piece]:
        """Tasks that started, then the output, then tasks that moved on (ended)."""
        started = [Piece(host, state=state) for host, state in self._moves.items() if state == "running"]
        taken = started + list(self._queue)
        self._queue.clear()
        self._held = 0
        # What was dropped and never followed by a piece that fit: said now, with no data.
        for (host, stream), (skipped, cut) in self._missed.items():
            taken.append(Piece(host, stream, b"", skipped, cut))
        self._missed.clear()
        taken += [Piece(host, state=state) for host, state in self._moves.items() if state != "running"]
        self._moves.clear()
        return taken


@dataclass
class _Watched:
    """A running task whose player was asked to watch its output, with the last
    RECENT_BYTES of each stream: what a viewer that comes later begins with."""

    job_id: str
    host: str
    attempt: int
    recent: dict[str, bytes] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)  # where the last chunk of each stream ended

    def keep(self, stream: str, chunk: player_pb2.OutputChunk) -> None:
        self.recent[stream] = (self.recent.get(stream, b"") + chunk.data)[-RECENT_BYTES:]
        self.ends[stream] = chunk.offset + len(chunk.data)

    def resume(self, task_id: str) -> player_pb2.WatchOutput:
        """Watch again from where the last chunks ended (the player's session was replaced)."""
        return player_pb2.WatchOutput(task_id=task_id, attempt=self.attempt, on=True, resume=bool(self.ends),
                                      stdout_from=self.ends.get("stdout", 0), stderr_from=self.ends.get("stderr", 0))


class OutputHub:
    def __init__(self, store: Store, sessions: Sessions) -> None:
        self.store = store
        self.sessions = sessions
        self._viewers: dict[str, set[Viewer]] = defaultdict(set)  # by job id
        self._watched: dict[str, _Watched] = {}  # by task id
        self.open_viewers = 0
        self.dropped_bytes = 0  # output a viewer had no room for (for the metrics)

    # ---- viewers ------------------------------------------------------------------------

    async def open(self, job_id: str, host: str | None = None) -> Viewer:
        """A viewer of the job's output from now on (the caller checked the access). The
        players of its running tasks are asked to watch them; each begins with the last
        part of what its task printed so far."""
        if self.open_viewers >= MAX_VIEWERS:
            raise TooManyViewers(f"{MAX_VIEWERS} live output viewers are open; try again later")
        viewer = Viewer(job_id, host)
        self._viewers[job_id].add(viewer)
        self.open_viewers += 1
        try:
            job = await self.store.get_job(job_id)
        except BaseException:  # cancelled (the follower left) or failed: never left open
            self.close(viewer)
            raise
        if viewer.closed:  # closed while the job was read
            return viewer
        for task in job.tasks if job is not None else ():
            if task.player is None or not viewer.wants(task.player):
                continue
            if task.state in WATCHABLE:
                self._watch(task.task_id, job_id, task.player, task.attempt, viewer)
            if host is not None:  # one host's follower learns where its task stands now
                viewer.offer(Piece(task.player, state=task.state.value))
        return viewer

    def close(self, viewer: Viewer) -> None:
        if viewer.closed and viewer not in self._viewers.get(viewer.job_id, ()):
            return
        viewer.close()
        viewers = self._viewers.get(viewer.job_id)
        if viewers is None or viewer not in viewers:
            return
        viewers.discard(viewer)
        self.open_viewers -= 1
        if not viewers:
            del self._viewers[viewer.job_id]
        for task_id, watched in list(self._watched.items()):
            if watched.job_id == viewer.job_id and not self._wanted(watched.job_id, watched.host):
                self._unwatch(task_id, watched)

    def close_all(self) -> None:
        """At shutdown: every viewer ends (its reader sees [] and finishes cleanly)."""
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                self.close(viewer)

    def _wanted(self, job_id: str, host: str | None) -> bool:
        return any(viewer.wants(host) for viewer in self._viewers.get(job_id, ()))

    def _watch(self, task_id: str, job_id: str, host: str, attempt: int, viewer: Viewer | None = None) -> None:
        """Ask the task's player to send its output; a task watched already gives a new
        viewer what it printed last instead (the player sent the beginning of its tail
        to the viewers that were there)."""
        known = self._watched.get(task_id)
        if known is not None and known.attempt == attempt:
            if viewer is not None:
                for stream, data in known.recent.items():
                    viewer.offer(Piece(host, stream, data))
            return
        self._watched[task_id] = _Watched(job_id, host, attempt)
        session = self.sessions.get(host)
        if session is not None:
            session.send(watch=player_pb2.WatchOutput(task_id=task_id, attempt=attempt, on=True))

    def _unwatch(self, task_id: str, watched: _Watched) -> None:
        del self._watched[task_id]
        session = self.sessions.get(watched.host)
        if session is not None:
            session.send(watch=player_pb2.WatchOutput(task_id=task_id, attempt=watched.attempt, on=False))

    # ---- from the lifecycle and the player link ------------------------------------------

    def moved(self, change: Change) -> None:
        """A task of some job moved (committed): start watching it if it now runs and is
        followed; tell the followers; forget it once it ended."""
        if change.state is not None and change.state not in WATCHABLE:
            watched = self._watched.get(change.task_id)
            if watched is not None:  # it ended: the player forgets the wish at once
                self._unwatch(change.task_id, watched)
        if change.job_id not in self._viewers or change.state is None or not change.applied:
            return
        host = change.player or ""
        if change.state in WATCHABLE and self._wanted(change.job_id, host):
            self._watch(change.task_id, change.job_id, host, change.attempt)
        for viewer in self._viewers[change.job_id]:
            if viewer.wants(host):
                viewer.offer(Piece(host, state=change.state.value))

    def reconnected(self, name: str) -> None:
        """A player's new session is ready: ask it again for the tasks still followed."""
        session = self.sessions.get(name)
        if session is None:
            return
        for task_id, watched in self._watched.items():
            if watched.host == name:
                session.send(watch=watched.resume(task_id))

    def chunk(self, player: str, chunk: player_pb2.OutputChunk) -> None:
        """A piece of live output from a player: to every viewer that wants it, now."""
        watched = self._watched.get(chunk.task_id)
        stream = STREAMS.get(chunk.stream)
        if watched is None or watched.host != player or watched.attempt != chunk.attempt or stream is None:
            if watched is None:
                # Nobody follows it (any more): say so, once per stray chunk, so the
                # player stops; a chunk of another player's task is ignored.
                session = self.sessions.get(player)
                if session is not None:
                    session.send(watch=player_pb2.WatchOutput(task_id=chunk.task_id, attempt=chunk.attempt,
                                                              on=False))
            return
        piece = Piece(player, stream, chunk.data, chunk.skipped, chunk.cut)
        watched.keep(stream, chunk)
        for viewer in self._viewers.get(watched.job_id, ()):
            if viewer.wants(player) and not viewer.offer(piece):
                self.dropped_bytes += len(piece.data)
