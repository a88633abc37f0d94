"""Talking to the conductor's Audience API, with gRPC errors mapped to exit codes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from orchestra.config import AudienceConfig
from orchestra.errors import (
    POLICY_REFUSAL, STORAGE_FAILURE, NoSuchJobError, OrchestraError, PolicyDenied, StorageError,
    UnreachableError, ValidationError,
)
from orchestra.tls import MESSAGE_LIMITS, Material, channel_credentials, channel_options
from orchestra.wire import audience_pb2, audience_pb2_grpc, common_pb2

T = TypeVar("T")
CALL_TIMEOUT = 30.0
# How long --wait without --timeout keeps trying to reach a conductor that went away.
MAX_OUTAGE = 600.0


class Client:
    def __init__(self, cfg: AudienceConfig) -> None:
        self.cfg = cfg
        if cfg.conductor:
            assert cfg.tls is not None
            material = Material.load(cfg.tls)
            self.where = cfg.conductor
            self.channel = grpc.secure_channel(cfg.conductor, channel_credentials(material),
                                               options=channel_options(cfg.conductor_name))
        else:
            self.where = str(cfg.socket)
            self.channel = grpc.insecure_channel(f"unix:{cfg.socket}", options=MESSAGE_LIMITS)
        self.stub = audience_pb2_grpc.AudienceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def translate(self, err: grpc.RpcError) -> OrchestraError:
        code, details = err.code(), err.details() or ""
        # A request the conductor refuses as it stands (exit 2, nothing changed): invalid,
        # or not possible in the job's state (delete an unfinished job, nothing to retry).
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return ValidationError(details)
        if code == grpc.StatusCode.NOT_FOUND:
            return NoSuchJobError(details)
        metadata = tuple(err.trailing_metadata() or ())
        if code == grpc.StatusCode.PERMISSION_DENIED and POLICY_REFUSAL in metadata:
            return PolicyDenied(f"denied: {details}")
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return UnreachableError(f"the conductor at {self.where} refused us: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            if STORAGE_FAILURE in metadata:
                return StorageError(details)
            # A message over the limit, or a limit of the conductor's reached (followers).
            return ValidationError(details if "try again later" in details else f"request too large: {details}")
        return UnreachableError(f"cannot reach the conductor at {self.where}: {code.name.lower()}"
                                f"{': ' + details.splitlines()[0] if details else ''}")

    def submit(self, request: audience_pb2.SubmitRequest) -> audience_pb2.SubmitReply:
        reply: audience_pb2.SubmitReply = self.call(lambda: self.stub.Submit(request, timeout=CALL_TIMEOUT))
        return reply

    def get(self, job_id: str) -> audience_pb2.Job:
        job: audience_pb2.Job = self.call(lambda: self.stub.GetJob(audience_pb2.JobRef(job_id=job_id),
                                                                   timeout=CALL_TIMEOUT))
        return job

    def wait(self, job_id: str, timeout: float | None,
             progress: Callable[[audience_pb2.JobProgress], None] | None = None) -> audience_pb2.Job:
        """Block in a server-side wait; ride out conductor restarts until the timeout.
        With ``progress``, the conductor streams the job's progress to it meanwhile (a
        conductor too old for that gives a plain wait)."""
        job = self.get(job_id)  # unreachable (4) or unknown job (5) fail at once
        if job.finished:
            return job
        watching = progress

        def answer(request: audience_pb2.WaitRequest, call_timeout: float | None) -> audience_pb2.Job | None:
            if watching is None:
                for finished in self.stub.WaitJob(request, timeout=call_timeout):
                    return finished  # type: ignore[no-any-return]
                return None
            for update in self.stub.WatchJob(request, timeout=call_timeout):
                if update.HasField("job"):
                    return update.job  # type: ignore[no-any-return]
                watching(update.progress)
            return None

        def plain_wait() -> bool:  # a conductor from before WatchJob
            nonlocal watching
            asked_to_watch, watching = watching is not None, None
            return asked_to_watch
        return self._ride_out(job_id, timeout, self.get, answer, plain_wait)

    def _ride_out(self, ident: str, timeout: float | None, get: Callable[[str], T],
                  answer: Callable[[audience_pb2.WaitRequest, float | None], T | None],
                  unimplemented: Callable[[], bool] = lambda: False) -> T:
        """One server-side wait for a job or workflow (``answer``: its last message, None
        when the stream ended without one), asked again with jittered backoff while the
        conductor restarts, until ``timeout`` (then ``get`` reads it as it stands) or,
        without one, an outage of MAX_OUTAGE. ``unimplemented`` says whether to ask again
        when the conductor does not know the call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_since: float | None = None
        delay = 0.2
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return get(ident)
            request = audience_pb2.WaitRequest(job_id=ident, timeout_seconds=remaining or 0.0)
            try:
                found = answer(request, None if remaining is None else remaining + CALL_TIMEOUT)
                if found is None:
                    raise UnreachableError(f"the conductor at {self.where} ended the wait without an answer")
                return found
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED and unimplemented():
                    continue
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self.translate(err) from None
                now = time.monotonic()
                outage_since = outage_since or now
                if deadline is None and now - outage_since > MAX_OUTAGE:
                    raise self.translate(err) from None
            # The conductor went away mid-wait (restart): try again with jittered backoff.
            import random  # only a wait that rides out an outage needs it

            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    def follow(self, job_id: str, host: str, timeout: float | None,
               on_event: Callable[[audience_pb2.FollowEvent], None],
               on_gap: Callable[[], None] = lambda: None) -> audience_pb2.Job:
        """The job's live output (of ``host`` only, if given) and task moves, each handed
        to ``on_event`` as it comes, until the job ends (or ``timeout``); then the job.
        Rides out conductor restarts (and a connection lost meanwhile) like :meth:`wait`;
        ``on_gap`` is told each time the follow begins again, since what was printed
        meanwhile is not shown."""
        job = self.get(job_id)  # unreachable (4) or unknown job (5) fail at once
        if job.finished:
            return job
        calls = 0

        def answer(request: audience_pb2.WaitRequest, call_timeout: float | None) -> audience_pb2.Job | None:
            nonlocal calls
            calls += 1
            if calls > 1:
                on_gap()
            follow = audience_pb2.FollowRequest(job_id=job_id, host=host, timeout_seconds=request.timeout_seconds)
            for event in self.stub.FollowJob(follow, timeout=call_timeout):
                if event.HasField("job"):
                    return event.job  # type: ignore[no-any-return]
                on_event(event)
            return None
        return self._ride_out(job_id, timeout, self.get, answer)

    def cancel(self, job_id: str) -> audience_pb2.Job:
        job: audience_pb2.Job = self.call(lambda: self.stub.Cancel(audience_pb2.JobRef(job_id=job_id),
                                                                   timeout=CALL_TIMEOUT))
        return job

    def retry(self, job_id: str, states: Sequence[common_pb2.TaskState]) -> audience_pb2.RetryReply:
        request = audience_pb2.RetryRequest(job_id=job_id, states=states)
        reply: audience_pb2.RetryReply = self.call(lambda: self.stub.Retry(request, timeout=CALL_TIMEOUT))
        return reply

    def delete(self, job_id: str) -> audience_pb2.DeleteReply:
        reply: audience_pb2.DeleteReply = self.call(
            lambda: self.stub.Delete(audience_pb2.JobRef(job_id=job_id), timeout=CALL_TIMEOUT))
        return reply

    def drain(self, names: Sequence[str], undrain: bool, reason: str = "") -> audience_pb2.DrainReply:
        request = audience_pb2.DrainRequest(names=names, undrain=undrain, reason=reason)
        reply: audience_pb2.DrainReply = self.call(lambda: self.stub.Drain(request, timeout=CALL_TIMEOUT))
        return reply

    def players(self, targets: Sequence[str] = ()) -> audience_pb2.PlayerList:
        """The players (only those named, or in the @groups named, when targets are given)."""
        request = audience_pb2.ListPlayersRequest(targets=targets)
        players: audience_pb2.PlayerList = self.call(
            lambda: self.stub.ListPlayers(request, timeout=CALL_TIMEOUT))
        return players

    def jobs(self, request: audience_pb2.ListJobsRequest) -> audience_pb2.JobList:
        jobs: audience_pb2.JobList = self.call(lambda: self.stub.ListJobs(request, timeout=CALL_TIMEOUT))
        return jobs

    # ---- workflows ---------------------------------------------------------------------

    def submit_workflow(self, request: audience_pb2.WorkflowRequest) -> audience_pb2.WorkflowReply:
        reply: audience_pb2.WorkflowReply = self.call(
            lambda: self.stub.SubmitWorkflow(request, timeout=CALL_TIMEOUT))
        return reply

    def get_workflow(self, workflow_id: str) -> audience_pb2.Workflow:
        flow: audience_pb2.Workflow = self.call(
            lambda: self.stub.GetWorkflow(audience_pb2.JobRef(job_id=workflow_id), timeout=CALL_TIMEOUT))
        return flow

    def cancel_workflow(self, workflow_id: str) -> audience_pb2.Workflow:
        flow: audience_pb2.Workflow = self.call(
            lambda: self.stub.CancelWorkflow(audience_pb2.JobRef(job_id=workflow_id), timeout=CALL_TIMEOUT))
        return flow

    def wait_workflow(self, workflow_id: str, timeout: float | None) -> audience_pb2.Workflow:
        """As ``wait`` for a job: one server-side wait (a workflow may run for hours),
        riding out conductor restarts until the timeout."""
        flow = self.get_workflow(workflow_id)  # unreachable (4) or unknown workflow (5) fail at once
        if flow.finished:
            return flow

        def answer(request: audience_pb2.WaitRequest, call_timeout: float | None) -> audience_pb2.Workflow | None:
            for finished in self.stub.WaitWorkflow(request, timeout=call_timeout):
                return finished  # type: ignore[no-any-return]
            return None
        return self._ride_out(workflow_id, timeout, self.get_workflow, answer)

    # ---- schedules ---------------------------------------------------------------------

    def add_schedule(self, request: audience_pb2.ScheduleRequest) -> audience_pb2.ScheduleInfo:
        info: audience_pb2.ScheduleInfo = self.call(lambda: self.stub.AddSchedule(request, timeout=CALL_TIMEOUT))
        return info

    def change_schedule(self, name: str, action: str) -> audience_pb2.ScheduleInfo:
        """pause, resume or remove the schedule ``name``."""
        request = audience_pb2.ScheduleChange(name=name, action=action)
        info: audience_pb2.ScheduleInfo = self.call(
            lambda: self.stub.ChangeSchedule(request, timeout=CALL_TIMEOUT))
        return info

    def list_schedules(self) -> audience_pb2.ScheduleList:
        schedules: audience_pb2.ScheduleList = self.call(
            lambda: self.stub.ListSchedules(audience_pb2.ListSchedulesRequest(), timeout=CALL_TIMEOUT))
        return schedules
