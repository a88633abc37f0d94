"""Workflows: steps, each a job, run in the order their ``after`` lists give.

A workflow lives in the queue: its steps wait, run (their job is committed in the same
transaction that marks the step running, and only while it still waits), and end as
their job ended. :func:`plan` is the one rule of what happens next, a pure function of
the workflow as stored; :meth:`Workflows.advance` applies it after every step's end, at
submission and at start-up. Whatever the conductor was doing when it was killed, the
next start re-reads each open workflow and carries on from what is committed: a step
whose job was committed is never started again, and one whose job was not starts once.

A step's params may use what earlier steps returned, through templates the conductor
fills in when the step starts (into the values, never into a shell): ``{{ params.KEY }}``
(the workflow's own params), ``{{ steps.NAME.response.KEY }}``, ``{{ steps.NAME.job_id }}``
and ``{{ workflow.id }}``. The filled-in job then passes every check a job submitted by
hand passes (:mod:`conductor.submission`), as the workflow's requester, as that
requester now stands in the policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conductor.lifecycle import Lifecycle
from conductor.policy import Requester
from conductor.store import (
    NewStep, NewWorkflow, ScheduleFire, StepRecord, StepSettled, WorkflowRecord, WorkflowSubmitted,
)
from conductor.submission import Submissions
from orchestra import faults, log
from orchestra.errors import PolicyDenied, ValidationError
from orchestra.joboptions import MAX_NAME_CHARS, check_job_name, check_labels
from orchestra.params import MAX_VALUE_BYTES, check_idempotency_key, normalize_params
from orchestra.wire import audience_pb2

logger = log.get("conductor")

STEP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_STEPS = 100
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between tries of an advance that failed
ON_FAILURE = ("stop", "continue")
# Step states: a step waits, runs (its job), then ends as its job did, or ends without
# one: failed (its params could not be filled in, or were refused), skipped (the
# workflow stopped, or a step it comes after was skipped), cancelled.
WAITING, RUNNING, OK, FAILED, SKIPPED, CANCELLED = "waiting", "running", "ok", "failed", "skipped", "cancelled"
STEP_STATES = (WAITING, RUNNING, OK, FAILED, "partial_fail", SKIPPED, CANCELLED)
UNSUCCESSFUL = frozenset({FAILED, "partial_fail"})
ENDED = frozenset({OK, *UNSUCCESSFUL, SKIPPED, CANCELLED})
# A workflow's status: pending, then ok (every step ok), failed, or cancelled.
WORKFLOW_STATUSES = ("pending", "ok", "failed", "cancelled")

_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_REF_RES = (
    ("param", re.compile(r"params\.([A-Za-z_][A-Za-z0-9_]*)")),
    ("response", re.compile(r"steps\.([a-z0-9][a-z0-9_-]*)\.response\.([^\s{}]+)")),
    ("job_id", re.compile(r"steps\.([a-z0-9][a-z0-9_-]*)\.job_id")),
    ("workflow_id", re.compile(r"workflow\.id")),
)


@dataclass(frozen=True)
class Ref:
    """One template: what it names."""

    kind: str  # param | response | job_id | workflow_id
    step: str = ""
    key: str = ""


def references(value: str) -> list[Ref]:
    """The templates of one param value; ValueError names a malformed one."""
    found = []
    for match in _TEMPLATE_RE.finditer(value):
        text = match.group(1).strip()
        for kind, pattern in _REF_RES:
            ref = pattern.fullmatch(text)
            if ref is not None:
                groups = ref.groups()
                if kind == "param":
                    found.append(Ref(kind, key=groups[0].upper()))
                elif kind == "response":
                    found.append(Ref(kind, groups[0], groups[1]))
                elif kind == "job_id":
                    found.append(Ref(kind, groups[0]))
                else:
                    found.append(Ref(kind))
                break
        else:
            raise ValueError(f"unknown template {{{{ {text[:80]} }}}} (use params.KEY, steps.NAME.response.KEY,"
                             " steps.NAME.job_id or workflow.id)")
    rest = _TEMPLATE_RE.sub("", value)
    if "{{" in rest or "}}" in rest:
        raise ValueError("unbalanced {{ or }} in a value")
    return found


def substitute(value: str, lookup: Any) -> str:
    """``value`` with each template replaced by ``lookup(ref)`` (which raises ValueError
    when it cannot be filled in). The result is a plain value: nothing is evaluated."""
    def one(match: re.Match[str]) -> str:
        refs = references(match.group(0))
        return str(lookup(refs[0]))
    return _TEMPLATE_RE.sub(one, value)


def step_job(step: audience_pb2.WorkflowStep, params: Mapping[str, str]) -> audience_pb2.SubmitRequest:
    """The step's job as submitted: its ``{{ params.KEY }}`` templates filled in, no
    idempotency key of its own (the workflow's covers its steps)."""
    job = audience_pb2.SubmitRequest()
    job.CopyFrom(step.job)
    job.idempotency_key = ""
    # From a copy of the items: a protobuf map written while it is iterated may skip
    # entries or visit them twice, depending on the process's hash seed.
    for param, value in list(job.params.items()):
        job.params[param] = fill_params(value, params)
    return job


def fill_params(value: str, params: Mapping[str, str]) -> str:
    """``value`` with its ``{{ params.KEY }}`` templates filled in (known at submission),
    the others left for the step's start."""
    def one(match: re.Match[str]) -> str:
        ref = references(match.group(0))[0]
        return params[ref.key] if ref.kind == "param" else match.group(0)
    return _TEMPLATE_RE.sub(one, value)


def _ancestors(name: str, after: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(after[name])
    while todo:
        step = todo.pop()
        if step not in seen:
            seen.add(step)
            todo.extend(after[step])
    return seen


def check_steps(steps: Sequence[audience_pb2.WorkflowStep], params: Mapping[str, str]) -> None:
    """The workflow's shape: names, dependencies (known, no cycle), policies and the
    templates of every step (each names a workflow param, or a step this one comes after,
    directly or not). Raises ValidationError naming the step."""
    if not steps:
        raise ValidationError("a workflow needs at least one step")
    if len(steps) > MAX_STEPS:
        raise ValidationError(f"too many steps: {len(steps)} > {MAX_STEPS}")
    after: dict[str, list[str]] = {}
    for step in steps:
        if STEP_NAME_RE.fullmatch(step.name) is None:
            raise ValidationError(f"invalid step name {step.name[:80]!r}: must match {STEP_NAME_RE.pattern}")
        if step.name in after:
            raise ValidationError(f"step {step.name} is given twice")
        if step.on_failure not in ("", *ON_FAILURE):
            raise ValidationError(f"step {step.name}: on_failure must be stop or continue, not {step.on_failure[:40]!r}")
        after[step.name] = list(step.after)
    for name, before in after.items():
        for other in before:
            if other not in after:
                raise ValidationError(f"step {name} comes after {other[:80]!r}, which is not a step")
            if other == name:
                raise ValidationError(f"step {name} comes after itself")
    _check_acyclic(after)
    for step in steps:
        earlier = _ancestors(step.name, after)
        for key, value in step.job.params.items():
            try:
                refs = references(value)
            except ValueError as err:
                raise ValidationError(f"step {step.name}: param {key}: {err}") from None
            for ref in refs:
                if ref.kind == "param" and ref.key not in params:
                    raise ValidationError(f"step {step.name}: param {key}: no workflow param {ref.key}")
                if ref.kind in ("response", "job_id") and ref.step not in earlier:
                    raise ValidationError(f"step {step.name}: param {key}: uses step {ref.step}, which it does"
                                          " not come after")


def _check_acyclic(after: Mapping[str, Sequence[str]]) -> None:
    """Kahn's algorithm: whatever is left once every step with no pending dependency is
    taken lies on a cycle."""
    pending = {name: len(set(before)) for name, before in after.items()}
    followers: dict[str, list[str]] = {name: [] for name in after}
    for name, before in after.items():
        for other in set(before):
            followers[other].append(name)
    ready = [name for name, count in pending.items() if count == 0]
    while ready:
        for follower in followers[ready.pop()]:
            pending[follower] -= 1
            if pending[follower] == 0:
                ready.append(follower)
    cycle = sorted(name for name, count in pending.items() if count > 0)
    if cycle:
        raise ValidationError(f"the steps {', '.join(cycle[:10])} depend on each other in a cycle")


@dataclass(frozen=True)
class Plan:
    """What happens next to a workflow: steps that ended (or will never run), steps to
    start now, and the workflow's end (status, reason) once nothing is left to run."""

    settle: tuple[StepSettled, ...] = ()
    start: tuple[str, ...] = ()
    finished: tuple[str, str] | None = None


def plan(flow: WorkflowRecord, now: float) -> Plan:
    """The rule, from the workflow as stored.

    - A running step ends when its job has finished: ok, failed or partial_fail as the job.
    - A step that did not succeed with ``on_failure = "stop"`` stops the workflow: no
      step starts any more, and every waiting step is skipped. With ``"continue"`` the
      steps after it run as if it had succeeded (its response may be missing).
    - A step after a skipped or cancelled step is skipped too.
    - A waiting step starts once every step it comes after has ended.
    - A cancelled workflow starts nothing; its waiting steps end cancelled.
    - The workflow ends when no step waits or runs: cancelled if it was cancelled, ok if
      every step ended ok, failed otherwise.
    """
    steps = {step.name: step for step in flow.steps}
    state = {step.name: step.state for step in flow.steps}
    settle: list[StepSettled] = []
    for step in flow.steps:
        if step.state == RUNNING and step.job_id is not None:
            if step.job_status is None:  # its job is gone (deleted by hand): it cannot be read
                settle.append(StepSettled(step.name, FAILED, f"its job {step.job_id} was deleted", now))
                state[step.name] = FAILED
            elif step.job_finished_at is not None:
                ended = OK if step.job_status == OK else (step.job_status if step.job_status in UNSUCCESSFUL
                                                          else FAILED)
                settle.append(StepSettled(step.name, ended, "", step.job_finished_at))
                state[step.name] = ended
    stopper = next((step for step in flow.steps if state[step.name] in UNSUCCESSFUL
                    and step.on_failure == "stop"), None)
    start: list[str] = []
    changed = True
    while changed:
        changed = False
        for step in flow.steps:
            if state[step.name] != WAITING or step.name in start:
                continue
            blocked = next((other for other in step.after if state[other] in (SKIPPED, CANCELLED)), None)
            if flow.cancelled:
                moved = StepSettled(step.name, CANCELLED, "the workflow was cancelled", now)
            elif stopper is not None:
                moved = StepSettled(step.name, SKIPPED, f"the workflow stopped: step {stopper.name}"
                                                        f" {state[stopper.name]}", now)
            elif blocked is not None:
                moved = StepSettled(step.name, SKIPPED, f"step {blocked} was {state[blocked]}", now)
            else:
                if all(state[other] in ENDED for other in step.after):
                    start.append(step.name)
                continue
            settle.append(moved)
            state[step.name] = moved.state
            changed = True
    finished = None
    if not start and not any(value in (WAITING, RUNNING) for value in state.values()):
        failed = [name for name in steps if state[name] in UNSUCCESSFUL]
        if flow.cancelled:
            finished = ("cancelled", flow.reason or "cancelled")
        elif all(value == OK for value in state.values()):
            finished = ("ok", "")
        elif stopper is not None:
            finished = ("failed", f"step {stopper.name} {state[stopper.name]}; the workflow stopped")
        else:
            finished = ("failed", f"steps not ok: {', '.join(name for name in steps if state[name] != OK)}"
                        if not failed else f"step{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed")
    return Plan(tuple(settle), tuple(start), finished)


def digest(request: audience_pb2.WorkflowRequest) -> str:
    """What an idempotency key stands for: the request as sent, less the key itself."""
    sent = audience_pb2.WorkflowRequest()
    sent.CopyFrom(request)
    sent.idempotency_key = ""
    return hashlib.sha256(sent.SerializeToString(deterministic=True)).hexdigest()


class StepUnfillable(ValueError):
    """A template of a step cannot be filled in (a missing or ambiguous response)."""


class Workflows:
    """The conductor's workflows: submission, advancing after each step, cancel, restore."""

    def __init__(self, lifecycle: Lifecycle, submissions: Submissions) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.submissions = submissions
        self.step_jobs: dict[str, str] = {}  # the job of each running step -> its workflow
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.stopping = False  # the conductor is draining: steps end, none starts
        lifecycle.on_finished.append(self._job_finished)

    def close(self) -> None:
        """At shutdown: advances under way stop (each store write is whole; the next start
        carries on from what is committed)."""
        for task in self._background:
            task.cancel()

    # ---- submission ------------------------------------------------------------------

    def parse(self, request: audience_pb2.WorkflowRequest, who: Requester, schedule: str = "",
              fires: ScheduleFire | None = None) -> NewWorkflow:
        """The workflow, checked (its shape, each step as a job as far as it is known
        before it starts, and the policy for each). Raises ValidationError or PolicyDenied."""
        name = check_job_name(request.name)
        labels = dict(check_labels(dict(request.labels)))
        if schedule:
            labels["schedule"] = schedule
        params = normalize_params(dict(request.params))
        key = check_idempotency_key(request.idempotency_key)
        check_steps(request.steps, params)
        steps = []
        for step in request.steps:
            job = step_job(step, params)  # the workflow's params are known now
            templated = frozenset(k.upper() for k, v in job.params.items() if "{{" in v)
            try:
                draft = self.submissions.parse(job, who)
                self.submissions.check(draft, who, deferred=templated)
            except ValidationError as err:
                raise ValidationError(f"step {step.name}: {err}") from None
            except PolicyDenied as err:
                raise PolicyDenied(f"step {step.name}: {err}", err.rule) from None
            steps.append(NewStep(step.name, tuple(step.after), step.on_failure or "stop", job.SerializeToString()))
        return NewWorkflow(name=name, labels=labels, params=params, requester=who.label, owner=who.record(),
                           steps=tuple(steps), idempotency_key=key, digest=digest(request), schedule=schedule,
                           fires=fires)

    async def submit(self, request: audience_pb2.WorkflowRequest, who: Requester, *, schedule: str = "",
                     fires: ScheduleFire | None = None) -> WorkflowSubmitted:
        """Check and commit a workflow, then start its first steps. Raises ValidationError
        or PolicyDenied; ``stale`` when the schedule run it is was no longer due."""
        flow = self.parse(request, who, schedule, fires)
        # One step a client that gives up cannot cut short (as Lifecycle.submit): a
        # workflow committed and never advanced would wait for the next start.
        return await asyncio.shield(self._submit(flow, who, schedule))

    async def _submit(self, flow: NewWorkflow, who: Requester, schedule: str) -> WorkflowSubmitted:
        submitted = await self.store.submit_workflow(flow)
        if submitted.conflict:
            raise ValidationError(f"idempotency key {flow.idempotency_key!r} was already used for workflow"
                                  f" {submitted.workflow_id} with a different request")
        if submitted.stale:
            return submitted
        self.lifecycle.audit.record("submit_workflow", "accepted", workflow_id=submitted.workflow_id,
                                    requester=who.label, existing=submitted.existing, name=flow.name or None,
                                    steps=[step.name for step in flow.steps], schedule=schedule or None)
        if not submitted.existing:
            logger.info("workflow_submitted", workflow_id=submitted.workflow_id, requester=who.label,
                        steps=len(flow.steps), schedule=schedule or None)
        self.advance_soon(submitted.workflow_id)  # an existing one too: harmless if it moves on already
        return submitted

    # ---- advancing -------------------------------------------------------------------

    async def restore(self) -> None:
        """At start-up: every open workflow carries on from what is committed."""
        for workflow_id in await self.store.open_workflows():
            flow = await self.store.get_workflow(workflow_id)
            if flow is None:
                continue
            for step in flow.steps:
                if step.state == RUNNING and step.job_id is not None:
                    self.step_jobs[step.job_id] = workflow_id
            if flow.cancelled:  # a cancel the last conductor may not have carried out to its end
                await self._cancel_steps(flow, "the conductor (a cancel requested before it restarted)")
            self.advance_soon(workflow_id)

    def _job_finished(self, kind: str, ident: str) -> None:
        if kind == "job":
            workflow_id = self.step_jobs.pop(ident, None)
            if workflow_id is not None:
                self.advance_soon(workflow_id)

    def advance_soon(self, workflow_id: str) -> None:
        task = asyncio.ensure_future(self.advance(workflow_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def advance(self, workflow_id: str) -> None:
        """Apply :func:`plan` until nothing more happens now: settle what ended, start
        what may start (a step whose params cannot be filled in or are refused fails at
        once, and the rule is applied again), finish the workflow when nothing is left."""
        lock = self._locks.setdefault(workflow_id, asyncio.Lock())  # one advance at a time; kept while open
        delay = RETRY_FIRST
        while True:
            try:
                async with lock:
                    await self._advance(workflow_id)
                return
            except Exception as err:  # a full disk, most likely: tried again, as a player's message is
                logger.error("workflow_advance_failed", workflow_id=workflow_id, error=repr(err), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _advance(self, workflow_id: str) -> None:
        for _ in range(2 * MAX_STEPS + 2):  # each round ends a step or more, or returns
            flow = await self.store.get_workflow(workflow_id)
            if flow is None or flow.finished_at is not None:
                return
            for running in flow.steps:  # running on (its job reopened by retryjob): heard of at its end
                if running.state == RUNNING and running.job_id is not None and running.job_finished_at is None:
                    self.step_jobs[running.job_id] = workflow_id
            now = time.time()
            moves = plan(flow, now)
            if moves.settle or moves.finished is not None:
                if not await self.store.settle_workflow(workflow_id, moves.settle, moves.finished):
                    return  # finished meanwhile
                faults.point("workflow.settled")
                for step in moves.settle:
                    logger.info("workflow_step_ended", workflow_id=workflow_id, step=step.name, state=step.state,
                                reason=step.reason or None)
            if moves.finished is not None:
                self._finished(flow, *moves.finished)
                return
            if self.stopping:  # draining: the next start carries on from here
                return
            failed = []
            for name in moves.start:
                why = await self._start(flow, name)
                if why is not None:
                    failed.append(StepSettled(name, FAILED, why, time.time()))
            if not failed:
                return
            await self.store.settle_workflow(workflow_id, failed)
            for step in failed:
                logger.info("workflow_step_failed", workflow_id=workflow_id, step=step.name, reason=step.reason)

    def _finished(self, flow: WorkflowRecord, status: str, reason: str) -> None:
        logger.info("workflow_finished", workflow_id=flow.workflow_id, status=status, reason=reason or None)
        self.lifecycle.audit.record("workflow", status, workflow_id=flow.workflow_id, requester=flow.requester,
                                    reason=reason or None)
        self.lifecycle.watchers.job_finished(flow.workflow_id)
        self._locks.pop(flow.workflow_id, None)
        self.lifecycle.finished("workflow", flow.workflow_id)

    async def _start(self, flow: WorkflowRecord, name: str) -> str | None:
        """Fill in the step's params, check it as a job and commit it with the step's move
        to running. Returns why it could not start (the step then fails), or None."""
        step = next(s for s in flow.steps if s.name == name)
        request = audience_pb2.SubmitRequest.FromString(step.request)
        try:
            filled = await self._fill(flow, request.params)
        except StepUnfillable as err:
            return str(err)
        request.params.clear()
        request.params.update(filled)
        labels = {**flow.labels, **request.labels}
        if flow.schedule:  # a run of a schedule: every step's job says so, whatever the step's labels
            labels["schedule"] = flow.schedule
        request.labels.clear()
        request.labels.update(labels)
        if not request.name:
            request.name = f"{flow.name or flow.workflow_id}/{name}"[-MAX_NAME_CHARS:]
        try:
            who = self.submissions.owner(flow.owner)
            job = self.submissions.job(request, who)
        except (ValidationError, PolicyDenied) as err:
            refused = "refused by policy: " if isinstance(err, PolicyDenied) else ""
            return f"{refused}{err}"
        job = dataclasses.replace(job, workflow_id=flow.workflow_id, step=name)
        job_id, _ = await self.lifecycle.submit(job, requester=who.label, workflow_id=flow.workflow_id, step=name,
                                                score=job.score)
        faults.point("workflow.step_committed")
        if job_id:  # "": the step no longer waited (started meanwhile): nothing committed
            self.step_jobs[job_id] = flow.workflow_id
            logger.info("workflow_step_started", workflow_id=flow.workflow_id, step=name, job_id=job_id)
        return None

    async def _fill(self, flow: WorkflowRecord, params: Mapping[str, str]) -> dict[str, str]:
        steps = {step.name: step for step in flow.steps}
        values: dict[tuple[str, str], list[str]] = {}  # (step, key) -> up to two values its hosts gave
        for value in params.values():
            for ref in references(value):
                job_id = steps[ref.step].job_id if ref.step in steps else None
                if ref.kind == "response" and (ref.step, ref.key) not in values:
                    values[ref.step, ref.key] = await self.store.response_values(job_id, ref.key) if job_id else []

        def lookup(ref: Ref) -> str:
            if ref.kind == "param":
                return flow.params[ref.key]
            if ref.kind == "workflow_id":
                return flow.workflow_id
            job_id = steps[ref.step].job_id
            if ref.kind == "job_id":
                if job_id is None:
                    raise StepUnfillable(f"step {ref.step} never ran: no job id to pass on")
                return job_id
            found = values[ref.step, ref.key]
            if not found:
                raise StepUnfillable(f"step {ref.step}'s response has no {ref.key}"
                                     f"{'' if job_id else ' (it never ran)'}")
            if len(found) > 1:
                raise StepUnfillable(f"step {ref.step}'s hosts responded with different values of {ref.key}")
            return str(found[0])
        filled = {}
        for key, value in params.items():
            result = substitute(value, lookup)
            if len(result.encode()) > MAX_VALUE_BYTES:
                raise StepUnfillable(f"param {key}: filled in, the value is larger than {MAX_VALUE_BYTES} bytes")
            filled[key] = result
        return filled

    # ---- operators -------------------------------------------------------------------

    async def _cancel_steps(self, flow: WorkflowRecord, requester: str) -> None:
        """Cancel the jobs of the workflow's running steps (as canceljob of each)."""
        for step in flow.steps:
            if step.state == RUNNING and step.job_id is not None and step.job_finished_at is None:
                job = await self.store.get_job(step.job_id)
                if job is not None and job.finished_at is None:
                    await self.lifecycle.cancel(job, requester)

    async def cancel(self, flow: WorkflowRecord, requester: str) -> None:
        """No step starts any more; the jobs of running steps are cancelled. The workflow
        ends cancelled once they have ended."""
        self.lifecycle.audit.record("cancel_workflow", "accepted", requester=requester,
                                    workflow_id=flow.workflow_id)
        cancelled = await self.store.cancel_workflow(flow.workflow_id, f"cancelled by {requester}")
        if cancelled is not None:
            await self._cancel_steps(cancelled, requester)
        logger.info("workflow_cancel_requested", workflow_id=flow.workflow_id, requester=requester)
        await self.advance(flow.workflow_id)


def step_targets(step: StepRecord) -> tuple[str, list[str], dict[str, str]]:
    """A step's score, targets and params as submitted (for the policy's access rule)."""
    request = audience_pb2.SubmitRequest.FromString(step.request)
    return request.score, list(request.targets), dict(request.params)


def step_jobs(flow: WorkflowRecord) -> Iterable[str]:
    return (step.job_id for step in flow.steps if step.job_id is not None)
