"""A score's limits beyond one host: ``concurrency N`` (at most N of its tasks in flight
across the fleet) and ``exclusive yes`` (never two at once on one host, whatever the
host's ``max_concurrent``).

Counted here, in memory, from the tasks dispatch sends and the lifecycle sees leave
flight; rebuilt at start-up from the tasks the queue has in flight, so the limits hold
across restarts. Only jobs whose score declares a limit are tracked: the rest of the
fleet pays nothing. Each job keeps the limits its targets reported when it was
submitted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from conductor.store.records import QueuedTask, ScoreRules


@dataclass
class Reservations:
    """What one dispatch pass has planned so far, per score and per (host, score)."""

    by_score: Counter[str] = field(default_factory=Counter)
    by_host: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class Limits:
    _jobs: dict[str, tuple[str, ScoreRules]] = field(default_factory=dict)
    _holding: dict[str, tuple[str, str]] = field(default_factory=dict)  # task -> (player, score)
    _by_score: Counter[str] = field(default_factory=Counter)
    _by_host: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Players (None: a one-of task) that had work held back by a score's limit: woken
    # when one of its tasks leaves flight.
    _blocked: dict[str, set[str | None]] = field(default_factory=dict)

    def track(self, job_id: str, score: str, rules: ScoreRules) -> None:
        if rules.limited:
            self._jobs[job_id] = (score, rules)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def restore(self, in_flight: Iterable[tuple[str, str, str]]) -> None:
        """At start-up: (task id, job id, player) of every task in flight."""
        for task_id, job_id, player in in_flight:
            self.claimed(task_id, job_id, player)

    def admits(self, task: QueuedTask, player: str, planned: Reservations) -> bool:
        """May ``task`` go to ``player`` now? If so, it is counted in ``planned``."""
        tracked = self._jobs.get(task.job_id)
        if tracked is None:
            return True
        score, rules = tracked
        if rules.concurrency and self._by_score[score] + planned.by_score[score] >= rules.concurrency:
            self._blocked.setdefault(score, set()).add(task.player)
            return False
        if rules.exclusive and self._by_host[(player, score)] + planned.by_host[(player, score)] > 0:
            self._blocked.setdefault(score, set()).add(task.player)
            return False
        planned.by_score[score] += 1
        planned.by_host[(player, score)] += 1
        return True

    def fleet_full(self, task: QueuedTask, planned: Reservations) -> bool:
        """Whether the task's score is at its fleet-wide limit, wherever it would go."""
        tracked = self._jobs.get(task.job_id)
        if tracked is None or not tracked[1].concurrency:
            return False
        return self._by_score[tracked[0]] + planned.by_score[tracked[0]] >= tracked[1].concurrency

    def claimed(self, task_id: str, job_id: str, player: str) -> None:
        """The task was committed as dispatched to ``player``."""
        tracked = self._jobs.get(job_id)
        if tracked is None or task_id in self._holding:
            return
        score = tracked[0]
        self._holding[task_id] = (player, score)
        self._by_score[score] += 1
        self._by_host[(player, score)] += 1

    def left(self, task_id: str) -> set[str | None]:
        """The task left flight (ended, or back in the queue): the players whose work
        its score's limit held back, to be woken (empty when nothing was waiting)."""
        holding = self._holding.pop(task_id, None)
        if holding is None:
            return set()
        player, score = holding
        self._by_score[score] -= 1
        if self._by_score[score] <= 0:
            del self._by_score[score]
        self._by_host[(player, score)] -= 1
        if self._by_host[(player, score)] <= 0:
            del self._by_host[(player, score)]
        return self._blocked.pop(score, set())

    def in_flight(self, score: str) -> int:
        return self._by_score[score]

    def snapshot(self) -> dict[str, object]:
        """Comparable content: the tasks counted in flight, by score and by (host, score)."""
        return {"holding": dict(self._holding), "by_score": dict(self._by_score),
                "by_host": dict(self._by_host)}
