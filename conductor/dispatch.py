"""Deciding what runs where: the dispatch loop and its pure choice of a player.

Event-driven: a submit, a connect, a freed slot or a reload wakes one loop, which reads
only the queued tasks that connected players with a free slot could take, picks a player
for each and hands the pair to the lifecycle (which commits before anything is sent).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence

from conductor.lifecycle import Lifecycle
from conductor.sessions import PlayerSession
from orchestra import log

logger = log.get("conductor")


def pick(candidates: Sequence[str], takers: Mapping[str, PlayerSession],
         rng: random.Random | None = None) -> PlayerSession | None:
    """The least busy candidate that can still take work (by share of slots in use, then
    count). ``takers`` is the pass's snapshot; a session that filled up, closed or was
    not reconciled yet is skipped. Ties are broken at random so equal players share the load.
    """
    ready = [s for name in candidates if (s := takers.get(name)) is not None
             and s.ready and s.free_slots > 0 and not s.closed.is_set()]
    if not ready:
        return None
    (rng or random).shuffle(ready)
    return min(ready, key=lambda s: (len(s.in_flight) / s.max_concurrent, len(s.in_flight)))


class Dispatcher:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.sessions = lifecycle.sessions

    async def run(self) -> None:
        wanted = self.lifecycle.dispatch_wanted
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                await self.dispatch_once()
            except Exception:
                logger.exception("dispatch_failed")
                await asyncio.sleep(1)
                wanted.set()

    async def dispatch_once(self) -> None:
        takers = self.sessions.takers()
        if not takers:
            return
        now = time.time()
        for task in await self.store.queued(set(takers)):
            if task.deadline_at <= now:
                continue  # the deadline timer expires it
            session = pick(task.candidates(), takers)
            if session is not None:
                await self.lifecycle.dispatch(session, task)
