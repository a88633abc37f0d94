"""Schedules: a job or workflow the conductor submits on a cron schedule, as its owner.

A schedule lives in the queue with the time of its next run. One loop (:meth:`Schedules.run`)
sleeps until the earliest of them (woken early by an add or a resume), then for each
schedule due:

- a run *missed* (due before this conductor came up, or reached more than
  :data:`LATE_AFTER` seconds late) follows the schedule's policy: ``skip`` records it
  skipped, ``once`` runs it now, a single run however many were missed; either way the
  schedule then moves on to its next time after now;
- unless the schedule allows ``overlap``, a run whose previous run is still going is
  skipped, saying which run is still going;
- otherwise the run is submitted as the owner stands now (``Submissions.owner``: a user
  removed from a group loses what the group granted), through every check ``submitjob``
  or a workflow passes (:mod:`conductor.submission`); a run refused there is recorded
  ``refused`` and the schedule goes on.

A run commits in the same transaction as the job or workflow it submits
(``NewJob.fires``, ``Workflows.submit(fires=...)``): the store moves the schedule on only
while it is still due at that time and not paused. So a conductor killed at any moment
never submits one run twice: a run committed is moved past, and a run not committed is
due again at the next start, where it counts as missed.

Times are UTC. A cron expression has the five standard fields, or six with a leading
seconds field (an extension, for short periods), or is one of croniter's ``@hourly``
style aliases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter  # type: ignore[import-untyped]

from conductor.audience import SUPERUSERS, NoSuchSchedule
from conductor.lifecycle import Lifecycle
from conductor.policy import Decision, Requester
from conductor.store import JobFilter, ScheduleFire, ScheduleRecord
from conductor.submission import Submissions
from conductor.workflows import Workflows
from orchestra import log
from orchestra.errors import PolicyDenied, ValidationError
from orchestra.log import throttled
from orchestra.outcome import iso
from orchestra.wire import audience_pb2

logger = log.get("conductor")

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MISSED_POLICIES = ("skip", "once")
ACTIONS = ("pause", "resume", "remove")
LABEL = "schedule"  # every run's job (or workflow) is labelled schedule=NAME
# A run the loop reaches this late while the conductor was up (a stalled disk, say) is
# missed as well: a schedule never bursts through a long backlog of runs.
LATE_AFTER = 60.0
MAX_SCHEDULES = 10_000
MAX_CRON_CHARS = 200
MAX_SLEEP = 60.0  # the loop looks again at least this often (a clock set forward, say)
RETRY_SECONDS = 1.0  # after the store refused a write, or a run failed unexpectedly
MAX_ERROR_CHARS = 1000


# ---- pure rules --------------------------------------------------------------------------

def check_name(name: str) -> str:
    if NAME_RE.fullmatch(name) is None:
        raise ValidationError(f"invalid schedule name {name[:80]!r}: must match {NAME_RE.pattern}")
    return name


def next_time(cron: str, after: float) -> float:
    """The first time strictly after ``after`` (Unix seconds) that ``cron`` names, in UTC.
    Raises ValueError for an expression croniter refuses or one that never comes."""
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(cron, start, second_at_beginning=True).get_next(float))


def check_cron(text: str) -> str:
    """The expression with its fields one space apart, if it is valid and ever fires;
    ValidationError says what is wrong."""
    cron = " ".join(text.split())
    if not cron:
        raise ValidationError("a schedule needs a cron expression")
    if len(cron) > MAX_CRON_CHARS or not cron.isprintable():
        raise ValidationError(f"a cron expression is printable text of at most {MAX_CRON_CHARS} characters")
    fields = len(cron.split(" "))
    if not cron.startswith("@") and fields not in (5, 6):
        raise ValidationError(f"cron {cron!r} has {fields} fields: give five (minute hour day month weekday),"
                              " or six with seconds first")
    try:
        next_time(cron, time.time())
    except (ValueError, KeyError, IndexError, OverflowError) as err:
        raise ValidationError(f"invalid cron expression {cron!r}: {err}") from None
    return cron


@dataclass(frozen=True)
class Due:
    """A schedule's run that is due: the move it commits, and why it was missed ("" when
    it is on time)."""

    fires: ScheduleFire
    missed: str = ""


def due(record: ScheduleRecord, now: float, up_since: float) -> Due | None:
    """The schedule's run due at ``now``, if any. On time, it moves on to the next time
    after the one it was due at; missed (due before ``up_since``, when this conductor came
    up, or more than LATE_AFTER ago), to the next time after now."""
    due_at = record.next_at
    if record.paused or due_at is None or due_at > now:
        return None
    if due_at < up_since:
        missed = "the conductor was not running then"
    elif now - due_at > LATE_AFTER:
        missed = f"the conductor reached it {now - due_at:.0f} s late"
    else:
        return Due(ScheduleFire(record.name, due_at, next_time(record.cron, due_at)))
    return Due(ScheduleFire(record.name, due_at, next_time(record.cron, now)), missed)


def last_status(last_error: str, run_status: str) -> str:
    """What listings show of the last due run: "refused" or "skipped" when it was not
    submitted, else the status of the run it submitted ("" if none, or forgotten)."""
    for word in ("refused", "skipped"):
        if last_error.startswith(word):
            return word
    return run_status


def owner_label(owner: Mapping[str, object]) -> str:
    """The owner's requester label (``user:NAME``, ``cert:NAME``), as its jobs carry it."""
    return f"{owner.get('kind', '')}:{owner.get('name', '')}"


def parts(kind: str, request: bytes) -> list[tuple[str, list[str], dict[str, str]]]:
    """Score, targets and params of each job a run submits (one, or each step's): what
    the policy's read rules are about."""
    if kind == "job":
        job = audience_pb2.SubmitRequest.FromString(request)
        return [(job.score, list(job.targets), dict(job.params))]
    flow = audience_pb2.WorkflowRequest.FromString(request)
    return [(step.job.score, list(step.job.targets), dict(step.job.params)) for step in flow.steps]


def what(kind: str, request: bytes) -> str:
    """The job's score, or the workflow's name (its steps' names if it has none); never
    a parameter value."""
    if kind == "job":
        return audience_pb2.SubmitRequest.FromString(request).score
    flow = audience_pb2.WorkflowRequest.FromString(request)
    return flow.name or "steps " + ",".join(step.name for step in flow.steps)[:200]


# ---- the conductor's schedules -----------------------------------------------------------

class Schedules:
    """Add, change and list schedules for the Audience service, and run them (:meth:`run`)."""

    def __init__(self, lifecycle: Lifecycle, submissions: Submissions, workflows: Workflows) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.audit = lifecycle.audit
        self.submissions = submissions
        self.workflows = workflows
        self.up_since = time.time()  # a run due before this was missed while the conductor was down
        self.changed = asyncio.Event()  # an add or a resume: an earlier run may be due

    # ---- the Audience's calls ----------------------------------------------------------

    async def add(self, request: audience_pb2.ScheduleRequest, who: Requester) -> audience_pb2.ScheduleInfo:
        """Check the schedule as its first run would be checked, as the caller now, and
        store it. Raises ValidationError (bad input, a name taken) or PolicyDenied."""
        seen = {"requester": who.label, "schedule": request.name[:80]}
        try:
            record = self._checked(request, who)
            if len(await self.store.schedules()) >= MAX_SCHEDULES:
                raise ValidationError(f"the conductor holds {MAX_SCHEDULES} schedules already; remove some first")
            if not await self.store.add_schedule(record):
                raise ValidationError(f"a schedule named {record.name} exists already")
        except ValidationError as err:
            self.audit.record("schedule_add", "rejected", reason=str(err), **seen)
            raise
        except PolicyDenied as err:
            self.audit.record("schedule_add", "denied", reason=str(err), rule=err.rule or None, **seen)
            raise
        self.audit.record("schedule_add", "accepted", kind=record.kind, what=what(record.kind, record.request),
                          cron=record.cron, missed=record.missed, overlap=record.overlap,
                          param_keys=sorted({key for _, _, params in parts(record.kind, record.request)
                                             for key in params}), **seen)
        logger.info("schedule_added", schedule=record.name, owner=who.label, cron=record.cron, kind=record.kind,
                    next_at=iso(record.next_at))
        self.changed.set()
        return await self._info(record)

    def _checked(self, request: audience_pb2.ScheduleRequest, who: Requester) -> ScheduleRecord:
        name = check_name(request.name)
        cron = check_cron(request.cron)
        missed = request.missed or "skip"
        if missed not in MISSED_POLICIES:
            raise ValidationError(f"missed must be skip or once, not {request.missed[:40]!r}")
        kind = request.WhichOneof("what")
        if kind == "job":
            job = audience_pb2.SubmitRequest()
            job.CopyFrom(request.job)
            job.idempotency_key = ""  # each run is a job of its own
            job.labels[LABEL] = name
            self.submissions.job(job, who)  # every check of submitjob, as the caller now
            payload = job.SerializeToString()
        elif kind == "workflow":
            flow = audience_pb2.WorkflowRequest()
            flow.CopyFrom(request.workflow)
            flow.idempotency_key = ""
            self.workflows.parse(flow, who, schedule=name)
            payload = flow.SerializeToString()
        else:
            raise ValidationError("a schedule needs a job or a workflow to run")
        now = time.time()
        return ScheduleRecord(name=name, owner=who.record(), cron=cron, missed=missed, overlap=request.overlap,
                              paused=False, kind=kind, request=payload, created_at=now,
                              next_at=next_time(cron, now))

    async def change(self, request: audience_pb2.ScheduleChange, who: Requester) -> audience_pb2.ScheduleInfo:
        """Pause, resume or remove. Only the owner (or root and the conductor's own user on
        the local socket) may; anyone else who may see the schedule is refused, anyone
        else is told there is no such schedule."""
        action, name = request.action, request.name
        event = f"schedule_{action}" if action in ACTIONS else "schedule_change"
        if action not in ACTIONS:
            raise ValidationError(f"action must be pause, resume or remove, not {action[:40]!r}")
        record = await self._visible(check_name(name), who, event)
        owner = owner_label(record.owner)
        if owner != who.label and not _superuser(who):
            reason = f"schedule {name} is {owner}'s: only its owner (or root) may {action} it"
            self.audit.record(event, "denied", requester=who.label, schedule=name, owner=owner, reason=reason)
            raise PolicyDenied(reason)
        changed: ScheduleRecord | None = record
        if action == "remove":
            changed = await self.store.set_schedule(name, remove=True)
        elif action == "pause" and not record.paused:
            changed = await self.store.set_schedule(name, paused=True)
        elif action == "resume" and record.paused:
            changed = await self.store.set_schedule(name, paused=False,
                                                    next_at=next_time(record.cron, time.time()))
        if changed is None:
            raise NoSuchSchedule(f"no such schedule {name}")
        self.audit.record(event, "accepted", requester=who.label, schedule=name, owner=owner)
        logger.info(f"schedule_{action}d", schedule=name, requester=who.label,
                    next_at=iso(changed.next_at) if action == "resume" else None)
        self.changed.set()
        info = await self._info(changed)
        info.removed = action == "remove"
        return info

    async def list(self, who: Requester) -> audience_pb2.ScheduleList:
        """Every schedule the caller may see, by name."""
        reply = audience_pb2.ScheduleList()
        for record in await self.store.schedules():
            if self._may_see(who, record).allowed:
                reply.schedules.append(await self._info(record))
        return reply

    async def _visible(self, name: str, who: Requester, event: str) -> ScheduleRecord:
        record = next((r for r in await self.store.schedules() if r.name == name), None)
        if record is not None:
            decision = self._may_see(who, record)
            if not decision.allowed:
                self.audit.record(event, "denied", requester=who.label, schedule=name,
                                  owner=owner_label(record.owner), reason=decision.reason, rule=decision.rule or None)
                record = None
        if record is None:
            raise NoSuchSchedule(f"no such schedule {name}")
        return record

    def _may_see(self, who: Requester, record: ScheduleRecord) -> Decision:
        """Its owner sees it; root and the conductor's user do; others if the policy lets
        them read the owner's jobs of every score (and targets) it runs."""
        owner = owner_label(record.owner)
        if owner == who.label:
            return Decision(True, "", "own schedule")
        policy = self.submissions.policy()
        decision = Decision(False, "", "")
        clusters, roster = self.lifecycle.clusters, self.lifecycle.sessions.roster
        for score, targets, params in parts(record.kind, record.request):
            decision = policy.may_touch(who, "read", owner, score, clusters.judged(targets, roster), params,
                                        SUPERUSERS)
            if not decision.allowed:
                return decision
        return decision

    async def _info(self, record: ScheduleRecord) -> audience_pb2.ScheduleInfo:
        status, _ = await self._last_run(record)
        return audience_pb2.ScheduleInfo(
            name=record.name, owner=owner_label(record.owner), cron=record.cron, missed=record.missed,
            overlap=record.overlap, paused=record.paused, kind=record.kind, what=what(record.kind, record.request),
            created_at=record.created_at, next_at=record.next_at or 0.0, last_at=record.last_at or 0.0,
            last_id=record.last_id, last_status=last_status(record.last_error, status),
            last_error=record.last_error)

    async def _last_run(self, record: ScheduleRecord) -> tuple[str, bool]:
        """The last run's status and whether it is still going; ("", False) when there
        was none, or it was deleted or forgotten since."""
        if not record.last_id:
            return "", False
        if record.kind == "workflow":
            flow = await self.store.get_workflow(record.last_id)
            return (flow.status, flow.finished_at is None) if flow is not None else ("", False)
        # The newest job of the owner with this schedule's label is normally the last run:
        # read from the label index, without the job's tasks and outputs.
        match = JobFilter(requesters=(owner_label(record.owner),), labels=((LABEL, record.name),))
        newest = await self.store.list_jobs(match, 1)
        if newest and newest[0].job_id == record.last_id:
            return newest[0].status, newest[0].finished_at is None
        job = await self.store.get_job(record.last_id)
        return (job.status, job.finished_at is None) if job is not None else ("", False)

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Fire every run when due, for as long as the conductor runs. Nothing stops it:
        a store that refuses writes (a full disk) is tried again shortly, and an
        unexpected error is logged and tried again after RETRY_SECONDS."""
        while True:
            self.changed.clear()  # before reading the store: an add meanwhile wakes the next sleep
            try:
                wake = await self.fire_due(time.time())
            except sqlite3.OperationalError as err:
                throttled(logger, "error", "schedule_check_failed", key=str(err), error=str(err))
                wake = time.time() + RETRY_SECONDS
            except Exception:
                logger.exception("schedule_check_failed")
                wake = time.time() + RETRY_SECONDS
            delay = MAX_SLEEP if wake is None else min(MAX_SLEEP, max(0.01, wake - time.time()))
            try:
                await asyncio.wait_for(self.changed.wait(), delay)
            except TimeoutError:
                pass

    async def fire_due(self, now: float) -> float | None:
        """Fire each run due at ``now``; returns when the next one is due (None: none is)."""
        wake: list[float] = []
        for record in await self.store.schedules():
            run = due(record, now, self.up_since)
            if run is None:
                if not record.paused and record.next_at is not None:
                    wake.append(record.next_at)
                continue
            try:
                moved = await self._fire(record, run)
            except sqlite3.OperationalError:
                raise
            except Exception:
                throttled(logger, "exception", "schedule_run_failed", key=record.name, schedule=record.name)
                wake.append(time.time() + RETRY_SECONDS)
                continue
            # Moved on: its next time; not (paused or changed meanwhile): look again now.
            wake.append(run.fires.next_at if moved else now)
        return min(wake, default=None)

    async def _fire(self, record: ScheduleRecord, run: Due) -> bool:
        """One due run: skipped (missed, or overlapping), refused, or submitted. False
        when the schedule had changed meanwhile and nothing was recorded."""
        fires, name = run.fires, record.name
        base = {"schedule": name, "owner": owner_label(record.owner), "due_at": iso(fires.due_at)}
        if run.missed:
            logger.info("schedule_run_missed", why=run.missed, policy=record.missed, **base)
            if record.missed == "skip":
                return await self._skip(fires, f"skipped: the run due at {iso(fires.due_at)} was missed"
                                               f" ({run.missed})", "missed", base)
        if not record.overlap and record.last_id:
            _, running = await self._last_run(record)
            if running:
                return await self._skip(fires, f"skipped: the previous run {record.last_id} is still running",
                                        "overlap", base)
        try:
            who = self.submissions.owner(record.owner)
            run_id = await self._submit(record, who, fires)
        except (ValidationError, PolicyDenied) as err:
            why = f"refused: {'by policy: ' if isinstance(err, PolicyDenied) else ''}{err}"[:MAX_ERROR_CHARS]
            if not await self.store.skip_run(fires, why):
                return False
            logger.info("schedule_run_refused", reason=why, **base)
            self.audit.record("schedule_run", "refused", reason=why, **base)
            return True
        if not run_id:  # paused, resumed or removed since it was read: nothing committed
            logger.debug("schedule_run_stale", **base)
            return False
        logger.info("schedule_run", run_id=run_id, kind=record.kind, missed=run.missed or None, **base)
        self.audit.record("schedule_run", "accepted", kind=record.kind, run_id=run_id,
                          missed=run.missed or None, **base)
        return True

    async def _submit(self, record: ScheduleRecord, who: Requester, fires: ScheduleFire) -> str:
        """Submit the run as ``who``, committed with the schedule's move; its job or
        workflow id, or "" when the schedule was no longer due."""
        if record.kind == "workflow":
            submitted = await self.workflows.submit(audience_pb2.WorkflowRequest.FromString(record.request), who,
                                                    schedule=record.name, fires=fires)
            return "" if submitted.stale else submitted.workflow_id
        request = audience_pb2.SubmitRequest.FromString(record.request)
        request.labels[LABEL] = record.name
        job = self.submissions.job(request, who)
        job_id, _ = await self.lifecycle.submit(  # audited as submitjob's are, with the schedule's name
            dataclasses.replace(job, fires=fires), requester=who.label, schedule=record.name, score=job.score,
            param_keys=sorted(request.params)[:64], targets=list(request.targets)[:100])
        return job_id

    async def _skip(self, fires: ScheduleFire, why: str, reason: str, base: Mapping[str, object]) -> bool:
        if not await self.store.skip_run(fires, why):
            return False
        logger.info("schedule_run_skipped", reason=reason, **base)
        self.audit.record("schedule_skip", "skipped", reason=reason, detail=why, **base)
        return True


def _superuser(who: Requester) -> bool:
    return who.kind == "user" and who.uid in SUPERUSERS

