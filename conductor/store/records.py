"""What the store hands out and takes in: typed, frozen records, never rows or tuples."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from conductor import states
from conductor.states import TaskState
from orchestra.inventory import Inventory
from orchestra.joboptions import PRIORITY_STEP_SECONDS, Rollout
from orchestra.outcome import TaskOutcome


@dataclass(frozen=True)
class ScoreRules:
    """What a score's .conf asks of the conductor, as its targets reported it when the
    job was submitted (kept with the job, so a restart enforces the same)."""

    retries: int = 0  # automatic retries of a failed or timed-out task
    retry_delay: float = 0.0
    concurrency: int = 0  # at most this many in flight fleet-wide (0: no limit)
    exclusive: bool = False  # at most one in flight per host

    @property
    def limited(self) -> bool:
        return bool(self.concurrency or self.exclusive)


@dataclass(frozen=True)
class NewJob:
    score: str
    scope: str  # "all" | "one"
    targets: tuple[str, ...]
    params: Mapping[str, str]
    secret_keys: tuple[str, ...]
    requester: str
    deadline_at: float
    idempotency_key: str | None = None
    # The parameters as the requester sent them (normalized, before the score's defaults
    # were applied): what a retry with the same key sends again. None: ``params``.
    request_params: Mapping[str, str] | None = None
    request_targets: tuple[str, ...] | None = None  # as sent, @groups not expanded
    # The job options as sent (name, labels, priority, rollout), those given only.
    request_options: Mapping[str, object] = field(default_factory=dict)
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    rollout: Rollout = Rollout()
    rules: ScoreRules = ScoreRules()
    # A step of a workflow: committed only while the step is still waiting, and the
    # step marked running with this job in the same transaction.
    workflow_id: str | None = None
    step: str = ""
    # A run of a schedule: committed only while the schedule is still due at fires.due_at,
    # and moved on to its next run in the same transaction.
    fires: ScheduleFire | None = None

    def digest(self, secret_keys: Iterable[str]) -> str:
        """What an idempotency key promises stays the same: score, scope, targets and the
        parameters as sent (and the job options, when any were given), so a retry matches
        whatever the players' inventories and groups say by then. The values of
        ``secret_keys`` (the first job's) are left out: the queue keeps no trace of them
        once the job ends, so they could not be compared."""
        secret = set(secret_keys)
        sent = self.params if self.request_params is None else self.request_params
        shown = {k: v for k, v in sent.items() if k not in secret}
        targets = self.targets if self.request_targets is None else self.request_targets
        request: list[object] = [self.score, self.scope, list(targets), shown]
        if self.request_options:  # left out when none: digests of older jobs still match
            request.append(dict(self.request_options))
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class KeyedJob:
    """The job an idempotency key already names, with what it was submitted with."""

    job_id: str
    digest: str | None  # None: submitted before digests were kept (anything matches)
    secret_keys: tuple[str, ...]

    def matches(self, job: NewJob) -> bool:
        return self.digest is None or self.digest == job.digest(self.secret_keys)


@dataclass(frozen=True)
class AttemptRecord:
    """An earlier attempt of a task, kept when the task was retried."""

    attempt: int
    player: str | None
    state: TaskState
    outcome: TaskOutcome


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    job_id: str
    player: str | None
    state: TaskState
    attempt: int
    tried: tuple[str, ...]
    dispatched_at: float | None
    outcome: TaskOutcome
    retries: int = 0
    not_before: float | None = None  # a retry waits until then
    history: tuple[AttemptRecord, ...] = ()

    @property
    def number(self) -> int:
        return task_number(self.task_id)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    score: str
    scope: str
    targets: tuple[str, ...]
    params: Mapping[str, str]
    secret_keys: tuple[str, ...]
    requester: str
    created_at: float
    deadline_at: float
    finished_at: float | None
    tasks: tuple[TaskRecord, ...] = ()
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    rollout: Rollout = Rollout()
    phase: str = ""  # "" (no rollout) | canary | rolling | stopped | done
    phase_reason: str = ""
    failures: int = 0
    rules: ScoreRules = ScoreRules()
    workflow_id: str | None = None  # the workflow this job is a step of
    step: str = ""

    @property
    def status(self) -> str:
        return states.job_status(task.state for task in self.tasks)


@dataclass(frozen=True)
class OpenJob:
    """An unfinished job as dispatch needs it after a restart: its deadline, and what
    holds its tasks back (rollout, the score's limits)."""

    job_id: str
    deadline_at: float
    score: str = ""
    rollout: Rollout = Rollout()
    phase: str = ""
    rules: ScoreRules = ScoreRules()


@dataclass(frozen=True)
class InFlight:
    """A task dispatched to a player and not ended (dispatched, running or cancelling)."""

    task_id: str
    job_id: str
    player: str


@dataclass(frozen=True)
class Drain:
    """A host or @group marked drained: no new task goes to it."""

    name: str
    at: float
    by: str
    reason: str = ""


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``listjobs`` asks for; every field left empty matches any job."""

    statuses: frozenset[str] = frozenset()  # pending | ok | failed | partial_fail
    score: str | None = None
    requesters: tuple[str, ...] = ()  # exact requester labels; any of them
    targets: tuple[str, ...] = ()  # jobs with any of these hosts among their targets
    since: float | None = None
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # every one of these


@dataclass(frozen=True)
class JobSummary:
    """A job as a listing shows it: no tasks, no outputs (``counts`` filled on request)."""

    job_id: str
    score: str
    scope: str
    targets: tuple[str, ...]
    params: Mapping[str, str]  # for the policy's read decision; not shown in a listing
    requester: str
    created_at: float
    finished_at: float | None
    status: str
    counts: Mapping[TaskState, int] = field(default_factory=dict)
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    phase: str = ""
    workflow_id: str | None = None
    step: str = ""


@dataclass(frozen=True)
class PendingTask:
    player: str | None
    state: TaskState
    since: float


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    created_at: float
    finished: bool
    counts: Mapping[TaskState, int]
    slowest: tuple[PendingTask, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def task_id(job_id: str, number: int) -> str:
    """The id of a job's task number ``number`` (0-based, in target order)."""
    return f"{job_id}.{number}"


def task_number(task_id: str) -> int:
    return int(task_id.rpartition(".")[2])


def job_of(task_id: str) -> str:
    return task_id.rpartition(".")[0]


@dataclass(frozen=True)
class QueuedTask:
    """A queued task as dispatch sees it: who may take it, until when, and its place in
    the queue (its job's creation time, then its number within the job)."""

    task_id: str
    scope: str
    player: str | None  # all-of: its player; one-of: None until dispatched
    targets: tuple[str, ...]  # one-of: the job's targets; all-of: () (its player is enough)
    tried: tuple[str, ...]
    deadline_at: float
    created_at: float = 0.0
    priority: int = 0
    not_before: float | None = None  # a retry waits until then
    score: str = ""

    @property
    def order(self) -> tuple[float, str, int]:
        """Dispatch order, the same at run time and when rebuilt from the store: first in,
        first out, each point of priority counting as PRIORITY_STEP_SECONDS of waiting."""
        job_id, _, number = self.task_id.rpartition(".")
        return self.created_at - self.priority * PRIORITY_STEP_SECONDS, job_id, int(number)

    @property
    def job_id(self) -> str:
        return job_of(self.task_id)

    @property
    def number(self) -> int:
        return task_number(self.task_id)

    def candidates(self) -> list[str]:
        """The players that may take it: its own (all-of), or each target not yet tried."""
        if self.scope == "all" and self.player:
            return [self.player]
        return [target for target in self.targets if target not in self.tried]


@dataclass(frozen=True)
class Claimed:
    """A task just moved to dispatched: everything the RunTask message needs."""

    task_id: str
    job_id: str
    attempt: int
    player: str
    score: str
    params: Mapping[str, str]
    requester: str
    deadline_at: float


@dataclass(frozen=True)
class TaskRef:
    """A task on a player, at one attempt."""

    task_id: str
    player: str
    attempt: int


@dataclass(frozen=True)
class Submitted:
    """A committed submission: the job, whether it already existed (idempotency key),
    and the tasks it queued (none when it existed)."""

    job_id: str
    existing: bool
    queued: tuple[QueuedTask, ...] = ()
    # The key was used before, by the same requester, for a different request.
    conflict: bool = False
    # Nothing was committed: the workflow step is no longer waiting, or the schedule is
    # no longer due at that time (someone else got there first).
    stale: bool = False


@dataclass(frozen=True)
class Change:
    """Outcome of a transition attempt; ``applied`` False means the task had moved on.

    ``state``, ``player`` and ``attempt`` are the task's as it now stands (after the
    move, or as found when the move was not applied). ``queued`` is the task as dispatch
    sees it when the move put it back in the queue.
    """

    applied: bool
    job_id: str
    job_finished: bool = False
    state: TaskState | None = None
    task_id: str = ""
    player: str | None = None
    attempt: int = 0
    queued: QueuedTask | None = None
    # The attempt ended so (before an automatic retry queued the task again).
    ended: TaskState | None = None
    # The job's rollout moved to this phase; the tasks it skipped when it stopped.
    phase: str | None = None
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retried:
    """What retryjob queued again (or why it queued nothing)."""

    job_id: str
    queued: tuple[QueuedTask, ...] = ()
    deadline_at: float = 0.0
    phase: str = ""  # the rollout's phase now ("" = no rollout)
    rollout: Rollout = Rollout()
    score: str = ""
    rules: ScoreRules = ScoreRules()
    refused: str = ""
    in_flight: tuple[str, ...] = ()  # the job's tasks in flight, as of the same commit
    counts: Mapping[TaskState, int] = field(default_factory=dict)  # its tasks by state then


@dataclass(frozen=True)
class Expiry:
    """What one deadline pass did: the changes, and the dispatched tasks to call back."""

    changes: tuple[Change, ...] = ()
    dropped: tuple[TaskRef, ...] = ()
    expired: tuple[str, ...] = ()  # every task id that expired


@dataclass(frozen=True)
class PlayerRecord:
    """A player as last seen: its slots, certificate expiry and decoded inventory."""

    name: str
    last_seen: float
    max_concurrent: int
    cert_not_after: float
    inventory: Inventory = field(default=())
    # The certificate it last connected with, so a CRL that revokes it is noticed even
    # while the player is away (b"" and 0: not known, from an older queue).
    cert_issuer: bytes = b""
    cert_serial: int = 0


# ---- workflows and schedules ------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleFire:
    """One run of a schedule, committed with the job or workflow it submits."""

    name: str
    due_at: float
    next_at: float


@dataclass(frozen=True)
class NewStep:
    name: str
    after: tuple[str, ...]
    on_failure: str  # "stop" | "continue"
    request: bytes  # orchestra.v1.SubmitRequest; its params may hold templates


@dataclass(frozen=True)
class NewWorkflow:
    name: str
    labels: Mapping[str, str]
    params: Mapping[str, str]
    requester: str
    owner: Mapping[str, object]  # the requester's record (conductor.policy.owner_record)
    steps: tuple[NewStep, ...]
    idempotency_key: str | None = None
    digest: str = ""  # of the request as sent: what an idempotency key stands for
    schedule: str = ""  # the schedule whose run this is
    fires: ScheduleFire | None = None


@dataclass(frozen=True)
class StepRecord:
    name: str
    after: tuple[str, ...]
    on_failure: str
    request: bytes
    state: str  # waiting | running | ok | failed | partial_fail | skipped | cancelled
    reason: str
    job_id: str | None
    started_at: float | None
    finished_at: float | None
    # The step's job as it stands (None until it starts): its status and finish time.
    job_status: str | None = None
    job_finished_at: float | None = None


@dataclass(frozen=True)
class WorkflowRecord:
    workflow_id: str
    name: str
    labels: Mapping[str, str]
    params: Mapping[str, str]
    requester: str
    owner: Mapping[str, object]
    created_at: float
    finished_at: float | None
    status: str  # pending | ok | failed | cancelled
    reason: str
    cancelled: bool  # cancel requested: no step starts any more
    schedule: str
    steps: tuple[StepRecord, ...]


@dataclass(frozen=True)
class KeyedWorkflow:
    workflow_id: str
    digest: str


@dataclass(frozen=True)
class WorkflowSubmitted:
    workflow_id: str
    existing: bool
    conflict: bool = False  # the idempotency key names another request
    stale: bool = False  # the schedule was no longer due: nothing committed


@dataclass(frozen=True)
class StepSettled:
    """A step's new state, as the workflow's rule decided it."""

    name: str
    state: str
    reason: str = ""
    finished_at: float | None = None


@dataclass(frozen=True)
class ScheduleRecord:
    name: str
    owner: Mapping[str, object]  # the requester it runs as (conductor.policy.Requester's fields)
    cron: str
    missed: str  # "skip" | "once"
    overlap: bool
    paused: bool
    kind: str  # "job" | "workflow"
    request: bytes  # orchestra.v1.SubmitRequest or WorkflowRequest
    created_at: float
    next_at: float | None  # None while paused
    last_at: float | None = None
    last_id: str = ""
    last_error: str = ""
