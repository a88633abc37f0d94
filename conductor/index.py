"""Dispatch's in-memory view of the queue, so no pass ever re-reads the backlog.

The store stays the source of truth: the index is rebuilt from it at start-up and
changed only after a commit, by the lifecycle, from what the store returned. It holds

* every queued task, by id;
* per player, a heap of its queued all-of tasks in dispatch order (QueuedTask.order:
  first in, first out, each point of priority worth PRIORITY_STEP_SECONDS of waiting), and
  which players have any (so a pass looks only at players with work);
* the queued one-of tasks, which any of their untried targets may take;
* a heap of (not before, task) for the retries that wait for their delay: such a task
  is queued but placed only once its time has come (:meth:`release_due`);
* a heap of (deadline, job) for every unfinished job, so the deadline timer sleeps until
  the next one and expires only the jobs that are due.

Tasks a rollout holds back (conductor.rollout) are not in the index at all until they
are released. A pass costs what it dispatches, not what is queued. :meth:`snapshot` is
what the tests compare with the store after random operations and restarts.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from conductor.store import QueuedTask

# A pass looks this many entries past the ones it takes on a player's queue for tasks a
# score's limit lets through, before it leaves the rest for the next pass.
TAKE_LOOKAHEAD = 256


@dataclass
class DispatchIndex:
    queued: dict[str, QueuedTask] = field(default_factory=dict)
    _all_of: dict[str, list[tuple[tuple[float, str, int], str]]] = field(default_factory=dict)
    _one_of: dict[str, QueuedTask] = field(default_factory=dict)
    _one_of_sorted: bool = True
    _deadlines: list[tuple[float, str]] = field(default_factory=list)
    _unfinished: dict[str, float] = field(default_factory=dict)
    # Taken out for a pass and not yet claimed: put back only if still here (a discard
    # while a pass held it means it left the queue meanwhile).
    _taken: set[str] = field(default_factory=set)
    _delayed: list[tuple[float, str]] = field(default_factory=list)

    # ---- queued tasks ------------------------------------------------------------------

    def add(self, task: QueuedTask) -> None:
        """A task (back) in the queue: after a submit or a requeue was committed, or
        released by its rollout. A retry waiting for its delay is placed when it is due."""
        self.queued[task.task_id] = task
        if task.not_before is not None and task.not_before > time.time():
            heapq.heappush(self._delayed, (task.not_before, task.task_id))
            return
        self._place(task)

    def _place(self, task: QueuedTask) -> None:
        if task.scope == "all" and task.player is not None:
            heapq.heappush(self._all_of.setdefault(task.player, []), (task.order, task.task_id))
        else:
            if self._one_of:
                last = next(reversed(self._one_of.values()))
                self._one_of_sorted = self._one_of_sorted and last.order <= task.order
            self._one_of[task.task_id] = task

    def discard(self, task_id: str) -> None:
        """The task left the queue (claimed, expired, cancelled, removed). Its heap entry
        goes stale and is skipped when reached."""
        self._taken.discard(task_id)
        task = self.queued.pop(task_id, None)
        if task is not None and task_id in self._one_of:
            del self._one_of[task_id]

    def players_with_work(self) -> list[str]:
        """Players with queued all-of tasks (or stale entries, dropped on their next take)."""
        return list(self._all_of)

    def has_work(self, player: str) -> bool:
        return player in self._all_of

    def release_due(self, now: float) -> list[QueuedTask]:
        """Retries whose delay has passed, placed now (returned, to wake their players)."""
        due = []
        while self._delayed and self._delayed[0][0] <= now:
            _, task_id = heapq.heappop(self._delayed)
            task = self.queued.get(task_id)
            if task is not None and task.not_before is not None and task.not_before <= now:
                self._place(task)
                due.append(task)
        return due

    def next_retry(self) -> float | None:
        """When the next delayed retry is due (None: none waits)."""
        while self._delayed and self._delayed[0][1] not in self.queued:
            heapq.heappop(self._delayed)
        return self._delayed[0][0] if self._delayed else None

    def take(self, player: str, count: int, now: float,
             admits: Callable[[QueuedTask], bool] | None = None) -> list[QueuedTask]:
        """Up to ``count`` of the player's all-of tasks in dispatch order, removed from the
        index (the caller claims them, or puts them back with :meth:`add`). Tasks past
        their deadline stay: the deadline timer expires them. So do tasks ``admits``
        refuses (a score's limit), looking at most TAKE_LOOKAHEAD of them."""
        heap = self._all_of.get(player)
        taken: list[QueuedTask] = []
        late: list[tuple[tuple[float, str, int], str]] = []
        while heap and len(taken) < count and len(late) < TAKE_LOOKAHEAD:
            entry = heapq.heappop(heap)
            task = self.queued.get(entry[1])
            if task is None or task.player != player or task.scope != "all":
                continue  # stale: it left the queue since
            if task.deadline_at <= now or (admits is not None and not admits(task)):
                late.append(entry)
                continue
            del self.queued[task.task_id]
            self._taken.add(task.task_id)
            taken.append(task)
        for entry in late:
            heapq.heappush(heap, entry)  # type: ignore[arg-type]
        if not heap:
            self._all_of.pop(player, None)
        return taken

    def one_of(self) -> list[QueuedTask]:
        """The queued one-of tasks, oldest first."""
        if not self._one_of_sorted:
            self._one_of = dict(sorted(self._one_of.items(), key=lambda item: item[1].order))
            self._one_of_sorted = True
        return list(self._one_of.values())

    def remove(self, tasks: Iterable[QueuedTask]) -> None:
        """Take these (one-of) tasks out for a pass, like :meth:`take`."""
        for task in tasks:
            self.discard(task.task_id)
            self._taken.add(task.task_id)

    def put_back(self, task: QueuedTask) -> None:
        """A task taken for a pass but not claimed: back in, unless it left the queue
        while the pass held it."""
        if task.task_id in self._taken:
            self._taken.discard(task.task_id)
            self.queued[task.task_id] = task
            self._place(task)

    # ---- deadlines ---------------------------------------------------------------------

    def job_opened(self, job_id: str, deadline_at: float) -> None:
        self._unfinished[job_id] = deadline_at
        heapq.heappush(self._deadlines, (deadline_at, job_id))

    def job_finished(self, job_id: str) -> None:
        self._unfinished.pop(job_id, None)
        if len(self._deadlines) > 2 * len(self._unfinished) + 1024:  # drop the finished ones' entries
            self._deadlines = [(at, job) for job, at in self._unfinished.items()]
            heapq.heapify(self._deadlines)

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._unfinished:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def reopen(self, job_ids: Iterable[str]) -> None:
        """Jobs handed out by :meth:`due` whose expiry failed: due again next time."""
        for job_id in job_ids:
            if job_id in self._unfinished:
                heapq.heappush(self._deadlines, (self._unfinished[job_id], job_id))

    def due(self, now: float) -> list[str]:
        """Unfinished jobs whose deadline has come: each is handed out once."""
        jobs: dict[str, None] = {}  # a job reopened by a retry may have two entries
        while self._deadlines and self._deadlines[0][0] <= now:
            _, job_id = heapq.heappop(self._deadlines)
            if self._unfinished.get(job_id, now + 1) <= now:
                jobs[job_id] = None
        return list(jobs)

    # ---- for tests and operators -------------------------------------------------------

    def open_jobs(self) -> list[str]:
        """Every unfinished job."""
        return list(self._unfinished)

    def depth(self) -> int:
        """Tasks waiting in the queue, those a dispatch pass holds right now included."""
        return len(self.queued) + len(self._taken)

    def oldest_created_at(self) -> float | None:
        """When the job of the longest-waiting queued task was submitted (None: nothing is
        queued; the head of each player's queue stands for it, which is its oldest task
        unless a younger one of higher priority is ahead). Looks at the head of each player's heap, dropping stale heads as
        :meth:`take` would, and at the oldest one-of task: the cost of a dispatch pass,
        not of the backlog."""
        oldest: float | None = None
        emptied = []
        queued = self.queued
        for player, heap in self._all_of.items():
            task = None
            while heap:
                task = queued.get(heap[0][1])
                if task is not None and task.player == player and task.scope == "all":
                    break
                heapq.heappop(heap)
                task = None
            if task is None:
                emptied.append(player)
            elif oldest is None or task.created_at < oldest:
                oldest = task.created_at
        for player in emptied:
            del self._all_of[player]
        if self._one_of:
            first = (next(iter(self._one_of.values())).created_at if self._one_of_sorted
                     else min(task.created_at for task in self._one_of.values()))
            oldest = first if oldest is None else min(oldest, first)
        return oldest

    def __iter__(self) -> Iterator[QueuedTask]:
        return iter(list(self.queued.values()))

    def snapshot(self) -> dict[str, object]:
        """Comparable content: queued tasks by id, each player's all-of queue in order,
        the one-of tasks in order, and the unfinished jobs' deadlines."""
        live = {player: list(dict.fromkeys(tid for _, tid in sorted(heap) if (t := self.queued.get(tid))
                                           is not None and t.scope == "all" and t.player == player))
                for player, heap in self._all_of.items()}
        return {
            "queued": dict(self.queued),
            "all_of": {player: tids for player, tids in live.items() if tids},
            "one_of": [task.task_id for task in self.one_of()],
            "deadlines": dict(self._unfinished),
        }
