"""What the store hands out and takes in: typed, frozen records, never rows or tuples."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from conductor import states
from conductor.states import TaskState
from orchestra.inventory import Inventory
from orchestra.outcome import TaskOutcome


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

    def digest(self, secret_keys: Iterable[str]) -> str:
        """What an idempotency key promises stays the same: score, scope, targets and the
        parameters as sent, so a retry matches whatever the players' inventories say by
        then. The values of ``secret_keys`` (the first job's) are left out: the queue
        keeps no trace of them once the job ends, so they could not be compared."""
        secret = set(secret_keys)
        sent = self.params if self.request_params is None else self.request_params
        shown = {k: v for k, v in sent.items() if k not in secret}
        canonical = json.dumps([self.score, self.scope, list(self.targets), shown],
                               sort_keys=True, separators=(",", ":"))
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
class TaskRecord:
    task_id: str
    job_id: str
    player: str | None
    state: TaskState
    attempt: int
    tried: tuple[str, ...]
    dispatched_at: float | None
    outcome: TaskOutcome


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

    @property
    def status(self) -> str:
        return states.job_status(task.state for task in self.tasks)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``listjobs`` asks for; every field left empty matches any job."""

    statuses: frozenset[str] = frozenset()  # pending | ok | failed | partial_fail
    score: str | None = None
    requesters: tuple[str, ...] = ()  # exact requester labels; any of them
    target: str | None = None
    since: float | None = None


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

    @property
    def order(self) -> tuple[float, str, int]:
        """FIFO key: the same at run time and when rebuilt from the store."""
        job_id, _, number = self.task_id.rpartition(".")
        return self.created_at, job_id, int(number)

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
