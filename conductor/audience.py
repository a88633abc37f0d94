"""The Audience service: submit, get, wait for and list — validated before anything is queued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from conductor.auth import current_requester
from conductor.hub import Hub
from conductor.policy import Policy, Requester
from conductor.states import TaskState
from conductor.store import JobRecord, NewJob
from orchestra import faults, log
from orchestra.errors import ValidationError
from orchestra.inventory import decls_from_wire
from orchestra.params import (
    JOB_ID_RE, apply_decls, check_certname, check_score_name, normalize_params, redact,
)
from orchestra.wire import audience_pb2, audience_pb2_grpc, player_pb2

logger = log.get("conductor")
REFUSAL_KEY = "orchestra-refusal"


class PolicyDenied(Exception):
    def __init__(self, reason: str, rule: str) -> None:
        super().__init__(reason)
        self.rule = rule

MAX_TARGETS = 10_000
MAX_IDEMPOTENCY_KEY = 200


class Audience(audience_pb2_grpc.AudienceServicer):
    def __init__(self, hub: Hub, job_deadline: float, cert_not_after: float,
                 policy: Callable[[], Policy]) -> None:
        self.hub = hub
        self.store = hub.store
        self.audit = hub.audit
        self.job_deadline = job_deadline
        self.cert_not_after = cert_not_after
        self.policy = policy

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
            job = await self._validate(request, who)
        except ValidationError as err:
            logger.info("submit_rejected", reason=str(err), requester=who.label)
            self.audit.record("submit", "rejected", reason=str(err), **seen)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except PolicyDenied as err:
            logger.info("submit_denied", reason=str(err), requester=who.label)
            self.audit.record("submit", "denied", reason=str(err), rule=err.rule or None, **seen)
            await _deny_by_policy(context, str(err))
        job_id, existing = await self.store.submit(job)
        faults.point("submit.committed")
        logger.info("job_submitted", job_id=job_id, score=job.score, scope=job.scope,
                    targets=len(job.targets), requester=job.requester, existing=existing,
                    params=sorted(job.params))
        self.audit.record("submit", "accepted", job_id=job_id, existing=existing,
                          serial=f"{who.serial:x}" if who.serial is not None else None,
                          uid=who.uid, **seen)
        self.hub.wake()
        self.hub.wake_deadlines()
        return audience_pb2.SubmitReply(job_id=job_id, existing=existing)

    async def _validate(self, request: audience_pb2.SubmitRequest, who: Requester) -> NewJob:
        score = check_score_name(request.score)
        params = normalize_params(dict(request.params))
        targets: list[str] = []
        for target in request.targets:
            check_certname(target)
            if target not in targets:
                targets.append(target)
        if not targets:
            raise ValidationError("no target hosts given")
        if len(targets) > MAX_TARGETS:
            raise ValidationError(f"too many targets: {len(targets)} > {MAX_TARGETS}")
        unknown = [t for t in targets if t not in self.hub.roster]
        if unknown:
            raise ValidationError(f"not in the players file: {', '.join(unknown[:10])}")
        if request.scope == audience_pb2.SCOPE_ALL_OF:
            scope = "all"
        elif request.scope == audience_pb2.SCOPE_ONE_OF:
            scope = "one"
        elif len(targets) == 1:
            scope = "all"  # with one target the scope makes no difference
        else:
            raise ValidationError("more than one target: choose --all-of or --one-of")
        if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY or not request.idempotency_key.isprintable():
            raise ValidationError("idempotency key must be printable and at most 200 characters")
        # Enforce the score's declarations as the targets last reported them; a player
        # checks again before it runs anything.
        secret: set[str] = set()
        known = await self.store.players()
        checked = params
        for target in targets:
            row = known.get(target)
            if row is None:
                continue
            for info in player_pb2.Hello.FromString(row["scores"]).scores:
                if info.name == score and info.valid:
                    decls = decls_from_wire(info.params)
                    checked = apply_decls(params, decls, score)
                    secret |= {d.name for d in decls.params if d.secret}
        decision = self.policy().decide(who, score, targets, checked)
        if not decision.allowed:
            raise PolicyDenied(decision.reason, decision.rule)
        expires = request.expires_seconds or self.job_deadline
        return NewJob(score=score, scope=scope, targets=tuple(targets), params=checked,
                      secret_keys=tuple(sorted(secret)), requester=who.label,
                      deadline_at=time.time() + expires,
                      idempotency_key=request.idempotency_key or None)

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext) -> JobRecord:
        if JOB_ID_RE.fullmatch(job_id) is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid job id {job_id[:80]!r}")
        job = await self.store.get_job(job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such job {job_id}")
        assert job is not None
        return job

    async def GetJob(self, request: audience_pb2.JobRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.Job:
        return job_to_wire(await self._job(request.job_id, context))

    async def WaitJob(self, request: audience_pb2.WaitRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        job = await self._job(request.job_id, context)
        event = self.hub.watch(job.job_id)
        try:
            job = await self._job(request.job_id, context)  # re-read: no finish slips between
            if job.finished_at is None:
                timeout = request.timeout_seconds if request.timeout_seconds > 0 else None
                try:
                    await asyncio.wait_for(event.wait(), timeout)
                except TimeoutError:
                    pass
                job = await self._job(request.job_id, context)
        finally:
            self.hub.unwatch(job.job_id, event)
        yield job_to_wire(job)

    async def Cancel(self, request: audience_pb2.JobRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> audience_pb2.Job:
        job = await self._job(request.job_id, context)
        who = self.requester()
        # Whoever may run this score on these targets may also stop it.
        decision = self.policy().decide(who, job.score, job.targets, {})
        if not decision.allowed:
            self.audit.record("cancel", "denied", requester=who.label, job_id=job.job_id,
                              reason=decision.reason, rule=decision.rule or None)
            await _deny_by_policy(context, decision.reason)
        self.audit.record("cancel", "accepted", requester=who.label, job_id=job.job_id)
        reason = f"cancelled by {who.label}"
        for task in job.tasks:
            await self._cancel_task(task.task_id, reason)
        logger.info("job_cancel_requested", job_id=job.job_id)
        self.hub.wake()
        return job_to_wire(await self._job(request.job_id, context))

    async def _cancel_task(self, task_id: str, reason: str) -> None:
        """Not started: cancelled at once. Running: the player is told to kill it, and the
        task ends cancelled when the player confirms. Re-read if it moved on meanwhile."""
        for _ in range(5):
            task = await self.store.task(task_id)
            if task is None or task.state.terminal:
                return
            session = self.hub.sessions.get(task.player) if task.player else None
            if task.state in (TaskState.QUEUED, TaskState.DISPATCHED):
                change = await self.store.transition(
                    task_id, TaskState.CANCELLED, expect_attempt=task.attempt,
                    expect_state=task.state, detail=reason, reason=reason, finished_at=time.time())
                if not change.applied:
                    continue  # dispatched or granted meanwhile
                self.hub.changed(change)
                if task.state == TaskState.QUEUED or session is None:
                    return
                session.in_flight.discard(task_id)
            elif not await self.store.request_cancel(task_id):
                continue
            if session is not None:
                session.send(cancel=player_pb2.CancelTask(task_id=task_id, attempt=task.attempt,
                                                          reason=reason))
            return

    async def ListPlayers(self, request: audience_pb2.ListPlayersRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> audience_pb2.PlayerList:
        known = await self.store.players()
        reply = audience_pb2.PlayerList(conductor_cert_not_after=self.cert_not_after)
        for name in sorted(self.hub.roster | set(self.hub.sessions)):
            session = self.hub.sessions.get(name)
            info = audience_pb2.PlayerInfo(name=name, connected=session is not None)
            row = known.get(name)
            if row is not None:
                info.last_seen = row["last_seen"]
                info.max_concurrent = row["max_concurrent"]
                info.cert_not_after = row["cert_not_after"]
                info.scores.extend(player_pb2.Hello.FromString(row["scores"]).scores)
            if session is not None:
                info.connected_since = session.connected_since
                info.last_seen = session.last_seen
                info.running = len(session.in_flight)
            reply.players.append(info)
        return reply


async def _deny_by_policy(context: grpc.aio.ServicerContext, reason: str) -> None:
    """PERMISSION_DENIED marked as a policy decision: the CLI shows it as rejected input
    (exit 2), not as a failure to authenticate (exit 4)."""
    context.set_trailing_metadata(((REFUSAL_KEY, "policy"),))
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)


def job_to_wire(job: JobRecord) -> audience_pb2.Job:
    wire = audience_pb2.Job(
        job_id=job.job_id, score=job.score,
        scope=audience_pb2.SCOPE_ALL_OF if job.scope == "all" else audience_pb2.SCOPE_ONE_OF,
        targets=job.targets, params=redact(job.params, job.secret_keys), requester=job.requester,
        created_at=job.created_at, deadline_at=job.deadline_at, finished_at=job.finished_at or 0.0,
        status=job.status, finished=job.finished_at is not None)
    for task in job.tasks:
        wire.tasks.append(audience_pb2.Task(
            task_id=task.task_id, player=task.player or "", state=task.state.to_wire(),  # type: ignore[arg-type]
            attempt=task.attempt, has_exit_code=task.exit_code is not None,
            exit_code=task.exit_code or 0, signal=task.signal, response=task.response,
            stdout_tail=task.stdout, stderr_tail=task.stderr,
            stdout_truncated=task.stdout_truncated, stderr_truncated=task.stderr_truncated,
            reason=task.reason, dispatched_at=task.dispatched_at or 0.0,
            started_at=task.started_at or 0.0, finished_at=task.finished_at or 0.0))
    return wire

