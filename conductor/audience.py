"""The Audience service: submit, get, wait for, cancel and list — validated before anything is queued.

A thin adapter: it checks the request (shared rules of :mod:`orchestra.params`, the
score's declarations as the targets reported them, the policy), then hands the job to
the lifecycle. It never moves a task itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from conductor.auth import current_requester
from conductor.lifecycle import KeyReused, Lifecycle
from conductor.output import Piece, TooManyViewers
from conductor.policy import Policy, Requester
from conductor.states import RETRYABLE, TaskState
from conductor.store import (
    JobFilter, JobProgress, JobRecord, JobSummary, KeyedJob, NewJob, Store, TaskRecord, WorkflowRecord,
)
from conductor.submission import WIRE_SCOPES, Submissions
from conductor.watchers import Watchers
from conductor.workflows import RUNNING, Workflows, step_jobs, step_targets
from orchestra import log
from orchestra.errors import POLICY_REFUSAL, PolicyDenied, ValidationError
from orchestra.joboptions import check_labels, parse_label
from orchestra.outcome import JOB_STATUSES
from orchestra.params import CERTNAME_RE, JOB_ID_RE, WORKFLOW_ID_RE, check_targets, is_group, redact
from orchestra.wire import audience_pb2, audience_pb2_grpc

if TYPE_CHECKING:
    from conductor.schedules import Schedules

logger = log.get("conductor")
T = TypeVar("T")


class NoSuchSchedule(LookupError):
    """No schedule of that name (or none the caller may see); str() says which."""

# Local users who can read the queue file itself: hiding jobs from them would protect nothing.
SUPERUSERS = frozenset({0, os.getuid()})
PROGRESS_INTERVAL = 1.0  # seconds: at most one progress update per watcher per interval
LIST_DEFAULT, LIST_MAX = 50, 10_000  # jobs in one listing
LIST_PAGE = 2_000  # the most jobs read from the index at a time (the first read: limit + 1)
# Jobs looked at for one listing of a caller that may read some others' jobs: when the
# policy hides most of them, the newest LIST_SCAN are looked at (~0.5 s of CPU) and the
# answer says "more" rather than scanning the whole queue. A caller that may read only its
# own jobs never gets here: its listing is of its own jobs, from their index.
LIST_SCAN = 50_000
LIST_BYTES = 7 * 1024 * 1024  # a listing stops short of the 8 MiB message limit
LIST_TARGETS = 5  # targets named in a listing row; the count gives the rest
MAX_FILTER_CHARS = 512


class SharedProgress:
    """A job's progress read once for every watcher: the read stays current until one of
    the job's tasks moves again, so a hundred people waiting on one fleet-wide job cost
    the store one read per update, not a hundred."""

    def __init__(self, store: Store, watchers: Watchers) -> None:
        self.store = store
        self.watchers = watchers
        self._reads: dict[str, tuple[int, asyncio.Future[JobProgress | None]]] = {}

    async def read(self, job_id: str) -> JobProgress | None:
        moves = self.watchers.moves(job_id)
        if moves == 0:  # nobody follows it: nothing to share
            return await self.store.job_progress(job_id)
        cached = self._reads.get(job_id)
        if cached is None or cached[0] != moves or (cached[1].done() and cached[1].exception()):
            if len(self._reads) >= 4096:  # forget reads of jobs nobody follows any more
                self._reads = {k: v for k, v in self._reads.items() if self.watchers.moves(k)}
            cached = (moves, asyncio.ensure_future(self.store.job_progress(job_id)))
            self._reads[job_id] = cached
        return await asyncio.shield(cached[1])


class Audience(audience_pb2_grpc.AudienceServicer):
    def __init__(self, lifecycle: Lifecycle, job_deadline: float, cert_not_after: float,
                 policy: Callable[[], Policy]) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.sessions = lifecycle.sessions
        self.audit = lifecycle.audit
        self.job_deadline = job_deadline
        self.cert_not_after = cert_not_after
        self.policy = policy
        self.progress = SharedProgress(self.store, lifecycle.watchers)
        self.submissions = Submissions(lifecycle, job_deadline, policy)
        self.workflows = Workflows(lifecycle, self.submissions)
        self.schedules: Schedules  # set by main once built (it submits through this service's checks)

    @staticmethod
    def requester() -> Requester:
        who = current_requester.get()
        assert who is not None, "the AuthInterceptor admits no audience call without a requester"
        return who

    async def Submit(self, request: audience_pb2.SubmitRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.SubmitReply:
        who = self.requester()
        seen = {"requester": who.label, "score": request.score[:80],
                "param_keys": sorted(k[:80] for k in request.params)[:64],
                "targets": [t[:260] for t in request.targets][:100]}
        try:
            draft = self.submissions.parse(request, who)
            if draft.idempotency_key:  # a retry gets its job back, whatever changed since
                keyed = await self.store.find_keyed(who.label, draft.idempotency_key)
                if keyed is not None:
                    return await self._again(draft, keyed, seen)
            job = self.submissions.check(draft, who)
        except ValidationError as err:
            logger.info("submit_rejected", reason=str(err), requester=who.label)
            self.audit.record("submit", "rejected", reason=str(err), job_id=getattr(err, "job_id", None), **seen)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except PolicyDenied as err:
            logger.info("submit_denied", reason=str(err), requester=who.label)
            self.audit.record("submit", "denied", reason=str(err), rule=err.rule or None, **seen)
            await _deny_by_policy(context, str(err))
        try:
            job_id, existing = await self.lifecycle.submit(
                job, serial=f"{who.serial:x}" if who.serial is not None else None, uid=who.uid, **seen)
        except ValidationError as err:  # an idempotency key reused meanwhile for another request
            logger.info("submit_rejected", reason=str(err), requester=who.label)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return audience_pb2.SubmitReply(job_id=job_id, existing=existing)

    async def _again(self, draft: NewJob, keyed: KeyedJob, seen: dict[str, Any]) -> audience_pb2.SubmitReply:
        """A key this requester used before: the same request gets its job back (even if
        the policy, the players file or the inventories changed since: it is committed);
        another request with the key is refused, naming the job."""
        if not keyed.matches(draft):
            raise KeyReused(draft.idempotency_key or "", keyed.job_id)
        logger.info("job_submitted", job_id=keyed.job_id, score=draft.score, requester=draft.requester,
                    existing=True)
        self.audit.record("submit", "accepted", job_id=keyed.job_id, existing=True, **seen)
        return audience_pb2.SubmitReply(job_id=keyed.job_id, existing=True)

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext, action: str = "read") -> JobRecord:
        """The job, if it exists and the caller may ``action`` it; another requester's job
        it may not even read is "no such job", so job ids reveal nothing."""
        if JOB_ID_RE.fullmatch(job_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid job id {job_id[:80]!r}")
        job = await self.store.get_job(job_id)
        who = self.requester()
        if job is not None and job.requester != who.label:
            policy = self.policy()
            read = policy.may_touch(who, "read", job.requester, job.score, job.targets, job.params, SUPERUSERS)
            if not read.allowed:
                self.audit.record(action, "denied", requester=who.label, job_id=job_id, owner=job.requester,
                                  reason=read.reason, rule=read.rule or None)
                logger.info("job_access_denied", action=action, job_id=job_id, requester=who.label)
                job = None
            elif action != "read":
                decision = policy.may_touch(who, action, job.requester, job.score, job.targets, job.params,
                                            SUPERUSERS)
                if not decision.allowed:
                    self.audit.record(action, "denied", requester=who.label, job_id=job_id,
                                      owner=job.requester, reason=decision.reason, rule=decision.rule or None)
                    await _deny_by_policy(context, decision.reason)
            else:  # someone else's job, read under a policy grant: on the record
                self.audit.record("read", "accepted", requester=who.label, job_id=job_id, owner=job.requester,
                                  rule=read.rule or None)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such job {job_id}")
        assert job is not None
        return job

    async def GetJob(self, request: audience_pb2.JobRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.Job:
        return job_to_wire(await self._job(request.job_id, context))

    async def _until_finished(self, event: asyncio.Event, timeout_seconds: float,
                              context: grpc.aio.ServicerContext) -> None:
        """Until ``event`` says the job or workflow finished, or the wait's timeout (0: none)
        passed; a conductor shutting down meanwhile answers UNAVAILABLE."""
        try:
            await asyncio.wait_for(event.wait(), timeout_seconds if timeout_seconds > 0 else None)
        except TimeoutError:
            pass
        if self.lifecycle.watchers.closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")

    async def WaitJob(self, request: audience_pb2.WaitRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> AsyncIterator[audience_pb2.Job]:
        if JOB_ID_RE.fullmatch(request.job_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid job id {request.job_id[:80]!r}")
        event = self.lifecycle.watchers.watch(request.job_id)
        try:
            job = await self._job(request.job_id, context)  # read after watching: no finish slips between
            if job.finished_at is None:
                await self._until_finished(event, request.timeout_seconds, context)
                job = await self._unchecked_job(request.job_id, context)
        finally:
            self.lifecycle.watchers.unwatch(request.job_id, event)
        yield job_to_wire(job)

    async def WatchJob(self, request: audience_pb2.WaitRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[audience_pb2.JobUpdate]:
        """WaitJob with progress: one JobProgress at once and then whenever tasks moved
        (at most one per PROGRESS_INTERVAL; every watcher of a job shares one read of its
        progress), then the job."""
        if JOB_ID_RE.fullmatch(request.job_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid job id {request.job_id[:80]!r}")
        if not math.isfinite(request.timeout_seconds):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must be a finite number")
        job_id = request.job_id
        watchers = self.lifecycle.watchers
        moved, ended = watchers.follow(job_id), watchers.watch(job_id)
        try:
            job = await self._job(job_id, context)  # follow first: no move slips between
            deadline = None if request.timeout_seconds <= 0 else time.monotonic() + request.timeout_seconds
            while job.finished_at is None and not watchers.closed:
                moved.clear()
                progress = await self.progress.read(job_id)
                if progress is None or progress.finished or watchers.closed:
                    break
                yield audience_pb2.JobUpdate(progress=progress_to_wire(progress))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    await asyncio.wait_for(moved.wait(), left)
                except TimeoutError:
                    break
                try:  # gather the moves of the next second, unless the job ends meanwhile
                    await asyncio.wait_for(ended.wait(), PROGRESS_INTERVAL)
                except TimeoutError:
                    pass
            if watchers.closed:  # set before the server stops: a clean answer, not a cancel
                await context.abort(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            job = await self._unchecked_job(job_id, context)
        finally:
            watchers.unfollow(job_id, moved)
            watchers.unwatch(job_id, ended)
        yield audience_pb2.JobUpdate(job=job_to_wire(job))

    async def FollowJob(self, request: audience_pb2.FollowRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> AsyncIterator[audience_pb2.FollowEvent]:
        """The live output of the job's running tasks (of one host, if asked), and their
        moves, as they come; then the job as it ended. A reader slower than the output
        gets what fits in its viewer and, with the next piece, how many bytes it missed."""
        if JOB_ID_RE.fullmatch(request.job_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid job id {request.job_id[:80]!r}")
        if request.host and CERTNAME_RE.fullmatch(request.host) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid host name {request.host[:80]!r}")
        if not math.isfinite(request.timeout_seconds):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must be a finite number")
        job_id = request.job_id
        watchers = self.lifecycle.watchers
        ended = watchers.watch(job_id)
        timer = (asyncio.get_running_loop().call_later(request.timeout_seconds, ended.set)
                 if request.timeout_seconds > 0 else None)
        try:
            job = await self._job(job_id, context)  # watch first: no end slips between
            if job.finished_at is None and not watchers.closed and not ended.is_set():
                try:
                    viewer = await self.lifecycle.output.open(job_id, request.host or None)
                except TooManyViewers as err:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
                try:
                    while not ended.is_set():
                        for piece in await _until(viewer.pieces(), ended):
                            yield piece_to_wire(piece)
                    for piece in viewer.take():  # what came before the end (its last output)
                        yield piece_to_wire(piece)
                finally:
                    self.lifecycle.output.close(viewer)
            if watchers.closed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
            job = await self._unchecked_job(job_id, context)
        finally:
            watchers.unwatch(job_id, ended)
            if timer is not None:
                timer.cancel()
        yield audience_pb2.FollowEvent(job=job_to_wire(job))

    async def ListJobs(self, request: audience_pb2.ListJobsRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> audience_pb2.JobList:
        who = self.requester()
        policy = self.policy()
        try:
            match, limit = self._job_filter(request, who)
        except ValidationError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if not policy.reads_others(who, SUPERUSERS):  # then only its own jobs, from the index
            if match.requesters and who.label not in match.requesters:
                match = dataclasses.replace(match, requesters=("",))  # asked for others': none
            else:
                match = dataclasses.replace(match, requesters=(who.label,))
        shown: list[JobSummary] = []
        others = examined = 0
        before: tuple[float, str] | None = None
        page_size = limit + 1  # enough when the caller may read every job that matches
        while len(shown) <= limit and examined < LIST_SCAN:
            page = await self.store.list_jobs(match, page_size, before)
            for job in page:
                examined += 1
                if job.requester != who.label:
                    if not policy.may_touch(who, "read", job.requester, job.score, job.targets, job.params,
                                            SUPERUSERS).allowed:
                        continue
                    others += 1
                shown.append(job)
                if len(shown) > limit:
                    break
            if len(page) < page_size:
                break
            before = (page[-1].created_at, page[-1].job_id)
            page_size = max(page_size, min(page_size * 2, LIST_PAGE))  # the policy hid some: read on
        more = len(shown) > limit or examined >= LIST_SCAN
        shown = shown[:limit]
        counts = await self.store.task_counts([job.job_id for job in shown])
        reply = audience_pb2.JobList()
        size = 0
        for job in shown:
            row = audience_pb2.JobSummary(
                job_id=job.job_id, score=job.score, scope=WIRE_SCOPES[job.scope], target_count=len(job.targets),
                targets=job.targets[:LIST_TARGETS], requester=job.requester, created_at=job.created_at,
                finished_at=job.finished_at or 0.0, status=job.status, counts=counts_to_wire(counts[job.job_id]),
                name=job.name, labels=job.labels, priority=job.priority, phase=job.phase,
                workflow_id=job.workflow_id or "", step=job.step)
            size += row.ByteSize() + 8
            if size > LIST_BYTES:  # long names: stop short of the message limit, and say so
                more = True
                break
            reply.jobs.append(row)
        reply.more = more
        self.audit.record("list", "accepted", requester=who.label, shown=len(reply.jobs), of_others=others,
                          statuses=sorted(match.statuses) or None, score=match.score,
                          requesters=list(match.requesters) or None, target=request.target or None,
                          since=match.since, name=match.name, labels=[f"{k}={v}" for k, v in match.labels] or None)
        return reply

    def _job_filter(self, request: audience_pb2.ListJobsRequest, who: Requester) -> tuple[JobFilter, int]:
        """The listing asked for, checked: a bad filter is an error, not an empty list."""
        clusters, roster = self.lifecycle.clusters, self.sessions.roster
        statuses = frozenset(request.statuses)
        unknown = sorted(statuses - set(JOB_STATUSES))
        if unknown:
            raise ValidationError(f"no such job state: {unknown[0][:40]!r}"
                                  f" (one of {', '.join(JOB_STATUSES)})")
        limit = request.limit or LIST_DEFAULT
        if limit > LIST_MAX:
            raise ValidationError(f"limit {limit} is above {LIST_MAX}")
        if request.mine and request.requester:
            raise ValidationError("mine and requester cannot be used together")
        for name, value in (("score", request.score), ("requester", request.requester),
                            ("target", request.target), ("name", request.name)):
            if len(value) > MAX_FILTER_CHARS:
                raise ValidationError(f"{name} filter longer than {MAX_FILTER_CHARS} characters")
        labels = tuple(check_labels([parse_label(label) for label in request.labels]).items())
        requesters: tuple[str, ...] = ()
        if request.mine:
            requesters = (who.label,)
        elif request.requester:
            name = request.requester
            requesters = (name,) if ":" in name else (f"user:{name}", f"cert:{name}")
        targets: tuple[str, ...] = ()
        if request.target:
            targets = tuple(check_targets([request.target]))
            if is_group(request.target):  # its members now, as submitjob would expand it
                targets = tuple(clusters.members(request.target[1:], roster)) or ("",)
        return JobFilter(statuses=statuses, score=request.score or None, requesters=requesters,
                         targets=targets, since=request.since or None, name=request.name or None,
                         labels=labels), limit

    async def _unchecked_job(self, job_id: str, context: grpc.aio.ServicerContext) -> JobRecord:
        """Re-read a job this call already checked (the requester of a job never changes)."""
        job = await self.store.get_job(job_id)
        if job is None:  # purged meanwhile
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such job {job_id}")
        assert job is not None
        return job

    async def Cancel(self, request: audience_pb2.JobRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.Job:
        job = await self._job(request.job_id, context, "cancel")
        who = self.requester()
        await asyncio.shield(self.lifecycle.cancel(job, who.label))  # never half-done (Lifecycle._apply)
        return job_to_wire(await self._unchecked_job(request.job_id, context))

    async def Retry(self, request: audience_pb2.RetryRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> audience_pb2.RetryReply:
        """retryjob: the job's unsuccessful tasks in the states asked for run again as new
        attempts. One's own job needs the policy still to allow running it; another
        requester's a rule granting ``retry``."""
        who = self.requester()
        try:
            wanted = frozenset(TaskState.from_wire(state) for state in request.states) or \
                frozenset({TaskState.FAILED, TaskState.TIMED_OUT})
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        refused = sorted(state.value for state in wanted - RETRYABLE)
        if refused:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"tasks that ended {refused[0]} cannot be retried (only"
                                f" {', '.join(sorted(state.value for state in RETRYABLE))})")
        job = await self._job(request.job_id, context, "retry")
        if job.requester == who.label:
            decision = self.policy().decide(who, job.score, job.targets, job.params)
            if not decision.allowed:
                self.audit.record("retry", "denied", requester=who.label, job_id=job.job_id, reason=decision.reason,
                                  rule=decision.rule or None)
                await _deny_by_policy(context, decision.reason)
        try:
            retried = await self.lifecycle.retry(job, wanted, who.label)
        except ValidationError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return audience_pb2.RetryReply(job=job_to_wire(await self._unchecked_job(job.job_id, context)),
                                       task_ids=[task.task_id for task in retried.queued])

    async def Delete(self, request: audience_pb2.JobRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.DeleteReply:
        """deletejob: a finished job is forgotten (its requester's, or by a ``delete`` grant)."""
        job = await self._job(request.job_id, context, "delete")
        deleted = await asyncio.shield(self.lifecycle.delete(job, self.requester().label))
        if deleted is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such job {job.job_id}")
        if not deleted:
            open_tasks = sum(1 for task in job.tasks if not task.state.terminal)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"job {job.job_id} is not finished ({open_tasks} tasks not ended);"
                                " cancel it first, or use deletejob --cancel")
        return audience_pb2.DeleteReply(job_id=job.job_id)

    async def Drain(self, request: audience_pb2.DrainRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> audience_pb2.DrainReply:
        """drain / undrain: hosts and @groups that get no new tasks, durably."""
        who = self.requester()
        clusters, lifecycle = self.lifecycle.clusters, self.lifecycle
        try:
            if len(request.reason) > 500 or not request.reason.isprintable():
                raise ValidationError("the reason must be printable and at most 500 characters")
            if request.undrain:  # what is drained may be undrained, even if gone from the file
                names = check_targets(request.names)
                unknown = [name for name in names if name not in lifecycle.drains]
                if unknown:
                    raise ValidationError(f"not drained: {', '.join(unknown[:10])}")
            else:
                names = clusters.check_names(request.names, self.sessions.roster | set(self.sessions.known))
            hosts = [host for name in names for host in clusters.covers(name, self.sessions.roster)]
        except ValidationError as err:
            self.audit.record("undrain" if request.undrain else "drain", "rejected", requester=who.label,
                              reason=str(err))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        # Each host a drain covers now, and each group by its name (it may cover more later).
        decision = self.policy().may_drain(who, hosts + [name for name in names if is_group(name)], SUPERUSERS)
        if not decision.allowed:
            self.audit.record("undrain" if request.undrain else "drain", "denied", requester=who.label,
                              names=names, reason=decision.reason, rule=decision.rule or None)
            await _deny_by_policy(context, decision.reason)
        drains = await asyncio.shield(lifecycle.drain(names, not request.undrain, who.label, request.reason))
        return audience_pb2.DrainReply(names=[drain.name for drain in drains], hosts=sorted(lifecycle.drained))

    # ---- workflows ---------------------------------------------------------------------

    async def SubmitWorkflow(self, request: audience_pb2.WorkflowRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> audience_pb2.WorkflowReply:
        who = self.requester()
        try:
            submitted = await self.workflows.submit(request, who)
        except ValidationError as err:
            logger.info("workflow_rejected", reason=str(err), requester=who.label)
            self.audit.record("submit_workflow", "rejected", requester=who.label, reason=str(err))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except PolicyDenied as err:
            logger.info("workflow_denied", reason=str(err), requester=who.label)
            self.audit.record("submit_workflow", "denied", requester=who.label, reason=str(err), rule=err.rule or None)
            await _deny_by_policy(context, str(err))
        return audience_pb2.WorkflowReply(workflow_id=submitted.workflow_id, existing=submitted.existing)

    async def _workflow(self, workflow_id: str, context: grpc.aio.ServicerContext,
                        action: str = "read") -> WorkflowRecord:
        """The workflow, if it exists and the caller may ``action`` it: its requester may,
        and anyone the policy lets ``action`` every one of its steps (as for a job);
        otherwise "no such workflow", so ids reveal nothing."""
        if WORKFLOW_ID_RE.fullmatch(workflow_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid workflow id {workflow_id[:80]!r}")
        flow = await self.store.get_workflow(workflow_id)
        who = self.requester()
        if flow is not None and flow.requester != who.label:
            policy = self.policy()
            clusters, roster = self.lifecycle.clusters, self.sessions.roster
            steps = [(score, clusters.judged(targets, roster), params) for score, targets, params
                     in map(step_targets, flow.steps)]
            for wanted in dict.fromkeys(("read", action)):
                decisions = [policy.may_touch(who, wanted, flow.requester, *step, SUPERUSERS) for step in steps]
                refused = next((d for d in decisions if not d.allowed), None)
                if refused is not None:
                    self.audit.record(action, "denied", requester=who.label, workflow_id=workflow_id,
                                      owner=flow.requester, reason=refused.reason, rule=refused.rule or None)
                    if wanted == "read":
                        flow = None
                        break
                    await _deny_by_policy(context, refused.reason)
            else:
                if action == "read":
                    self.audit.record("read", "accepted", requester=who.label, workflow_id=workflow_id,
                                      owner=flow.requester)
        if flow is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such workflow {workflow_id}")
        assert flow is not None
        return flow

    async def _workflow_to_wire(self, flow: WorkflowRecord) -> audience_pb2.Workflow:
        jobs = [job_id for job_id in step_jobs(flow)]
        counts = await self.store.task_counts(jobs) if jobs else {}
        params = {}
        for job_id in jobs:
            job = await self.store.get_job(job_id)
            if job is not None:
                params[job_id] = redact(dict(job.params), job.secret_keys)
        return workflow_to_wire(flow, counts, params)

    async def GetWorkflow(self, request: audience_pb2.JobRef,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> audience_pb2.Workflow:
        return await self._workflow_to_wire(await self._workflow(request.job_id, context))

    async def WaitWorkflow(self, request: audience_pb2.WaitRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> AsyncIterator[audience_pb2.Workflow]:
        if not math.isfinite(request.timeout_seconds):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must be a finite number")
        watchers = self.lifecycle.watchers
        event = watchers.watch(request.job_id)
        try:
            flow = await self._workflow(request.job_id, context)  # read after watching: no end slips between
            if flow.finished_at is None:
                await self._until_finished(event, request.timeout_seconds, context)
                again = await self.store.get_workflow(request.job_id)
                if again is None:
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"no such workflow {request.job_id}")
                assert again is not None
                flow = again
        finally:
            watchers.unwatch(request.job_id, event)
        yield await self._workflow_to_wire(flow)

    async def CancelWorkflow(self, request: audience_pb2.JobRef,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> audience_pb2.Workflow:
        flow = await self._workflow(request.job_id, context, "cancel")
        await asyncio.shield(self.workflows.cancel(flow, self.requester().label))
        again = await self.store.get_workflow(flow.workflow_id)
        return await self._workflow_to_wire(again or flow)

    # ---- schedules: conductor.schedules does the work ----------------------------------

    async def AddSchedule(self, request: audience_pb2.ScheduleRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> audience_pb2.ScheduleInfo:
        return await self._scheduling(context, "schedule_add", lambda who: self.schedules.add(request, who))

    async def ChangeSchedule(self, request: audience_pb2.ScheduleChange,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> audience_pb2.ScheduleInfo:
        return await self._scheduling(context, f"schedule_{request.action[:20]}",
                                      lambda who: self.schedules.change(request, who))

    async def ListSchedules(self, request: audience_pb2.ListSchedulesRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> audience_pb2.ScheduleList:
        return await self._scheduling(context, "schedule_list", lambda who: self.schedules.list(who))

    async def _scheduling(self, context: grpc.aio.ServicerContext, what: str,
                          call: Callable[[Requester], Awaitable[T]]) -> T:
        """One schedule call, its refusals as for jobs: INVALID_ARGUMENT, a policy refusal,
        NOT_FOUND (no such schedule, or one the caller may not see)."""
        who = self.requester()
        try:
            return await asyncio.shield(call(who))
        except ValidationError as err:
            logger.info(f"{what}_rejected", reason=str(err), requester=who.label)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except PolicyDenied as err:
            logger.info(f"{what}_denied", reason=str(err), requester=who.label)
            await _deny_by_policy(context, str(err))
        except NoSuchSchedule as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        raise AssertionError("context.abort raises")

    async def ListPlayers(self, request: audience_pb2.ListPlayersRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> audience_pb2.PlayerList:
        reply = audience_pb2.PlayerList(conductor_cert_not_after=self.cert_not_after)
        names = sorted(self.sessions.roster | {s.name for s in self.sessions})
        if request.targets:
            try:
                wanted = set(self.lifecycle.clusters.expand(check_targets(request.targets),
                                                            self.sessions.roster | set(names)))
            except ValidationError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            names = [name for name in names if name in wanted]
        for name in names:
            session = self.sessions.get(name)
            drain = self.lifecycle.drained.get(name)
            info = audience_pb2.PlayerInfo(name=name, connected=session is not None,
                                           revoked=self.lifecycle.revoked_players.get(name, ""),
                                           drained=drain.name if drain else "",
                                           drained_reason=drain.reason if drain else "")
            known = self.sessions.known.get(name)
            if known is not None:
                info.last_seen = known.last_seen
                info.max_concurrent = known.max_concurrent
                info.cert_not_after = known.cert_not_after
                info.scores.extend(entry.to_wire() for entry in known.inventory)
            if session is not None:
                info.connected_since = session.connected_since
                info.last_seen = session.last_seen
                info.running = len(session.in_flight)
            reply.players.append(info)
        return reply


async def _until(work: Awaitable[list[T]], event: asyncio.Event) -> list[T]:
    """The result of ``work``, or [] if ``event`` is set first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return []


def piece_to_wire(piece: Piece) -> audience_pb2.FollowEvent:
    if piece.state:
        return audience_pb2.FollowEvent(task=audience_pb2.TaskMoved(host=piece.host, state=piece.state))
    return audience_pb2.FollowEvent(output=audience_pb2.OutputPiece(
        host=piece.host, stream=piece.stream, data=piece.data, skipped=piece.skipped, cut=piece.cut))


async def _deny_by_policy(context: grpc.aio.ServicerContext, reason: str) -> None:
    """PERMISSION_DENIED marked as a policy decision: the CLI shows it as rejected input
    (exit 2), not as a failure to authenticate (exit 4)."""
    context.set_trailing_metadata((POLICY_REFUSAL,))
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)


def counts_to_wire(counts: Mapping[TaskState, int]) -> list[audience_pb2.TaskCount]:
    """Tasks by state, in the state machine's order, states with none left out."""
    return [audience_pb2.TaskCount(state=state.to_wire(), count=counts[state])  # type: ignore[arg-type]
            for state in TaskState if counts.get(state)]


def progress_to_wire(progress: JobProgress) -> audience_pb2.JobProgress:
    return audience_pb2.JobProgress(
        job_id=progress.job_id, total=progress.total, counts=counts_to_wire(progress.counts),
        created_at=progress.created_at,
        slowest=[audience_pb2.PendingTask(player=task.player or "", state=task.state.to_wire(),  # type: ignore[arg-type]
                                          since=task.since) for task in progress.slowest])


def job_to_wire(job: JobRecord) -> audience_pb2.Job:
    wire = audience_pb2.Job(
        job_id=job.job_id, score=job.score,
        scope=WIRE_SCOPES[job.scope],
        targets=job.targets, params=redact(dict(job.params), job.secret_keys), requester=job.requester,
        created_at=job.created_at, deadline_at=job.deadline_at, finished_at=job.finished_at or 0.0,
        status=job.status, finished=job.finished_at is not None, name=job.name, labels=job.labels,
        priority=job.priority, retries=job.rules.retries, retry_delay=job.rules.retry_delay,
        concurrency=job.rules.concurrency, exclusive=job.rules.exclusive, workflow_id=job.workflow_id or "",
        step=job.step)
    if job.phase:
        plan = job.rollout
        wire.rollout.CopyFrom(audience_pb2.Rollout(
            canary=plan.canary, batch=plan.batch, has_max_failures=plan.max_failures is not None,
            max_failures=plan.max_failures or 0, phase=job.phase, phase_reason=job.phase_reason,
            failures=job.failures))
    wire.tasks.extend(task_to_wire(task) for task in job.tasks)
    return wire


def task_to_wire(task: TaskRecord) -> audience_pb2.Task:
    return audience_pb2.Task(
        task_id=task.task_id, player=task.player or "", state=task.state.to_wire(),  # type: ignore[arg-type]
        attempt=task.attempt, dispatched_at=task.dispatched_at or 0.0, outcome=task.outcome.to_wire(),
        retries=task.retries, not_before=task.not_before or 0.0,
        history=[audience_pb2.Attempt(attempt=earlier.attempt, player=earlier.player or "",
                                      state=earlier.state.to_wire(),  # type: ignore[arg-type]
                                      outcome=earlier.outcome.to_wire()) for earlier in task.history])


def workflow_to_wire(flow: WorkflowRecord, counts: Mapping[str, Mapping[TaskState, int]],
                     params: Mapping[str, Mapping[str, str]]) -> audience_pb2.Workflow:
    """The workflow as getstatus shows it; ``counts`` and ``params`` by step job."""
    wire = audience_pb2.Workflow(
        workflow_id=flow.workflow_id, name=flow.name, labels=flow.labels, requester=flow.requester,
        created_at=flow.created_at, finished_at=flow.finished_at or 0.0, status=flow.status,
        finished=flow.finished_at is not None, reason=flow.reason)
    for step in flow.steps:
        request = audience_pb2.SubmitRequest.FromString(step.request)
        state = step.state
        if state == RUNNING and step.job_finished_at is not None and step.job_status is not None:
            state = step.job_status  # ended; the workflow's rule has not run yet
        wire.steps.append(audience_pb2.WorkflowStepStatus(
            name=step.name, state=state, reason=step.reason, job_id=step.job_id or "", after=step.after,
            on_failure=step.on_failure, score=request.score, started_at=step.started_at or 0.0,
            finished_at=step.finished_at or step.job_finished_at or 0.0,
            counts=counts_to_wire(counts.get(step.job_id or "", {})),
            params=params.get(step.job_id or "", {})))
    return wire
