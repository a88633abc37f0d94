"""Deciding what runs where: the dispatch loop and its pure choice of a player.

Event-driven: a submit, a connect, a freed slot or a reload wakes one loop. A pass reads
nothing from the store: it takes work from the in-memory index (:mod:`conductor.index`)
for the players whose slots grew since the last pass (or all players with work, after a
change that may affect anyone), places the one-of tasks on the least busy target, and
hands the whole plan to the lifecycle, which claims it in one commit before anything is
sent. One-of tasks are placed before all-of ones in each pass.

A drained player takes nothing new (its all-of tasks wait; a one-of task goes to another
target), and a task whose score is at its fleet-wide ``concurrency`` or, on that host,
``exclusive`` limit waits for one of that score's tasks to end (conductor.limits).
"""

from __future__ import annotations

import asyncio
import functools
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from conductor.lifecycle import Lifecycle
from conductor.limits import Reservations
from conductor.sessions import PlayerSession
from conductor.store import QueuedTask
from orchestra import log
from orchestra.log import throttled

logger = log.get("conductor")
# Claims committed per transaction: the first RunTasks of a large fan-out go out while
# the rest are still being claimed.
CLAIM_BATCH = 1000


def pick(candidates: Sequence[str], takers: Mapping[str, PlayerSession],
         rng: random.Random | None = None, planned: Mapping[str, int] | None = None) -> PlayerSession | None:
    """The least busy candidate that can still take work (by share of slots in use, then
    count; ``planned`` counts what this pass already gave each). ``takers`` is the pass's
    snapshot; a session that filled up, closed or was not reconciled yet is skipped. Ties
    are broken at random so equal players share the load.
    """
    planned = planned or {}
    ready = [s for name in candidates if (s := takers.get(name)) is not None
             and s.ready and s.free_slots - planned.get(s.name, 0) > 0 and not s.closed.is_set()]
    if not ready:
        return None
    (rng or random).shuffle(ready)

    def load(s: PlayerSession) -> tuple[float, int]:
        busy = len(s.in_flight) + planned.get(s.name, 0)
        return busy / s.max_concurrent, busy
    return min(ready, key=load)


class Dispatcher:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.sessions = lifecycle.sessions
        self.index = lifecycle.index

    async def run(self) -> None:
        wanted = self.lifecycle.dispatch_wanted
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                await self.dispatch_once()
            except sqlite3.OperationalError as err:  # a full disk: said once in a while, not every second
                throttled(logger, "error", "dispatch_failed", key=str(err), error=str(err))
                self.lifecycle.wake()
                await asyncio.sleep(1)
            except Exception:
                logger.exception("dispatch_failed")
                self.lifecycle.wake()
                await asyncio.sleep(1)

    def plan(self, now: float) -> list[tuple[PlayerSession, QueuedTask]]:
        """What to send now, taken out of the index (claimed next, or put back on failure)."""
        freed = self.lifecycle.take_freed()
        plan: list[tuple[PlayerSession, QueuedTask]] = []
        planned: Counter[str] = Counter()
        takers: dict[str, PlayerSession] = {}
        drained = self.lifecycle.drained
        limits, reserved = self.lifecycle.limits, Reservations()

        def admitted(task: QueuedTask, player: str) -> bool:
            return limits.admits(task, player, reserved)

        def taker(name: str) -> PlayerSession | None:
            session = self.sessions.get(name)
            if session is None or name in drained or not self.sessions.can_take(session):
                return None
            takers[name] = session
            return session

        placed = []
        for task in self.index.one_of():
            if task.deadline_at <= now:
                continue  # the deadline timer expires it
            candidates = task.candidates()
            ready = {n: s for n in candidates if (s := takers.get(n) or taker(n))}
            session = pick(candidates, ready, planned=planned)
            while session is not None and not limits.admits(task, session.name, reserved):
                # The score runs there already (exclusive): another target, unless the
                # score is at its fleet-wide limit, which no target changes.
                del ready[session.name]
                session = None if limits.fleet_full(task, reserved) else pick(candidates, ready, planned=planned)
            if session is not None:
                placed.append(task)
                plan.append((session, task))
                planned[session.name] += 1
        self.index.remove(placed)
        names = self.index.players_with_work() if freed is None else \
            [name for name in freed if self.index.has_work(name)]
        for name in names:
            session = takers.get(name) or taker(name)
            if session is None:
                continue
            room = session.free_slots - planned[name]
            if room > 0:
                for task in self.index.take(name, room, now, functools.partial(admitted, player=name)):
                    plan.append((session, task))
                    planned[name] += 1
        return plan

    async def dispatch_once(self) -> None:
        plan = self.plan(time.time())
        for start in range(0, len(plan), CLAIM_BATCH):
            try:
                await self.lifecycle.dispatch_many(plan[start:start + CLAIM_BATCH])
            except BaseException:
                for _, task in plan[start + CLAIM_BATCH:]:  # never claimed: still queued
                    self.index.put_back(task)
                raise
