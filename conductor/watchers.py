"""Who waits for which job: ``getstatus --wait`` parks on an event set when the job
finishes; a live progress view (``--wait`` on a terminal) on one set whenever any of the
job's tasks changes state, and when it finishes."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict


class _Waiting:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)

    def add(self, job_id: str, closed: bool) -> asyncio.Event:
        event = asyncio.Event()
        if closed:
            event.set()
        self._events[job_id].add(event)
        return event

    def discard(self, job_id: str, event: asyncio.Event) -> None:
        events = self._events.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[job_id]

    def has(self, job_id: str) -> bool:
        return job_id in self._events

    def wake(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()


class Watchers:
    def __init__(self) -> None:
        self._finish = _Waiting()
        self._progress = _Waiting()
        # A version per followed job, new at each move and each first follow (never reused):
        # a progress read is current while its job's version is unchanged.
        self._moves: dict[str, int] = {}
        self._version = itertools.count(1)
        self.closed = False  # set once at shutdown: every waiter wakes and answers UNAVAILABLE

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set when the job finishes."""
        return self._finish.add(job_id, self.closed)

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        self._finish.discard(job_id, event)

    def follow(self, job_id: str) -> asyncio.Event:
        """An event set whenever one of the job's tasks moves (the follower clears it)."""
        if job_id not in self._moves:
            self._moves[job_id] = next(self._version)
        return self._progress.add(job_id, self.closed)

    def unfollow(self, job_id: str, event: asyncio.Event) -> None:
        self._progress.discard(job_id, event)
        if not self._progress.has(job_id):
            self._moves.pop(job_id, None)

    def moves(self, job_id: str) -> int:
        """The followed job's version (0 for a job nobody follows)."""
        return self._moves.get(job_id, 0)

    def close(self) -> None:
        """Wake every waiter for good, so each stream ends with a clean answer before the
        server stops (a stream cancelled by the server's grace ends in a traceback)."""
        self.closed = True
        self._finish.wake_all()
        self._progress.wake_all()

    def task_changed(self, job_id: str) -> None:
        if self._progress.has(job_id):
            self._moves[job_id] = next(self._version)
            self._progress.wake(job_id)

    def job_finished(self, job_id: str) -> None:
        self._finish.wake(job_id)
        self.task_changed(job_id)
