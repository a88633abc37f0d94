"""The reconcile rules (CONTRACT.md §8): what a player's Hello means for each task.

Pure: given what the player's spool says and what the queue says, decide one step per
task. :meth:`conductor.lifecycle.Lifecycle.player_connected` carries the steps out.

* player has a finished result -> it follows the Hello in its own TaskResult message
  (protocol 3), accepted once (by task id and attempt) when it arrives; meanwhile the
  task is neither lost nor requeued, and holds no slot (it no longer runs);
* player holds a task the queue still assigns to it -> keep it in flight (and repeat
  the kill order if a cancel is pending);
* player holds a task the queue no longer assigns to it -> tell it to forget it;
* queue says dispatched, player never saw it (or holds only an earlier attempt of it)
  -> safe to send again (requeue);
* queue says started, player has no record (spool lost) -> ``lost``, never re-run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from conductor.states import IN_FLIGHT, TaskState
from conductor.store import TaskRecord
from orchestra.wire import player_pb2


class Action(Enum):
    ACCEPT_RESULT = "accept_result"  # a result embedded in the Hello (protocol 2)
    AWAIT_RESULT = "await_result"    # nothing to do now: the result is on its way
    KEEP = "keep"
    KEEP_AND_CANCEL = "keep_and_cancel"
    FORGET = "forget"
    REQUEUE = "requeue"
    LOSE = "lose"


@dataclass(frozen=True)
class Step:
    action: Action
    task_id: str
    attempt: int
    result: player_pb2.TaskResult | None = None


def plan(player: str, spool: Sequence[player_pb2.SpoolEntry],
         queue: Mapping[str, TaskRecord | None], held: Sequence[TaskRecord]) -> list[Step]:
    """Steps for one Hello.

    ``queue`` maps each spooled task id to the queue's record of it (None if unknown);
    ``held`` is every task the queue has in flight on this player.
    """
    steps: list[Step] = []
    for entry in spool:
        if entry.state == player_pb2.SPOOL_STATE_FINISHED:
            if entry.HasField("result"):
                steps.append(Step(Action.ACCEPT_RESULT, entry.task_id, entry.attempt, entry.result))
            else:
                steps.append(Step(Action.AWAIT_RESULT, entry.task_id, entry.attempt))
            continue
        task = queue.get(entry.task_id)
        if task is None or task.player != player or task.attempt != entry.attempt \
                or task.state not in IN_FLIGHT:
            steps.append(Step(Action.FORGET, entry.task_id, entry.attempt))
        elif task.state == TaskState.CANCELLING:
            steps.append(Step(Action.KEEP_AND_CANCEL, task.task_id, task.attempt))
        else:
            steps.append(Step(Action.KEEP, task.task_id, task.attempt))
    spooled = {(entry.task_id, entry.attempt) for entry in spool}
    for task in held:
        if (task.task_id, task.attempt) in spooled or task.state not in IN_FLIGHT:
            continue
        action = Action.REQUEUE if task.state == TaskState.DISPATCHED else Action.LOSE
        steps.append(Step(action, task.task_id, task.attempt))
    return steps
