"""The task state machine (CONTRACT.md §7): the one place that says which moves are legal.

The store installs the same table as a SQLite trigger, so an illegal transition is
rejected by the database itself, whatever code path tries it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from orchestra.wire import common_pb2


class TaskState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REFUSED = "refused"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REMOVED = "removed"
    LOST = "lost"
    CANCELLING = "cancelling"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def failure(self) -> bool:
        """Counts against a rollout's --max-failures."""
        return self in FAILURES

    @property
    def started(self) -> bool:
        """Granted: the score may be running, so the task can only end, never move."""
        return self in STARTED

    def to_wire(self) -> int:
        return int(common_pb2.TaskState.Value(f"TASK_STATE_{self.name}"))

    @classmethod
    def from_wire(cls, value: int) -> TaskState:
        """Raises ValueError for a value that names no state."""
        try:
            return cls[common_pb2.TaskState.Name(value).removeprefix("TASK_STATE_")]
        except (ValueError, KeyError):
            raise ValueError(f"no such task state: {value}") from None


TERMINAL = frozenset({
    TaskState.OK, TaskState.FAILED, TaskState.TIMED_OUT, TaskState.REFUSED, TaskState.EXPIRED,
    TaskState.CANCELLED, TaskState.REMOVED, TaskState.LOST, TaskState.SKIPPED,
})

_S = TaskState
# Not started yet: nothing can have run, so these may be re-sent, expired or removed.
UNSTARTED = frozenset({_S.QUEUED, _S.DISPATCHED})
STARTED = frozenset({_S.RUNNING, _S.CANCELLING})
# Assigned to a player that holds (or should hold) it in its spool.
IN_FLIGHT = frozenset({_S.DISPATCHED, *STARTED})
OPEN = frozenset({_S.QUEUED, *IN_FLIGHT})
# Endings a rollout counts against --max-failures (and that stop a canary): the task was
# meant to run and did not succeed. Expired, removed, cancelled and skipped tasks are the
# deadline's or an operator's doing, not the score's.
FAILURES = frozenset({_S.FAILED, _S.TIMED_OUT, _S.REFUSED, _S.LOST})
# Endings a score's `retries` retries by itself. Never lost: a lost task may have run, or
# may still be running, on a host the conductor cannot hear from.
AUTO_RETRIED = frozenset({_S.FAILED, _S.TIMED_OUT})
# Endings retryjob may send back to the queue, as a new attempt of the same task (refused:
# once the host has the score, or no earlier attempt is still running there).
RETRYABLE = frozenset({_S.FAILED, _S.TIMED_OUT, _S.LOST, _S.EXPIRED, _S.SKIPPED, _S.REFUSED})

ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    # Never sent anywhere yet: nothing can have run.
    _S.QUEUED: frozenset({_S.DISPATCHED, _S.EXPIRED, _S.CANCELLED, _S.REMOVED, _S.REFUSED, _S.SKIPPED}),
    # Sent, start not confirmed. Back to QUEUED only when the player proved it never saw
    # it (reconcile) or refused it (one-of failover).
    _S.DISPATCHED: frozenset({_S.QUEUED, _S.RUNNING, _S.OK, _S.FAILED, _S.TIMED_OUT,
                              _S.REFUSED, _S.EXPIRED, _S.CANCELLED, _S.REMOVED, _S.LOST}),
    # Started: it can only end; it is never moved or re-run.
    _S.RUNNING: frozenset({_S.CANCELLING, _S.OK, _S.FAILED, _S.TIMED_OUT, _S.CANCELLED, _S.LOST}),
    # Started, and its player told to kill it: ends cancelled once the player confirms,
    # or as it really ended if the score finished first.
    _S.CANCELLING: frozenset({_S.OK, _S.FAILED, _S.TIMED_OUT, _S.CANCELLED, _S.LOST}),
    # An ending is final, except that a retry (retryjob, or the score's `retries`) queues
    # an unsuccessful task again as a new attempt; the attempt that ended is kept.
    **{state: frozenset({_S.QUEUED} if state in RETRYABLE else ()) for state in TERMINAL},
}


class IllegalTransition(Exception):
    pass


def allowed(old: TaskState, new: TaskState) -> bool:
    return new in ALLOWED[old]


def check(old: TaskState, new: TaskState) -> None:
    if not allowed(old, new):
        raise IllegalTransition(f"task cannot go from {old} to {new}")


def allowed_pairs() -> list[tuple[str, str]]:
    return [(old.value, new.value) for old, targets in ALLOWED.items() for new in sorted(targets)]


def job_status(states: Iterable[TaskState]) -> str:
    """The original Orchestra's aggregate: pending, ok, failed or partial_fail."""
    states = list(states)
    if not states or any(not s.terminal for s in states):
        return "pending"
    good = sum(1 for s in states if s == TaskState.OK)
    if good == len(states):
        return "ok"
    return "partial_fail" if good else "failed"
