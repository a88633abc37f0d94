"""Rollouts: a canary first, then a sliding window of tasks, stopped after too many failures.

Two halves. :func:`after_ending` is the rule, pure: what one task's ending does to its
job's phase and counters. The store applies it inside the transaction that records the
ending, so the phase, the counters and the tasks a stop skips are committed together,
and a restarted conductor finds the rollout exactly where it was.

:class:`Rollouts` is dispatch's side, in memory: which queued tasks of a rolling job may
be dispatched now. A task is *released* into the dispatch index only while fewer than
``batch`` of the job's tasks are released and not ended (a sliding window: the next one
starts as soon as one ends, not in waves), and during the canary phase only the canary
tasks are. The rest are *held*. Released is rebuilt after a restart from the tasks in
flight, so the window holds across restarts too.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from conductor.states import TaskState
from conductor.store.records import QueuedTask
from orchestra.joboptions import Rollout

CANARY, ROLLING, STOPPED, DONE = "canary", "rolling", "stopped", "done"
PHASES = (CANARY, ROLLING, STOPPED, DONE)
# A release prefers targets that are connected now; it looks this far down the held
# tasks for one before it takes the next in target order anyway.
RELEASE_LOOKAHEAD = 64


def first_phase(rollout: Rollout) -> str:
    """The phase a job starts in ("" when it has no rollout at all)."""
    if not rollout.gated:
        return ""
    return CANARY if rollout.canary else ROLLING


@dataclass(frozen=True)
class Standing:
    """A rollout's durable counters, as its job row keeps them."""

    phase: str
    canary_left: int  # canary tasks that have not succeeded (yet)
    failures: int
    reason: str = ""


def after_ending(rollout: Rollout, standing: Standing, number: int, state: TaskState) -> Standing:
    """One task (number ``number`` in target order) ended ``state`` for good: the
    rollout's phase and counters after it. Any canary that does not succeed stops the
    rollout; so does the failure that reaches ``max_failures``."""
    if standing.phase not in (CANARY, ROLLING):
        return standing
    failures = standing.failures + (1 if state.failure else 0)
    canary_left = standing.canary_left
    phase, reason = standing.phase, ""
    if number < rollout.canary:
        if state == TaskState.OK:
            canary_left -= 1
        elif phase == CANARY:
            phase, reason = STOPPED, f"canary task {number} ended {state.value}"
    if phase == CANARY and canary_left <= 0:
        phase = ROLLING
    if phase != STOPPED and rollout.max_failures is not None and failures >= rollout.max_failures:
        phase, reason = STOPPED, f"{failures} tasks failed (max failures {rollout.max_failures})"
    return Standing(phase, max(0, canary_left), failures, reason)


def after_retry(rollout: Rollout, canary_left: int) -> Standing:
    """A retry reopens a rollout with a fresh failure budget, in the canary phase again
    while a canary task has still not succeeded."""
    return Standing(CANARY if rollout.canary and canary_left else ROLLING, canary_left, 0)


@dataclass
class _Gate:
    rollout: Rollout
    phase: str
    released: set[str] = field(default_factory=set)
    held: list[tuple[int, str]] = field(default_factory=list)  # heap of (number, task id)
    tasks: dict[str, QueuedTask] = field(default_factory=dict)  # the held ones, by id

    def room(self) -> int:
        if self.phase not in (CANARY, ROLLING):
            return 0
        window = self.rollout.batch or len(self.released) + len(self.tasks)
        return window - len(self.released)


@dataclass
class Rollouts:
    """The jobs whose rollout holds tasks back, and the tasks each holds."""

    _gates: dict[str, _Gate] = field(default_factory=dict)

    def track(self, job_id: str, rollout: Rollout, phase: str, in_flight: Iterable[str] = ()) -> None:
        """A job with a rollout: new, or found open at start-up with these tasks in flight."""
        if rollout.gated and phase in (CANARY, ROLLING):
            self._gates[job_id] = _Gate(rollout, phase, set(in_flight))

    def gated(self, job_id: str) -> bool:
        return job_id in self._gates

    def offer(self, task: QueuedTask) -> bool:
        """A task (back) in the queue. True: it may go to the dispatch index now (no
        rollout, or released already and only sent back); False: held for later."""
        gate = self._gates.get(task.job_id)
        if gate is None or task.task_id in gate.released:
            return True
        if task.task_id not in gate.tasks:
            heapq.heappush(gate.held, (task.number, task.task_id))
        gate.tasks[task.task_id] = task
        return False

    def ended(self, job_id: str, task_id: str) -> None:
        """A task of the job ended (or left the queue for good): its place in the window
        is free. Its held copy, if any, is dropped (its heap entry goes stale)."""
        gate = self._gates.get(job_id)
        if gate is not None:
            gate.released.discard(task_id)
            gate.tasks.pop(task_id, None)

    def moved(self, job_id: str, phase: str) -> None:
        """The store moved the job's rollout to ``phase``: held tasks wait for ever once it
        stopped (the store skipped them in the same commit) or finished."""
        gate = self._gates.get(job_id)
        if gate is None:
            return
        if phase in (CANARY, ROLLING):
            gate.phase = phase
        else:
            del self._gates[job_id]

    def forget(self, job_id: str) -> None:
        self._gates.pop(job_id, None)

    def release(self, job_id: str, connected: Callable[[QueuedTask], bool]) -> list[QueuedTask]:
        """The held tasks of this job that may go to the dispatch index now: as many as
        the window has room for, canaries only in the canary phase, in target order but
        those whose player is connected first (see RELEASE_LOOKAHEAD)."""
        gate = self._gates.get(job_id)
        if gate is None:
            return []
        out: list[QueuedTask] = []
        room = gate.room()
        while room > 0 and gate.tasks:
            task = self._next(gate, connected)
            if task is None:
                break
            out.append(task)
            gate.released.add(task.task_id)
            room -= 1
        return out

    @staticmethod
    def _next(gate: _Gate, connected: Callable[[QueuedTask], bool]) -> QueuedTask | None:
        limit = gate.rollout.canary if gate.phase == CANARY else None
        looked: list[tuple[int, str]] = []
        chosen: QueuedTask | None = None
        first: tuple[int, str] | None = None
        while gate.held and len(looked) < RELEASE_LOOKAHEAD:
            entry = heapq.heappop(gate.held)
            task = gate.tasks.get(entry[1])
            if task is None:
                continue  # stale: it ended while held
            if limit is not None and entry[0] >= limit:
                heapq.heappush(gate.held, entry)
                break
            if connected(task):
                chosen = task
                break
            looked.append(entry)
            first = first or entry
        for entry in looked:
            heapq.heappush(gate.held, entry)
        if chosen is None and first is not None:
            # None connected: the first in target order, the heap's smallest again now.
            entry = heapq.heappop(gate.held)
            chosen = gate.tasks[entry[1]]
        if chosen is not None:
            del gate.tasks[chosen.task_id]
        return chosen

    def holding(self) -> int:
        """Tasks held back by rollouts (queued, not in the dispatch index)."""
        return sum(len(gate.tasks) for gate in self._gates.values())

    def held(self) -> dict[str, QueuedTask]:
        """Every task held back, by id (for the tests' comparison with the store)."""
        return {task_id: task for gate in self._gates.values() for task_id, task in gate.tasks.items()}

    def released(self, job_id: str) -> int:
        """How many of the job's tasks are released and not ended (at most its batch)."""
        gate = self._gates.get(job_id)
        return len(gate.released) if gate is not None else 0

    def batch(self, job_id: str) -> int:
        gate = self._gates.get(job_id)
        return gate.rollout.batch if gate is not None else 0

    def jobs(self) -> list[str]:
        return list(self._gates)
