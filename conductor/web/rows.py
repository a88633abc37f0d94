"""What a page shows of a job, a task and a player: plain values made from the Audience
API's answers, so the templates hold no logic and the pages show exactly what
``getstatus``, ``listjobs`` and ``listplayers`` get (secret parameters already
redacted by the servicer). Pure: the caller says what time it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from conductor.states import TERMINAL, TaskState, job_status
from orchestra.joboptions import rollout_text, settings_text
from orchestra.wire import audience_pb2

EXPIRY_WARNING_DAYS = 30  # a player certificate this close to expiry is highlighted
LIVE_STATES = frozenset({TaskState.RUNNING.value, TaskState.CANCELLING.value})
ENDED_STATES = frozenset(state.value for state in TERMINAL)
SHOWN_TARGETS = 20  # targets named in a job's header; the count gives the rest


class StateCount(NamedTuple):
    """How many tasks are in a state (a pair, as the pictures take it)."""

    state: str
    tasks: int


def when(ts: float) -> str:
    """Unix seconds as ``2026-11-24 05:01:11 UTC``; "" for 0."""
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """850 ms, 12.3 s, 4m 05s, 2h 03m, 3d 4h: as precise as a reader needs."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def state_of(wire_state: int) -> str:
    return TaskState.from_wire(wire_state).value


def ordered_counts(counts: Mapping[str, int]) -> tuple[StateCount, ...]:
    """Counts in the state machine's order, states with none left out."""
    return tuple(StateCount(state.value, counts[state.value]) for state in TaskState if counts.get(state.value))


def wire_counts(counts: Iterable[audience_pb2.TaskCount]) -> tuple[StateCount, ...]:
    return ordered_counts({state_of(count.state): count.count for count in counts})


@dataclass(frozen=True)
class TaskRow:
    number: int
    task_id: str
    host: str  # "" while a one-of task has no player yet
    state: str
    attempt: int
    started_at: float  # 0: not started
    duration: str
    exit: str
    response: str
    reason: str

    @property
    def live(self) -> bool:
        """Running (or being cancelled) on a host: its output can be followed."""
        return self.state in LIVE_STATES and bool(self.host)


def task_row(number: int, task: audience_pb2.Task, now: float) -> TaskRow:
    outcome = task.outcome
    started, finished = outcome.started_at, outcome.finished_at
    took = duration((finished or now) - started) if started else ""
    if outcome.has_exit_code:
        exit_text = f"exit {outcome.exit_code}"
    elif outcome.signal:
        exit_text = f"signal {outcome.signal}"
    else:
        exit_text = ""
    response = " ".join(f"{key}={value}" for key, value in sorted(outcome.response.items()))
    if outcome.response_truncated:
        response += " [truncated]"
    return TaskRow(number, task.task_id, task.player, state_of(task.state), task.attempt, started, took, exit_text,
                   response, outcome.reason)


@dataclass(frozen=True)
class JobView:
    job_id: str
    name: str
    score: str
    scope: str
    targets: tuple[str, ...]
    target_count: int
    params: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    requester: str
    created: str
    deadline: str
    finished: str
    status: str
    done: bool
    priority: int
    rollout: str
    phase: str
    workflow_id: str
    step: str
    settings: str
    counts: tuple[StateCount, ...]
    tasks: tuple[TaskRow, ...]

    @property
    def cells(self) -> list[tuple[str, str]]:
        """(host, state) of each task, in task order: the grid's squares."""
        return [(task.host or "not placed yet", task.state) for task in self.tasks]


SCOPES = {audience_pb2.SCOPE_ALL_OF: "all-of", audience_pb2.SCOPE_ONE_OF: "one-of"}


def job_view(job: audience_pb2.Job, now: float) -> JobView:
    tasks = tuple(task_row(number, task, now) for number, task in enumerate(job.tasks))
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state] = counts.get(task.state, 0) + 1
    return JobView(
        job_id=job.job_id, name=job.name, score=job.score, scope=SCOPES.get(job.scope, "?"),
        targets=tuple(job.targets[:SHOWN_TARGETS]), target_count=len(job.targets),
        params=tuple(sorted(job.params.items())), labels=tuple(sorted(job.labels.items())),
        requester=job.requester, created=when(job.created_at), deadline=when(job.deadline_at),
        finished=when(job.finished_at), status=job.status, done=job.finished, priority=job.priority,
        rollout=rollout_text(job.rollout) if job.HasField("rollout") else "", phase=job.rollout.phase if job.HasField("rollout") else "",
        workflow_id=job.workflow_id, step=job.step, settings=settings_text(job), counts=ordered_counts(counts),
        tasks=tasks)


@dataclass(frozen=True)
class JobRow:
    """One job of a listing."""

    job_id: str
    name: str
    score: str
    scope: str
    targets: str
    requester: str
    created: str
    status: str
    done: bool
    phase: str
    counts: tuple[StateCount, ...]


def job_row(summary: audience_pb2.JobSummary) -> JobRow:
    shown = ", ".join(summary.targets)
    more = summary.target_count - len(summary.targets)
    return JobRow(
        job_id=summary.job_id, name=summary.name, score=summary.score, scope=SCOPES.get(summary.scope, "?"),
        targets=shown + (f" and {more} more" if more > 0 else ""), requester=summary.requester,
        created=when(summary.created_at), status=summary.status, done=summary.finished_at > 0,
        phase=summary.phase, counts=wire_counts(summary.counts))


def recounted(row: JobRow, counts: Mapping[TaskState, int]) -> JobRow:
    """The row with its tasks counted again (a live update): the status follows."""
    status = job_status(state for state, count in counts.items() if count)
    return dataclasses.replace(row, counts=ordered_counts({state.value: n for state, n in counts.items()}),
                               status=status, done=status != "pending")


@dataclass(frozen=True)
class ScoreCell:
    name: str
    valid: bool
    error: str


@dataclass(frozen=True)
class PlayerRow:
    name: str
    condition: str  # connected | offline | revoked
    since: str
    last_seen: str
    drained: str
    drained_reason: str
    revoked: str
    running: int
    max_concurrent: int
    scores: tuple[ScoreCell, ...]
    cert_expiry: str
    cert_days: int | None
    expiring: bool


def player_row(info: audience_pb2.PlayerInfo, now: float) -> PlayerRow:
    condition = "revoked" if info.revoked else "connected" if info.connected else "offline"
    days = int((info.cert_not_after - now) // 86400) if info.cert_not_after else None
    return PlayerRow(
        name=info.name, condition=condition, since=when(info.connected_since), last_seen=when(info.last_seen),
        drained=info.drained, drained_reason=info.drained_reason, revoked=info.revoked, running=info.running,
        max_concurrent=info.max_concurrent,
        scores=tuple(ScoreCell(score.name, score.valid, score.error) for score in info.scores),
        cert_expiry=when(info.cert_not_after), cert_days=days,
        expiring=days is not None and days < EXPIRY_WARNING_DAYS)

