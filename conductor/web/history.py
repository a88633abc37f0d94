"""Tasks ended per minute over the last hour, for the overview's charts.

The lifecycle already counts every task that reaches a final state, by state (the
counters ``/metrics`` exposes). Sampling them every few seconds and keeping the
differences by minute gives the charts without a query of the queue and without a
record of its own: the history is in memory, starts with the conductor, and is gone
with it (the page says so). Pure: the caller says what the counters are and when.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from conductor.states import TERMINAL, TaskState

MINUTES = 60
# Endings that count as failures on the overview: every final state but ok, and but
# cancelled, which someone asked for.
NOT_OK = frozenset(state.value for state in TERMINAL) - {TaskState.OK.value, TaskState.CANCELLED.value}


@dataclass
class _Minute:
    minute: int  # whole minutes since the epoch
    ended: int = 0
    failed: int = 0


class History:
    """Endings per minute, for the last MINUTES minutes."""

    def __init__(self, counters: Mapping[str, int], now: float, minutes: int = MINUTES) -> None:
        """``counters``: tasks ended so far by state, as the lifecycle has them now (what
        ended before is not in the history)."""
        self.started_at = now
        self.minutes = minutes
        self._last = dict(counters)
        self._kept: deque[_Minute] = deque(maxlen=minutes)

    def sample(self, counters: Mapping[str, int], now: float) -> None:
        """Add what ended since the last sample to the current minute."""
        ended = failed = 0
        for state, count in counters.items():
            grown = count - self._last.get(state, 0)
            if grown > 0:
                ended += grown
                if state in NOT_OK:
                    failed += grown
        self._last = dict(counters)
        if not ended:
            return
        minute = int(now // 60)
        if not self._kept or self._kept[-1].minute != minute:
            self._kept.append(_Minute(minute))
        self._kept[-1].ended += ended
        self._kept[-1].failed += failed

    def series(self, now: float) -> tuple[list[int], list[int]]:
        """Tasks ended and tasks failed in each of the last MINUTES minutes, oldest
        first, the current minute last; minutes with none are 0."""
        current = int(now // 60)
        ended, failed = [0] * self.minutes, [0] * self.minutes
        for kept in self._kept:
            slot = self.minutes - 1 - (current - kept.minute)
            if 0 <= slot < self.minutes:
                ended[slot], failed[slot] = kept.ended, kept.failed
        return ended, failed
