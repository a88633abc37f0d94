"""Which scores have a task running on this player, so an ``exclusive yes`` score's next
task waits its turn.

The conductor never sends two tasks of an exclusive score to one host at once; this is
the player's own second line of defence for when its view and the conductor's differ
(a task the conductor gave up as lost still running here, an older conductor, a .conf
changed to exclusive while a task of the score ran). In memory only: what was running
when the player restarted is occupied again before anything else starts
(:meth:`player.session.Player.recover`).
"""

from __future__ import annotations

import asyncio
from collections import Counter


class ScoreOccupancy:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        # Set (and dropped) when the score's last holder leaves; waiters then look again.
        self._freed: dict[str, asyncio.Event] = {}

    def busy(self, score: str) -> bool:
        return self._held[score] > 0

    def occupy(self, score: str) -> None:
        """A task of the score runs (or is about to) on this player; never waits."""
        self._held[score] += 1

    def vacate(self, score: str) -> None:
        """A task that occupied the score is over; wakes the tasks waiting for it."""
        self._held[score] -= 1
        if self._held[score] <= 0:
            del self._held[score]
            freed = self._freed.pop(score, None)
            if freed is not None:
                freed.set()

    async def take_turn(self, score: str) -> None:
        """Wait until no task of the score runs here, then occupy it. Woken waiters
        resume in the order they came, and the first one occupies the score before the
        others look (nothing is awaited between the check and :meth:`occupy`)."""
        while self.busy(score):
            await self._freed.setdefault(score, asyncio.Event()).wait()
        self.occupy(score)
