"""Talking to the conductor's Audience API, with gRPC errors mapped to exit codes.

With several conductors listed (one leads, the others stand by and refuse), each call
goes to the one that answered last; a refusal or an unreachable conductor moves it on to
the next (or to the leader a refusal names, when it is listed), for at most one round of
the list and one more after a short pause. Whatever answered is used for the rest of the
process. Waits are asked in slices, so a conductor that froze holds one for seconds, not
for the 50 s keepalive takes to notice.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import grpc

from orchestra.config import AudienceConfig
from orchestra.errors import (
    POLICY_REFUSAL, STORAGE_FAILURE, NoSuchJobError, OrchestraError, PolicyDenied, StorageError,
    UnreachableError, ValidationError,
)
from orchestra.leader_hint import NOT_LEADER, PLAYER_LINK, leader_hint, same_address
from orchestra.params import check_idempotency_key
from orchestra.tls import MESSAGE_LIMITS, Material, channel_credentials, channel_options
from orchestra.wire import audience_pb2, audience_pb2_grpc, common_pb2

T = TypeVar("T")
CALL_TIMEOUT = 30.0
# How long --wait without --timeout keeps trying to reach a conductor that went away.
MAX_OUTAGE = 600.0
# With several conductors: how long a new connection may take before the conductor counts
# as unreachable (a frozen one accepts TCP and never finishes TLS; gRPC waits 20 s), the
# pause before the second round of the list, the longest slice of a server-side wait, and
# how much longer than its slice a wait's call may take.
CONNECT_SECONDS = 5.0
PREFER_SECONDS = 0.5
SECOND_ROUND_PAUSE = (0.2, 1.0)
WAIT_SLICE = 10.0
SLICE_GRACE = 5.0
# A follow is not sliced (a new follow repeats the last lines printed): instead, every
# PROBE_SECONDS, the conductor is asked (health, PROBE_TIMEOUT) whether it still leads.
PROBE_SECONDS = 10.0
PROBE_TIMEOUT = 5.0
AUTO_KEY_PREFIX = "auto-"


K = TypeVar("K", audience_pb2.SubmitRequest, audience_pb2.WorkflowRequest)


class _NoAnswer(Exception):
    """A conductor that did not finish connecting in CONNECT_SECONDS (as UNAVAILABLE)."""


def _reason(err: grpc.RpcError) -> str:
    """One line on why a call failed: the code, and the first line of its details."""
    details = (err.details() or "").partition("\n")[0]
    return f"{err.code().name.lower()}{': ' + details if details else ''}"


def auto_key() -> str:
    """An idempotency key made up for a submission that has none (see Client.submit)."""
    import secrets

    key = AUTO_KEY_PREFIX + secrets.token_hex(16)
    check_idempotency_key(key)
    return key


class Client:
    def __init__(self, cfg: AudienceConfig) -> None:
        self.cfg = cfg
        self.targets = cfg.targets()  # none: the local socket
        self.several = len(self.targets) > 1
        self.index = 0
        self.channels: dict[int, grpc.Channel] = {}
        self.first_connect = True
        self.proven = False  # a call has been answered on the channel in use
        self.probe_failed = False  # the last follow was cancelled because its conductor stopped leading
        if self.targets:
            assert cfg.tls is not None
            self.credentials = channel_credentials(Material.load(cfg.tls))
            self._open(0)
        else:
            self.where = str(cfg.socket)
            self.channel = grpc.insecure_channel(f"unix:{cfg.socket}", options=MESSAGE_LIMITS)
            self.stub = audience_pb2_grpc.AudienceStub(self.channel)

    def _open(self, index: int) -> None:
        """Use the conductor ``targets[index]`` from now on (its channel, opened once)."""
        self.index = index
        self.where, name = self.targets[index]
        if index not in self.channels:
            self.channels[index] = grpc.secure_channel(self.where, self.credentials, options=channel_options(name))
        self.channel = self.channels[index]
        self.stub = audience_pb2_grpc.AudienceStub(self.channel)
        self.proven = False

    def close(self) -> None:
        for channel in {id(c): c for c in [self.channel, *self.channels.values()]}.values():
            channel.close()

    def _move_on(self, hint: str | None) -> None:
        """After a refusal or an outage: to the leader the refusal named, when it is one of
        the listed conductors (never an address taken from the network), else the next."""
        for number, (address, _) in enumerate(self.targets):
            if hint is not None and same_address(address, hint) and number != self.index:
                self._open(number)
                return
        self._open((self.index + 1) % len(self.targets))

    def _connect(self) -> None:
        """With several conductors, before the first call on a channel: wait until it is
        connected or has failed (then the call fails at once, saying why), at most
        CONNECT_SECONDS; raises _NoAnswer when it is still connecting by then.

        The first time, every listed conductor is dialled at once, and when the first
        listed is not connected within PREFER_SECONDS of another one, that other one is
        used: a frozen conductor accepts TCP and never finishes TLS, and must not cost
        each command CONNECT_SECONDS."""
        if not self.several or self.proven:
            return
        first, self.first_connect = self.first_connect, False
        if first:
            for number, (address, name) in enumerate(self.targets):
                if number not in self.channels:
                    self.channels[number] = grpc.secure_channel(address, self.credentials,
                                                                options=channel_options(name))
        watched = dict(self.channels) if first else {self.index: self.channel}
        states: dict[int, grpc.ChannelConnectivity] = {}
        changed = threading.Condition()
        callbacks = {}
        for number, channel in watched.items():
            def seen(state: grpc.ChannelConnectivity, number: int = number) -> None:
                with changed:
                    states[number] = state
                    changed.notify_all()
            callbacks[number] = seen
            channel.subscribe(seen, try_to_connect=True)
        ready, failed = grpc.ChannelConnectivity.READY, (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                                                        grpc.ChannelConnectivity.SHUTDOWN)
        deadline = time.monotonic() + CONNECT_SECONDS
        other_since: float | None = None
        chosen: int | None = None
        try:
            with changed:
                while chosen is None and time.monotonic() < deadline:
                    here = states.get(self.index)
                    others = [n for n, state in sorted(states.items()) if state == ready and n != self.index]
                    if here == ready or (here in failed and not others and len(watched) == 1):
                        chosen = self.index
                    elif others:
                        other_since = other_since or time.monotonic()
                        if here in failed or time.monotonic() - other_since >= PREFER_SECONDS:
                            chosen = others[0]
                    elif len(states) == len(watched) and all(state in failed for state in states.values()):
                        chosen = self.index  # every one failed: the call says why at once
                    if chosen is None:
                        changed.wait(0.05)
        finally:
            for number, channel in watched.items():
                channel.unsubscribe(callbacks[number])
        if chosen is None:
            raise _NoAnswer(f"no connection within {CONNECT_SECONDS:g} s")
        if chosen != self.index:
            self._open(chosen)

    def call(self, fn: Callable[[], T]) -> T:
        if self.several:
            return self._on_leader(fn)
        try:
            return fn()
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def _on_leader(self, fn: Callable[[], T]) -> T:
        """``fn`` on the conductor in use, moving on while it is refused (a standby) or
        unreachable: one round of the list, a short jittered pause, one more round."""
        tried: list[str] = []
        last = ""
        rounds = len(self.targets)
        for attempt in range(2 * rounds):
            if attempt == rounds:
                time.sleep(random.uniform(*SECOND_ROUND_PAUSE))
            if self.where not in tried:
                tried.append(self.where)
            try:
                self._connect()
                result = fn()
            except _NoAnswer as err:
                last = f"{self.where}: {err}"
                self._move_on(None)
                continue
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self.translate(err) from None
                last = f"{self.where}: {_reason(err)}"
                self._move_on(leader_hint(err))
                continue
            self.proven = True
            return result
        raise UnreachableError(f"no leading conductor answered (tried {', '.join(tried)}); last: {last}")

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
        if code == grpc.StatusCode.UNAVAILABLE and details.startswith(NOT_LEADER):
            return UnreachableError(f"the conductor at {self.where} is {details.splitlines()[0]}")
        return UnreachableError(f"cannot reach the conductor at {self.where}: {code.name.lower()}"
                                f"{': ' + details.splitlines()[0] if details else ''}")

    def _keyed(self, request: K) -> K:
        """The request, with an idempotency key made up when several conductors are listed
        and none was given.

        A submission is sent again to the next conductor when the one it went to is
        unreachable or fails over. The first may have committed it before the reply was
        lost: with a key the conductor that leads now finds that job (``existing``) instead
        of queueing it a second time. One conductor alone needs none: its calls are never
        sent twice."""
        if not self.several or request.idempotency_key:
            return request
        keyed = type(request)()
        keyed.CopyFrom(request)
        keyed.idempotency_key = auto_key()
        return keyed

    def submit(self, request: audience_pb2.SubmitRequest) -> audience_pb2.SubmitReply:
        request = self._keyed(request)
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
        return self._ride_out(job_id, timeout, self.get, answer, plain_wait, lambda found: found.finished)

    def _ride_out(self, ident: str, timeout: float | None, get: Callable[[str], T],
                  answer: Callable[[audience_pb2.WaitRequest, float | None], T | None],
                  unimplemented: Callable[[], bool] = lambda: False,
                  finished: Callable[[T], bool] = lambda _: True) -> T:
        """One server-side wait for a job or workflow (``answer``: its last message, None
        when the stream ended without one), asked again with jittered backoff while the
        conductor restarts, until ``timeout`` (then ``get`` reads it as it stands) or,
        without one, an outage of MAX_OUTAGE. ``unimplemented`` says whether to ask again
        when the conductor does not know the call.

        With several conductors the wait is asked in slices of at most WAIT_SLICE seconds
        (again while ``finished`` says no), and a conductor that refuses, cannot be
        reached or lets a slice overrun its deadline is left for the next one at once:
        a frozen leader holds the wait for a slice, not for the 50 s keepalive takes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_since: float | None = None
        delay = 0.2
        misses = 0  # conductors in a row that failed the wait (several listed)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return get(ident)
            if self.several:
                wait_for = WAIT_SLICE if remaining is None else min(remaining, WAIT_SLICE)
                call_timeout: float | None = wait_for + SLICE_GRACE
            else:
                wait_for = remaining or 0.0
                call_timeout = None if remaining is None else remaining + CALL_TIMEOUT
            request = audience_pb2.WaitRequest(job_id=ident, timeout_seconds=wait_for)
            try:
                self._connect()
                found = answer(request, call_timeout)
                if found is None:
                    raise UnreachableError(f"the conductor at {self.where} ended the wait without an answer")
                if not self.several or finished(found):
                    return found
                # A slice ended with the job still running: ask the next one.
                self.proven, outage_since, delay, misses = True, None, 0.2, 0
                continue
            except _NoAnswer as err:
                failure: grpc.RpcError | None = None
                reason = str(err)
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNIMPLEMENTED and unimplemented():
                    continue
                lost = code == grpc.StatusCode.UNAVAILABLE or (
                    self.several and (code == grpc.StatusCode.DEADLINE_EXCEEDED or self._probe_failed(err)))
                if not lost:
                    raise self.translate(err) from None
                failure, reason = err, _reason(err)
            now = time.monotonic()
            outage_since = outage_since or now
            if deadline is None and now - outage_since > MAX_OUTAGE:
                if failure is None or not self.several:
                    raise (self.translate(failure) if failure is not None
                           else UnreachableError(f"cannot reach the conductor at {self.where}: {reason}"))
                raise UnreachableError(f"no leading conductor answered for {MAX_OUTAGE:g} s;"
                                       f" last: {self.where}: {reason}")
            if self.several:
                self._move_on(None if failure is None else leader_hint(failure))
                misses += 1
                if misses % len(self.targets):
                    continue  # straight on to the next conductor; a whole round failed: pause
            # The conductor went away mid-wait (restart): try again with jittered backoff.
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    def _probe_failed(self, err: grpc.RpcError) -> bool:
        """Whether ``err`` is the cancel of a follow whose conductor stopped leading or
        answering (see :meth:`_probed`)."""
        return bool(err.code() == grpc.StatusCode.CANCELLED and self.probe_failed)

    @contextmanager
    def _probed(self, call: grpc.Call) -> Iterator[None]:
        """With several conductors: while ``call`` (a follow) streams, ask the conductor
        every PROBE_SECONDS whether it still leads (health, PlayerLink), and cancel the
        call when it does not say so in PROBE_TIMEOUT."""
        self.probe_failed = False
        if not self.several:
            yield
            return
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        done = threading.Event()
        health = health_pb2_grpc.HealthStub(self.channel)

        def probe() -> None:
            while not done.wait(PROBE_SECONDS):
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=PLAYER_LINK), timeout=PROBE_TIMEOUT)
                    leads = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError as err:
                    # A conductor that does not answer health (or not to us) is taken at
                    # its stream's word; one that cannot be reached is not.
                    leads = err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not leads and not done.is_set():
                    self.probe_failed = True
                    call.cancel()
                    return
        worker = threading.Thread(target=probe, name="leader-probe", daemon=True)
        worker.start()
        try:
            yield
        finally:
            done.set()

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
        # Never in slices, even with several conductors: a follow asked again begins with
        # the last lines printed, so each slice would print them twice. It lasts the whole
        # timeout, and with several conductors the conductor is probed instead (_probed).
        deadline = None if timeout is None else time.monotonic() + timeout

        def answer(request: audience_pb2.WaitRequest, call_timeout: float | None) -> audience_pb2.Job | None:
            nonlocal calls
            calls += 1
            if calls > 1:
                on_gap()
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            follow = audience_pb2.FollowRequest(job_id=job_id, host=host, timeout_seconds=left or 0.0)
            stream = self.stub.FollowJob(follow, timeout=None if left is None else left + CALL_TIMEOUT)
            with self._probed(stream):
                for event in stream:
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
        request = self._keyed(request)
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
        return self._ride_out(workflow_id, timeout, self.get_workflow, answer,
                              finished=lambda found: found.finished)

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
