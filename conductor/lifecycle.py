"""The one owner of every task transition.

Each event a task can meet has one method here, and that method does everything the
event implies: the atomic store call, the in-flight bookkeeping of the player's session,
the message to the player, the wake-up of waiters and of dispatch, the audit record and
the log line. The gRPC services (``link``, ``audience``) and the loops (``dispatch``,
``timers``) translate what happened into one of these calls and never pair the steps
by hand. Which moves are legal is :mod:`conductor.states`' business; the store refuses
anything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from conductor import reconcile, rollout
from conductor.audit import AuditLog
from conductor.clusters import Clusters
from conductor.index import DispatchIndex
from conductor.limits import Limits
from conductor.metrics import Counts
from conductor.rollout import Rollouts
from conductor.sessions import PlayerSession, Sessions
from conductor.states import IN_FLIGHT, STARTED, UNSTARTED, TaskState
from conductor.store import (
    Change, Drain, JobRecord, NewJob, QueuedTask, Retried, Store, Submitted, TaskRecord, TaskRef,
)
from conductor.output import OutputHub
from conductor.watchers import Watchers
from orchestra import faults, log
from orchestra.errors import ValidationError
from orchestra.inventory import inventory_from_wire
from orchestra.log import throttled
from orchestra.outcome import TaskOutcome
from orchestra.params import MAX_REASON_CHARS, MAX_TAIL_BYTES
from orchestra.tls import PeerIdentity
from orchestra.wire import common_pb2, player_pb2

logger = log.get("conductor")

ENDINGS: Mapping[int, TaskState] = {
    player_pb2.ENDING_OK: TaskState.OK,
    player_pb2.ENDING_FAILED: TaskState.FAILED,
    player_pb2.ENDING_TIMED_OUT: TaskState.TIMED_OUT,
    player_pb2.ENDING_REFUSED: TaskState.REFUSED,
    player_pb2.ENDING_CANCELLED: TaskState.CANCELLED,
    player_pb2.ENDING_LOST: TaskState.LOST,
    player_pb2.ENDING_EXPIRED: TaskState.EXPIRED,
}
NOT_OURS = "the conductor no longer assigns this task to this player"
CANCEL_REQUESTED = "cancelled by request"
REMOVAL_WAIT_SECONDS = 10.0
STORE_RETRY_FIRST, STORE_RETRY_MAX = 0.5, 10.0  # seconds between tries of a failed write
CANCEL_BATCH = 256  # tasks of one job cancelled concurrently, so their commits are grouped


class KeyReused(ValidationError):
    """An idempotency key sent again with another request: refused, naming its job."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for job {job_id}"
                         " with a different score, targets or parameters")
        self.job_id = job_id


class Lifecycle:
    def __init__(self, store: Store, sessions: Sessions, audit: AuditLog) -> None:
        self.store = store
        self.sessions = sessions
        self.audit = audit
        self.index = DispatchIndex()
        self.rollouts = Rollouts()  # the queued tasks rollouts hold back from the index
        self.limits = Limits()  # the scores' concurrency and exclusive limits
        self.clusters = Clusters()  # conductor.toml [groups], set (and reloaded) by main
        self.drains: dict[str, Drain] = {}
        self.drained: dict[str, Drain] = {}  # each drained player, with the drain covering it
        self.watchers = Watchers()
        self.output = OutputHub(store, sessions)  # live output to followers of a job
        self.dispatch_wanted = asyncio.Event()
        self.deadlines_changed = asyncio.Event()
        self.retries_changed = asyncio.Event()
        # Players whose free slots grew since the last dispatch pass; None: look at all.
        self.freed: set[str] | None = None
        # Players whose certificate the CRL revokes, with why (until one connects again).
        self.revoked_players: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.counts = Counts()  # for the metrics; plain numbers, changed here only
        # Called with ("job", JOB_ID) or ("workflow", WORKFLOW_ID) once one has finished
        # (committed): the notifiers. Each must return at once and never raise.
        self.on_finished: list[Callable[[str, str], None]] = []

    @classmethod
    async def restore(cls, store: Store, sessions: Sessions, audit: AuditLog,
                      clusters: Clusters | None = None) -> Lifecycle:
        """The lifecycle of a conductor starting on this queue: dispatch's index of the
        queued tasks, each open job's deadline, rollout and score limits, the tasks in
        flight they count, and the drained hosts. A rollout releases its tasks again
        into the window its tasks in flight leave."""
        lifecycle = cls(store, sessions, audit)
        if clusters is not None:
            lifecycle.clusters = clusters
        in_flight: dict[str, list[str]] = {}
        flying = await store.in_flight()
        for task in flying:
            in_flight.setdefault(task.job_id, []).append(task.task_id)
        for job in await store.open_jobs():
            lifecycle.index.job_opened(job.job_id, job.deadline_at)
            lifecycle.rollouts.track(job.job_id, job.rollout, job.phase, in_flight.get(job.job_id, ()))
            lifecycle.limits.track(job.job_id, job.score, job.rules)
        lifecycle.limits.restore((task.task_id, task.job_id, task.player) for task in flying)
        for queued in await store.queued():
            lifecycle._enqueue(queued)
        for job_id in lifecycle.rollouts.jobs():
            lifecycle._release(job_id)
        lifecycle.drains = {drain.name: drain for drain in await store.drains()}
        lifecycle.refresh_drained()
        return lifecycle

    def _enqueue(self, task: QueuedTask) -> None:
        """A task committed as queued: into the dispatch index, unless its rollout holds
        it back for now."""
        if self.rollouts.offer(task):
            self._to_index(task)

    def _to_index(self, task: QueuedTask) -> None:
        self.index.add(task)
        if task.not_before is not None:  # a retry's delay: the timer must know of it
            self.retries_changed.set()

    def _release(self, job_id: str) -> None:
        """Whatever of the job's held tasks its rollout lets go now, into the index (those
        whose player could take them now first: connected, not drained)."""
        released = self.rollouts.release(
            job_id, lambda task: task.player in self.sessions and task.player not in self.drained)
        for task in released:
            self._to_index(task)
        if released:
            self.wake()

    def _left_flight(self, task_id: str) -> None:
        """The task no longer counts against its score's limits: wake whoever waited."""
        waiting = self.limits.left(task_id)
        if None in waiting:
            self.wake()
        elif waiting:
            self.wake(*(player for player in waiting if player is not None))

    def refresh_drained(self) -> None:
        """Which players the drains cover now (groups and the players file may have changed)."""
        self.drained = self.clusters.drained(self.drains.values(), self.sessions.roster)

    async def restore_counts(self) -> None:
        """At start-up: how the tasks of each job still open ended so far, so the status
        each finishes with is counted without reading the queue then."""
        open_jobs = self.index.open_jobs()
        for start in range(0, len(open_jobs), 1000):
            for job_id, states in (await self.store.task_counts(open_jobs[start:start + 1000])).items():
                self.counts.job_restored(job_id, states)

    def wake(self, *players: str) -> None:
        """Something may now be dispatchable: a slot of these players freed up, or (no
        names) anything else changed: a new job, a new player, a reload."""
        if not players:
            self.freed = None
        elif self.freed is not None:
            self.freed.update(players)
        self.dispatch_wanted.set()

    def take_freed(self) -> set[str] | None:
        """For the dispatch pass: whose slots grew (None: everyone's may have)."""
        freed, self.freed = self.freed, set()
        return freed

    # ---- shared steps ------------------------------------------------------------------

    async def _apply(self, write: Awaitable[Change]) -> Change:
        """Await a store write, then :meth:`_committed`.

        A cancellation between the two would leave a commit out of the index, so no
        event may be cancelled half-way: the gRPC entry points a client can cancel
        (Submit, Cancel, a session's Hello) shield the whole event, a player's messages
        are handled in tasks of their own that nothing cancels, and the loops are
        cancelled only at shutdown (the next start rebuilds the index)."""
        return self._committed(await write)

    def _committed(self, change: Change) -> Change:
        """After every committed transition: the dispatch index follows the store, and
        the waiters of a job that just finished are woken."""
        if change.applied and change.task_id:
            if change.queued is not None:
                self._enqueue(change.queued)
            else:
                self.index.discard(change.task_id)
            if change.ended is not None:  # an attempt ended, and the task was queued again
                self.counts.attempt_ended(change.ended)
                logger.info("task_retrying", task_id=change.task_id, ended=change.ended.value,
                            not_before=change.queued.not_before if change.queued else None)
            if change.state is not None:
                self.counts.task_moved(change.job_id, change.task_id, change.state)
                if change.state not in IN_FLIGHT:
                    self._left_flight(change.task_id)
                if change.state.terminal:
                    self.rollouts.ended(change.job_id, change.task_id)
                self.output.moved(change)
            self.watchers.task_changed(change.job_id)
        if change.phase is not None:
            self._phase_moved(change)
        if change.phase is not None or (change.applied and change.state is not None and change.state.terminal):
            self._release(change.job_id)  # the window has room, or the canaries passed
        if change.job_finished:
            logger.info("job_finished", job_id=change.job_id)
            self.counts.job_finished(change.job_id)
            self.index.job_finished(change.job_id)
            self.rollouts.forget(change.job_id)
            self.limits.forget(change.job_id)
            self.watchers.job_finished(change.job_id)
            self.finished("job", change.job_id)
        return change

    def finished(self, kind: str, ident: str) -> None:
        """Tell the hooks that a job or workflow has finished (its end is committed)."""
        for hook in self.on_finished:
            try:
                hook(kind, ident)
            except Exception:  # a hook must not stop the lifecycle: logged, and on we go
                logger.exception("finished_hook_failed", kind=kind, id=ident)

    def _phase_moved(self, change: Change) -> None:
        """The store moved a rollout on (canary passed, or stopped and its queued tasks
        skipped in the same commit)."""
        phase = change.phase or ""
        self.rollouts.moved(change.job_id, phase)
        for task_id in change.skipped:
            self.index.discard(task_id)
            self.counts.task_moved(change.job_id, task_id, TaskState.SKIPPED)
        if change.skipped:
            self.watchers.task_changed(change.job_id)
        logger.info("rollout_phase", job_id=change.job_id, phase=phase, skipped=len(change.skipped))
        self.audit.record("rollout", phase, job_id=change.job_id, skipped=len(change.skipped) or None)

    async def _end(self, task: TaskRecord, new: TaskState, reason: str, **expect: Any) -> Change:
        """End a task the player cannot report on (expired, removed, lost, cancelled)."""
        outcome = TaskOutcome.ended(reason, time.time(), started_at=task.outcome.started_at)
        return await self._apply(self.store.transition(
            task.task_id, new, detail=reason, expect_attempt=task.attempt, outcome=outcome, **expect))

    def _call_back(self, session: PlayerSession | None, task_id: str, attempt: int, reason: str) -> None:
        """Tell a player (if connected) to drop a task that no longer counts against its slots."""
        if session is not None:
            session.drop(task_id, attempt, reason)
            self.wake(session.name)

    async def _requeue(self, ref: TaskRef, detail: str, *, one_of_only: bool = False,
                       refused_by: str | None = None, **log_fields: str) -> bool:
        """dispatched -> queued (never started); logged as a failover when one-of only."""
        change = await self._apply(self.store.requeue(
            ref, detail=detail, one_of_only=one_of_only, refused_by=refused_by))
        if change.applied:
            self.wake()
            if refused_by is not None:
                log_fields["refused_by"] = refused_by
            logger.info("task_failed_over" if one_of_only else "task_requeued", task_id=ref.task_id,
                        **log_fields)
        return change.applied

    # ---- submission and dispatch -------------------------------------------------------

    async def submit(self, job: NewJob, **audit: Any) -> tuple[str, bool]:
        """Commit and queue a job: its id, and whether its idempotency key named it
        already. ("", False): nothing was committed, because the workflow step or schedule
        run it is (``job.workflow_id``, ``job.fires``) was started meanwhile."""
        submitted = await asyncio.shield(self._queue_job(job, audit))
        return submitted.job_id, submitted.existing

    async def _queue_job(self, job: NewJob, audit: dict[str, Any]) -> Submitted:
        """Commit the job, index its tasks and deadline, record and wake dispatch: one
        step a client that gives up cannot cut short (see :meth:`_apply`)."""
        submitted = await self.store.submit(job)
        job_id, existing = submitted.job_id, submitted.existing
        if submitted.stale:  # a workflow step or schedule run someone else started: nothing committed
            return submitted
        if submitted.conflict:  # the key was taken meanwhile, for another request
            refusal = KeyReused(job.idempotency_key or "", job_id)
            self.audit.record("submit", "rejected", reason=str(refusal), job_id=job_id, **audit)
            raise refusal
        faults.point("submit.committed")
        if not existing:
            self.counts.job_submitted(job_id)
            self.rollouts.track(job_id, job.rollout, rollout.first_phase(job.rollout))
            self.limits.track(job_id, job.score, job.rules)
            for task in submitted.queued:
                self._enqueue(task)
            self._release(job_id)
            earliest = self.index.next_deadline()
            self.index.job_opened(job_id, job.deadline_at)
            if earliest is None or job.deadline_at < earliest:
                self.deadlines_changed.set()
        logger.info("job_submitted", job_id=job_id, score=job.score, scope=job.scope,
                    targets=len(job.targets), requester=job.requester, existing=existing,
                    params=sorted(job.params))
        self.audit.record("submit", "accepted", job_id=job_id, existing=existing, **audit)
        self.wake()
        return submitted

    async def dispatch(self, session: PlayerSession, task: QueuedTask) -> bool:
        """queued -> dispatched for one task: :meth:`dispatch_many` of one."""
        return await self.dispatch_many([(session, task)]) == 1

    async def dispatch_many(self, plan: list[tuple[PlayerSession, QueuedTask]]) -> int:
        """queued -> dispatched for each (session, task) of one pass: one commit for all,
        before any RunTask goes out. Returns how many were claimed."""
        takeable = []
        for session, task in plan:
            if self.sessions.can_take(session):
                takeable.append((session, task))
            else:
                self.index.put_back(task)  # closed or replaced since the pass chose it: still queued
        plan = takeable
        if not plan:
            return 0
        try:
            claimed = await self.store.claim_many([(task.task_id, session.name) for session, task in plan])
        except BaseException:
            for _, task in plan:  # nothing was committed: they are still queued
                self.index.put_back(task)
            raise
        faults.point("dispatch.claimed")
        for _, task in plan:  # claimed now, or no longer queued (that is why it was not)
            self.index.discard(task.task_id)
        by_name = {session.name: session for session, _ in plan}
        gone: set[str] = set()
        for sent in claimed:
            session = by_name[sent.player]
            if not self.sessions.is_current(session):
                gone.add(session.name)  # it went away while we committed
                continue
            session.in_flight.add(sent.task_id)
            self.limits.claimed(sent.task_id, sent.job_id, session.name)
            self.counts.dispatched(sent.task_id, sent.score)
            self.watchers.task_changed(sent.job_id)
            session.send(run=player_pb2.RunTask(
                task_id=sent.task_id, attempt=sent.attempt, job_id=sent.job_id,
                score=sent.score, params=dict(sent.params), requester=sent.requester,
                deadline_at=sent.deadline_at))
            logger.info("task_dispatched", task_id=sent.task_id, player=session.name, attempt=sent.attempt)
            self.audit.record("dispatch", "sent", job_id=sent.job_id, task_id=sent.task_id,
                              score=sent.score, certname=session.name, serial=session.serial,
                              attempt=sent.attempt)
        for name in gone:  # fail over what it was given (its next Hello reconciles the rest)
            await self.player_gone(name)
        return len(claimed)

    # ---- what players say --------------------------------------------------------------

    async def _until_stored(self, session: PlayerSession, what: str,
                            step: Callable[[], Awaitable[None]]) -> None:
        """Carry out a player's message, retrying while the queue cannot be written (a
        full disk). The session stays up, unanswered; the player waits for its grant or
        acknowledgement as it would on a slow network. Once its session is gone, what
        it said is said again in its next Hello."""
        delay = STORE_RETRY_FIRST
        while True:
            try:
                return await step()
            except sqlite3.OperationalError as err:
                if session.closed.is_set():
                    return None
                throttled(logger, "error", "store_write_failed", key=str(err), player=session.name, what=what,
                          error=str(err), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX)

    async def grant(self, session: PlayerSession, request: player_pb2.StartRequest) -> None:
        """dispatched -> running, then the grant: an ungranted task never started anywhere."""
        await self._until_stored(session, "grant", lambda: self._grant(session, request))

    async def _grant(self, session: PlayerSession, request: player_pb2.StartRequest) -> None:
        change = await self._apply(self.store.transition(
            request.task_id, TaskState.RUNNING, detail="start granted", expect_attempt=request.attempt,
            expect_player=session.name, expect_state=TaskState.DISPATCHED,
            outcome=TaskOutcome(started_at=time.time())))
        if change.applied:
            faults.point("grant.committed")
        ours = change.player == session.name and change.attempt == request.attempt
        # Asked again (after a reconnect): granted already if it is running.
        if change.applied or (ours and change.state == TaskState.RUNNING):
            session.send(grant=player_pb2.StartGrant(task_id=request.task_id, attempt=request.attempt))
        elif ours and change.state == TaskState.CANCELLING:
            # Cancelled before the grant reached it: it stays in flight until the player
            # confirms, so only the kill order is repeated.
            session.tell_cancel(request.task_id, request.attempt, CANCEL_REQUESTED)
        else:
            self._call_back(session, request.task_id, request.attempt, NOT_OURS)

    async def result(self, session: PlayerSession, result: player_pb2.TaskResult) -> None:
        """A task ended on its player (ok, failed, timed out, refused, cancelled ...).

        Acknowledged only after the result, or an earlier copy of it, is committed.
        """
        await self._until_stored(session, "result", lambda: self._result(session, result))

    async def _result(self, session: PlayerSession, result: player_pb2.TaskResult) -> None:
        new = ENDINGS.get(result.ending)
        recorded = False
        if new is not None:
            outcome = TaskOutcome.from_wire(result.outcome).bounded(MAX_TAIL_BYTES, MAX_REASON_CHARS)
            if new == TaskState.REFUSED and await self._fail_over_refused(session, result, outcome):
                recorded = True
            else:
                recorded = await self._record_result(session, result, new, outcome)
        if not recorded:
            logger.info("result_ignored", task_id=result.task_id, player=session.name,
                        attempt=result.attempt, reason="stale or duplicate")
        faults.point("result.committed")
        if recorded or not await self._newer_attempt_here(session, result):
            session.in_flight.discard(result.task_id)
        session.send(ack=player_pb2.ResultAck(task_id=result.task_id, attempt=result.attempt))
        self.wake(session.name)

    async def _newer_attempt_here(self, session: PlayerSession, result: player_pb2.TaskResult) -> bool:
        """Whether a stale result's task is in flight on this player at a later attempt (a
        retry), which still holds its slot."""
        if result.task_id not in session.in_flight:
            return False
        task = await self.store.task(result.task_id)
        return (task is not None and task.player == session.name and task.attempt > result.attempt
                and task.state in IN_FLIGHT)

    async def _fail_over_refused(self, session: PlayerSession, result: player_pb2.TaskResult,
                                 outcome: TaskOutcome) -> bool:
        """A one-of task refused by one target goes back to the queue for another."""
        return await self._requeue(
            TaskRef(result.task_id, session.name, result.attempt),
            f"refused by {session.name}: {outcome.reason}; trying another target",
            one_of_only=True, refused_by=session.name,
            reason=outcome.reason)

    async def _record_result(self, session: PlayerSession, result: player_pb2.TaskResult, new: TaskState,
                             outcome: TaskOutcome) -> bool:
        """Stored only if the task is still this player's, at this attempt, and not ended."""
        sent, reported = self.counts.sent(result.task_id), outcome
        outcome = dataclasses.replace(outcome, finished_at=time.time())
        change = await self._apply(self.store.transition(
            result.task_id, new, detail=outcome.reason, expect_attempt=result.attempt,
            expect_player=session.name, outcome=outcome))
        if change.applied:
            self.counts.result(sent, reported)
            logger.info("task_result", task_id=result.task_id, player=session.name, state=new.value,
                        exit_code=outcome.exit_code)
            self.audit.record("result", new.value, job_id=change.job_id, task_id=result.task_id,
                              certname=session.name, serial=session.serial, exit_code=outcome.exit_code,
                              signal=outcome.signal or None, reason=outcome.reason or None)
        return change.applied

    # ---- players coming and going ------------------------------------------------------

    async def player_connected(self, session: PlayerSession, hello: player_pb2.Hello) -> None:
        """Remember its inventory, reconcile its spool against the queue, then take work.

        Each task is read right before its step is carried out, so a task that moved on
        (expired, cancelled) while earlier steps ran is judged as it now stands; so the
        steps can be carried out again when the queue could not be written.
        """
        await self._until_stored(session, "hello", lambda: self._player_connected(session, hello))

    async def _player_connected(self, session: PlayerSession, hello: player_pb2.Hello) -> None:
        record = session.record(inventory_from_wire(hello.scores))
        await self.store.record_player(record)
        self.sessions.remember(record)
        self.revoked_players.pop(session.name, None)  # a new, good certificate
        for entry in hello.spool:
            task = None if entry.state == player_pb2.SPOOL_STATE_FINISHED else await self.store.task(entry.task_id)
            for step in reconcile.plan(session.name, [entry], {entry.task_id: task}, []):
                await self._reconcile_step(session, step, task)
        # By attempt: a spool that holds an earlier attempt of a task knows nothing of the
        # attempt the queue sent since (a retry), which is then judged as never received.
        spooled = {(entry.task_id, entry.attempt) for entry in hello.spool}
        held = {task.task_id: task for task in await self.store.tasks_of(session.name, IN_FLIGHT)
                if (task.task_id, task.attempt) not in spooled}
        for step in reconcile.plan(session.name, [], {}, list(held.values())):
            await self._reconcile_step(session, step, held[step.task_id])
        session.ready = True
        self.wake(session.name)

    async def inventory_updated(self, session: PlayerSession, inventory: common_pb2.Inventory) -> None:
        """The player's scores changed: remembered at once, so ``listplayers`` and the
        checks of the next submission see them, and stored as a Hello's are (retried
        while the disk is full: the player sends a list only when it changes). No task
        moves."""
        if not self.sessions.is_current(session):
            return  # replaced: the newer session's Hello has the newer list
        previous = self.sessions.known.get(session.name)
        record = session.record(inventory_from_wire(inventory.scores))
        self.sessions.remember(record)
        before = {entry.name: entry for entry in previous.inventory} if previous is not None else {}
        after = {entry.name: entry for entry in record.inventory}
        logger.info("inventory_updated", player=session.name, scores=len(after),
                    added=sorted(after.keys() - before.keys()), removed=sorted(before.keys() - after.keys()),
                    changed=sorted(name for name in after.keys() & before.keys() if after[name] != before[name]))
        await self._until_stored(session, "inventory", lambda: self.store.record_player(record))

    async def _reconcile_step(self, session: PlayerSession, step: reconcile.Step,
                              task: TaskRecord | None) -> None:
        act = reconcile.Action
        if step.action == act.ACCEPT_RESULT and step.result is not None:
            await self.result(session, step.result)
        elif step.action == act.AWAIT_RESULT:
            pass  # finished there: its TaskResult follows the Hello as a message of its own
        elif step.action == act.FORGET:
            session.tell_cancel(step.task_id, step.attempt, NOT_OURS)
        elif step.action in (act.KEEP, act.KEEP_AND_CANCEL):
            session.in_flight.add(step.task_id)
            if step.action == act.KEEP_AND_CANCEL:
                session.tell_cancel(step.task_id, step.attempt, CANCEL_REQUESTED)
        elif step.action == act.REQUEUE:
            await self._requeue(TaskRef(step.task_id, session.name, step.attempt),
                                "player never received it; safe to send again", player=session.name)
        elif step.action == act.LOSE and task is not None:
            await self._end(task, TaskState.LOST, "the player has no record of this started task (spool lost)",
                            expect_player=session.name)
            logger.warning("task_lost", task_id=step.task_id, player=session.name)

    async def player_gone(self, name: str) -> None:
        """One-of tasks sent to a player that is gone, and not granted, go back to the queue.

        Safe because a player starts nothing without a grant, and the conductor grants
        only after committing the task as running.
        """
        try:
            if name in self.sessions:
                return  # a newer session of the same player is already there
            for task in await self.store.tasks_of(name, [TaskState.DISPATCHED]):
                await self._requeue(TaskRef(task.task_id, name, task.attempt),
                                    f"{name} went away before starting it; another target may take it",
                                    one_of_only=True, left=name)
        finally:
            self.wake()

    async def players_removed(self, names: frozenset[str]) -> None:
        """Left the players file: sessions closed, unstarted tasks removed, started ones lost."""
        for name in sorted(names):
            session = self.sessions.get(name)
            if session is not None:
                session.close(grpc.StatusCode.PERMISSION_DENIED, f"{name} was removed from the players file")
            await self._end_started(name, session, "player removed from the players file while the task ran")
            for task in await self.store.tasks_of(name, list(UNSTARTED)):
                await self._end(task, TaskState.REMOVED, "player removed from the players file"
                                " before the task started", expect_state=task.state)
        # One-of tasks not bound to a player: removed once none of their targets is left.
        roster = self.sessions.roster
        one_of = [task for task in self.index.queued.values() if task.scope == "one"]  # retries waiting too
        for queued in one_of if names else ():
            if not any(t in roster for t in queued.targets):
                record = await self.store.task(queued.task_id)
                if record is not None:
                    await self._end(record, TaskState.REMOVED, "every target was removed from the players file",
                                    expect_state=TaskState.QUEUED)
        self.wake()

    async def _end_started(self, name: str, session: PlayerSession | None, reason: str) -> None:
        """A player that can never report its started tasks: they end lost, never re-run."""
        if session is not None:
            # Let its handler finish: a result it already received is then committed.
            await asyncio.wait({asyncio.ensure_future(session.finished.wait())}, timeout=REMOVAL_WAIT_SECONDS)
        for task in await self.store.tasks_of(name, list(STARTED)):
            change = await self._end(task, TaskState.LOST, reason, expect_state=task.state)
            if change.applied:
                logger.warning("task_lost", task_id=task.task_id, player=name, reason=reason)

    def revoked(self, refuses: Callable[[PeerIdentity], str | None],
                revocation: Callable[[PeerIdentity], str | None]) -> None:
        """After a CRL (re)load: live streams are never re-checked by TLS, so close them
        here; and players that are away are checked by the certificate they last used.
        ``refuses`` says why a certificate is refused now (a broken CRL refuses all);
        ``revocation`` only whether the CRL revokes it: only then is its work ended."""
        for session, reason in self.sessions.close_failing(refuses):
            logger.warning("session_revoked", player=session.name, reason=reason)
            self.audit.record("session_closed", "refused", certname=session.name,
                              serial=session.serial, reason=reason)
            why = revocation(session.identity)
            if why is not None:
                self.player_revoked(session.identity, why, session)
        for name, record in list(self.sessions.known.items()):
            if record.cert_issuer and name not in self.sessions:
                identity = PeerIdentity(name, record.cert_serial, record.cert_not_after, record.cert_issuer)
                why = revocation(identity)
                if why is not None:
                    self.player_revoked(identity, why)

    def player_revoked(self, identity: PeerIdentity, reason: str, session: PlayerSession | None = None) -> None:
        """The CRL revokes this certificate of a player: the started tasks it held can
        never be reported with it, so they end ``lost``; its unstarted work waits for a new
        certificate or the job's deadline, like any offline player's. Nothing happens to
        a live session of the same player with another certificate (a host that got a new
        one after the old was revoked): the old certificate is not the player."""
        name, this = identity.certname, (identity.issuer, identity.serial)
        current = self.sessions.get(name)
        if current is not None and current is not session and (current.identity.issuer, current.identity.serial) != this:
            return
        known = self.sessions.known.get(name)
        if current is None and known is not None and known.cert_issuer and (known.cert_issuer, known.cert_serial) != this:
            return  # an older certificate than the one the player last connected with
        if self.revoked_players.get(name) == reason:
            return
        self.revoked_players[name] = reason
        task = asyncio.ensure_future(self._end_revoked(name, session, reason))
        self._background.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                # Tried again by the next CRL check or connection attempt.
                self.revoked_players.pop(name, None)
                logger.error("revocation_cleanup_failed", player=name, error=repr(task.exception()))
        task.add_done_callback(done)

    async def _end_revoked(self, name: str, session: PlayerSession | None, reason: str) -> None:
        if session is not None:
            await asyncio.wait({asyncio.ensure_future(session.finished.wait())}, timeout=REMOVAL_WAIT_SECONDS)
        if self.sessions.get(name) is not None:
            return  # back meanwhile with a good certificate: its Hello reconciled the tasks
        await self._end_started(name, None, f"player certificate revoked while the task ran: {reason}")

    # ---- time and operators ------------------------------------------------------------

    async def expire(self, now: float) -> None:
        """Tasks not started by their job's deadline end expired; players drop theirs."""
        due = self.index.due(now)
        if not due:
            return
        try:
            expiry = await self.store.expire_due(now, due)
        except BaseException:
            self.index.reopen(due)  # nothing was committed: due again on the next pass
            raise
        if expiry.expired:
            self.wake()  # slots may have been planned for tasks that are now gone
        for task_id in expiry.expired:
            job_id = task_id.rpartition(".")[0]
            self.index.discard(task_id)
            self.counts.task_moved(job_id, task_id, TaskState.EXPIRED)
            self._left_flight(task_id)
            self.rollouts.ended(job_id, task_id)
        for change in expiry.changes:
            self._committed(change)
        for ref in expiry.dropped:
            self._call_back(self.sessions.get(ref.player), ref.task_id, ref.attempt, "job deadline passed")

    async def cancel(self, job: JobRecord, requester: str) -> None:
        """Unstarted tasks end cancelled at once; running ones become cancelling and their
        player is told to kill them: they end when it confirms."""
        self.audit.record("cancel", "accepted", requester=requester, job_id=job.job_id)
        reason = f"cancelled by {requester}"
        open_tasks = [task.task_id for task in job.tasks if not task.state.terminal]
        for start in range(0, len(open_tasks), CANCEL_BATCH):
            await asyncio.gather(*(self._cancel_task(task_id, reason)
                                   for task_id in open_tasks[start:start + CANCEL_BATCH]))
        logger.info("job_cancel_requested", job_id=job.job_id)
        self.wake()

    async def _cancel_task(self, task_id: str, reason: str) -> None:
        for _ in range(5):  # re-read when it moved on meanwhile (dispatched, granted)
            task = await self.store.task(task_id)
            if task is None or task.state.terminal:
                return
            session = self.sessions.get(task.player)
            if task.state == TaskState.CANCELLING:  # asked again: repeat the kill order
                if session is not None:
                    session.tell_cancel(task_id, task.attempt, reason)
                return
            if task.state in UNSTARTED:
                change = await self._end(task, TaskState.CANCELLED, reason, expect_state=task.state)
                if change.applied and task.state == TaskState.DISPATCHED:
                    self._call_back(session, task_id, task.attempt, reason)
            else:  # started: it stays in flight until the player confirms the kill
                change = await self._apply(self.store.transition(
                    task_id, TaskState.CANCELLING, detail=reason, expect_attempt=task.attempt,
                    expect_state=task.state))
                if change.applied and session is not None:
                    session.tell_cancel(task_id, task.attempt, reason)
            if change.applied:
                return

    async def forget_finished(self, keep_seconds: float) -> int:
        """Retention: jobs finished more than ``keep_seconds`` ago are purged with their history."""
        purged = await self.store.purge_finished(time.time() - keep_seconds)
        if purged:
            logger.info("jobs_purged", count=purged, older_than_seconds=keep_seconds)
        return purged

    async def release_retries(self, now: float) -> None:
        """Retries whose delay has passed go to dispatch."""
        due = self.index.release_due(now)
        if due:
            self.wake(*(task.player for task in due if task.player is not None))
            if any(task.player is None for task in due):
                self.wake()

    async def retry(self, job: JobRecord, wanted: frozenset[TaskState], requester: str) -> Retried:
        """retryjob: the job's tasks that ended in ``wanted`` are queued again, as new
        attempts, in one commit (one shielded step, see :meth:`_apply`). Raises
        ValidationError when there is nothing to retry or it cannot be."""
        retried = await asyncio.shield(self._retry(job, wanted))
        if retried.refused:
            self.audit.record("retry", "rejected", requester=requester, job_id=job.job_id, reason=retried.refused)
            raise ValidationError(retried.refused)
        self.audit.record("retry", "accepted", requester=requester, job_id=job.job_id,
                          tasks=len(retried.queued), states=sorted(state.value for state in wanted))
        logger.info("job_retried", job_id=job.job_id, tasks=len(retried.queued), requester=requester)
        return retried

    async def _retry(self, job: JobRecord, wanted: frozenset[TaskState]) -> Retried:
        retried = await self.store.retry(job.job_id, wanted)
        if retried.refused:
            return retried
        job_id = job.job_id  # no await from here on: the index follows the commit at once
        if job.finished_at is not None:  # open again: counted, timed and gated as a new one
            self.counts.job_restored(job_id, retried.counts)
        earliest = self.index.next_deadline()
        self.index.job_opened(job_id, retried.deadline_at)
        if earliest is None or retried.deadline_at < earliest:
            self.deadlines_changed.set()
        if self.rollouts.gated(job_id):
            self.rollouts.moved(job_id, retried.phase)
        else:
            self.rollouts.track(job_id, retried.rollout, retried.phase, retried.in_flight)
        self.limits.track(job_id, retried.score, retried.rules)
        for task in retried.queued:
            self.counts.task_moved(job_id, task.task_id, TaskState.QUEUED)
            self._enqueue(task)
        self._release(job_id)
        self.watchers.task_changed(job_id)
        self.wake()
        return retried

    async def delete(self, job: JobRecord, requester: str) -> bool | None:
        """deletejob: a finished job and its history are forgotten. False: not finished."""
        deleted = await self.store.delete_job(job.job_id)
        self.audit.record("delete", "accepted" if deleted else "rejected", requester=requester, job_id=job.job_id,
                          owner=job.requester, reason=None if deleted else "not finished")
        if deleted:
            logger.info("job_deleted", job_id=job.job_id, requester=requester)
        return deleted

    async def drain(self, names: list[str], drained: bool, requester: str, reason: str = "") -> list[Drain]:
        """Drain (or undrain) hosts and @groups, durably; a drained host gets no new task.
        Returns every drain now."""
        drains = await self.store.set_drains(names, drained, requester, reason)
        self.drains = {drain.name: drain for drain in drains}
        self.refresh_drained()
        self.audit.record("drain" if drained else "undrain", "accepted", requester=requester, names=names,
                          reason=reason or None)
        logger.info("hosts_drained" if drained else "hosts_undrained", names=names, requester=requester,
                    drained=len(self.drained))
        self.wake()
        return drains
