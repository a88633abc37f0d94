"""Who waits for which job: ``getstatus --wait`` parks on an event set when it finishes."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Watchers:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.closed = False  # set once at shutdown: every waiter wakes and answers UNAVAILABLE

    def watch(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        if self.closed:
            event.set()
        self._events[job_id].add(event)
        return event

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        events = self._events.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[job_id]

    def close(self) -> None:
        """Wake every waiter for good, so each stream ends with a clean answer before the
        server stops (a stream cancelled by the server's grace ends in a traceback)."""
        self.closed = True
        for events in self._events.values():
            for event in events:
                event.set()

    def job_finished(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()
