"""The conductor's durable queue, behind one small interface.

:class:`Store` is the whole vocabulary the rest of the conductor uses: verbs that take
and return the typed records of :mod:`conductor.store.records`. No row, tuple or column
name leaves a backend. Each verb is one atomic transaction committed before it returns,
and every state change goes through the state table of :mod:`conductor.states`.

Two backends implement it with the same SQL (:mod:`conductor.store.sql`): SQLite, the
embedded default (:mod:`conductor.store.sqlite`), and PostgreSQL, one queue for a leading
conductor and its standbys (:mod:`conductor.store.postgresql`). Conditional moves
(``expect_*``) report a task that moved on instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from conductor.states import TaskState
from conductor.store.records import (
    AttemptRecord, Change, Claimed, Drain, Expiry, InFlight, JobFilter, JobProgress, JobRecord, JobSummary,
    KeyedJob, NewJob, NewStep, NewWorkflow, OpenJob, PendingTask, PlayerRecord, QueuedTask, Retried, ScheduleFire,
    ScheduleRecord, ScoreRules, StepRecord, StepSettled, Submitted, TaskRecord, TaskRef, WorkflowRecord,
    WorkflowSubmitted,
)
from orchestra.outcome import TaskOutcome

__all__ = ["AttemptRecord", "Change", "Claimed", "Drain", "Expiry", "InFlight", "JobFilter", "JobProgress",
           "JobRecord", "JobSummary", "KeyedJob", "NewJob", "NewStep", "NewWorkflow", "OpenJob", "PendingTask",
           "PlayerRecord", "QueuedTask", "Retried", "ScheduleFire", "ScheduleRecord", "ScoreRules", "StepRecord",
           "StepSettled", "Store", "Submitted", "TaskRecord", "TaskRef", "WorkflowRecord", "WorkflowSubmitted",
           "open_store"]


class Store(Protocol):
    # ---- jobs
    async def submit(self, job: NewJob) -> Submitted:
        """Commit a job and its queued tasks (or find the job its idempotency key names)."""
    async def find_keyed(self, requester: str, key: str) -> KeyedJob | None:
        """The job this requester's idempotency key names, if any."""
    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def purge_finished(self, before: float) -> int:
        """Forget jobs finished before ``before``; returns how many."""
    async def delete_job(self, job_id: str) -> bool | None:
        """Forget one finished job: True; False: it is not finished; None: no such job."""
    async def open_jobs(self) -> list[OpenJob]:
        """Every job not finished, with its deadline (the deadline heap's source), its
        rollout and its score's limits."""
    async def retry(self, job_id: str, wanted: Collection[TaskState]) -> Retried:
        """Queue the job's tasks that ended in ``wanted`` again, as new attempts."""
    async def list_jobs(self, match: JobFilter, limit: int,
                        before: tuple[float, str] | None = None) -> list[JobSummary]:
        """Up to ``limit`` jobs that match, newest first, from an index; only those created
        before ``before`` (created_at, job_id), to page on from the last one seen."""
    async def task_counts(self, job_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        """Each job's tasks by state."""
    async def job_progress(self, job_id: str, slowest: int = 5) -> JobProgress | None:
        """A job's tasks by state and its open tasks waiting longest, without their outputs."""

    # ---- tasks
    async def task(self, task_id: str) -> TaskRecord | None: ...
    async def tasks_of(self, player: str, wanted: Iterable[TaskState]) -> list[TaskRecord]: ...
    async def queued(self) -> list[QueuedTask]:
        """Every queued task, oldest first: the dispatch index's source."""
    async def players_with(self, state: TaskState) -> list[str]: ...
    async def in_flight(self) -> list[InFlight]:
        """Every task dispatched and not ended: the score limits' and rollouts' source."""
    async def open_task_counts(self) -> dict[TaskState, int]:
        """How many tasks are in each open state (queued, dispatched, running, cancelling)."""
    async def claim(self, task_id: str, player: str) -> Claimed | None:
        """queued -> dispatched to player with a new attempt; None if no longer queued."""
    async def claim_many(self, pairs: Sequence[tuple[str, str]]) -> list[Claimed]:
        """:meth:`claim` for each (task, player), in one commit; those no longer queued are left out."""
    async def transition(self, task_id: str, new: TaskState, *, detail: str,
                         expect_attempt: int | None = None, expect_player: str | None = None,
                         expect_state: TaskState | None = None,
                         outcome: TaskOutcome | None = None) -> Change:
        """Move a task (and store its outcome) if legal and the expectations still hold."""
    async def requeue(self, task: TaskRef, *, detail: str, one_of_only: bool = False,
                      refused_by: str | None = None) -> Change:
        """dispatched -> queued: never started, so it may be sent again."""
    async def expire_due(self, now: float, job_ids: Collection[str] | None = None) -> Expiry:
        """Tasks not started by their job's deadline -> expired (of job_ids, or of all jobs)."""

    # ---- workflows: each step a job, started in the commit that marks the step running
    async def submit_workflow(self, flow: NewWorkflow) -> WorkflowSubmitted:
        """Commit a workflow and its waiting steps (or find the one its key names)."""
    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow, each step with its job's status as it stands."""
    async def open_workflows(self) -> list[str]: ...
    async def settle_workflow(self, workflow_id: str, steps: Sequence[StepSettled],
                              finished: tuple[str, str] | None = None) -> bool:
        """Steps ended (or skipped), and the workflow finished with (status, reason); False
        when it had finished already. A finished workflow forgets the parameter values of
        steps that never ran."""
    async def cancel_workflow(self, workflow_id: str, reason: str) -> WorkflowRecord | None:
        """No step starts any more: waiting steps end cancelled."""
    async def response_values(self, job_id: str, key: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` different values of ``key`` in the responses of the job's tasks
        that ended ok."""

    # ---- schedules: a run commits with the job or workflow it submits (NewJob.fires)
    async def add_schedule(self, schedule: ScheduleRecord) -> bool:
        """False: the name is taken."""
    async def schedules(self) -> list[ScheduleRecord]: ...
    async def set_schedule(self, name: str, *, paused: bool | None = None, next_at: float | None = None,
                           remove: bool = False) -> ScheduleRecord | None:
        """Pause, resume (due at next_at) or remove; None: no such schedule."""
    async def skip_run(self, fires: ScheduleFire, error: str) -> bool:
        """The run due at fires.due_at was not submitted: on to the next, saying why."""

    # ---- drained hosts and groups
    async def drains(self) -> list[Drain]: ...
    async def set_drains(self, names: Sequence[str], drained: bool, by: str, reason: str = "") -> list[Drain]:
        """Drain or undrain hosts and @groups; returns every drain now."""

    # ---- players
    async def record_player(self, player: PlayerRecord) -> None: ...
    async def players(self) -> dict[str, PlayerRecord]: ...

    def stats(self) -> dict[str, int]:
        """Counters for the operator: durable commits and the writes they carried."""
    def close(self) -> None: ...


def open_store(state_dir: Path, backend: str = "sqlite", dsn: str = "", *, epoch: int | None = None,
               on_lost: Callable[[str], None] | None = None, timeout: float = 5.0) -> Store:
    """The queue, created or upgraded as needed: SQLite in state_dir, or the PostgreSQL
    database ``dsn`` names, its writes fenced by the lease ``epoch`` when given one;
    ``on_lost`` hears why when it is fenced or loses the database."""
    if backend == "postgresql":
        from conductor.store.postgresql import PostgresStore
        return PostgresStore(dsn, epoch=epoch, on_lost=on_lost, timeout=timeout)
    from conductor.store.sqlite import SqliteStore
    return SqliteStore(state_dir)
