"""Connected players, dispatch of queued tasks, deadlines and job-finished notifications.

Dispatch is event-driven: a submit, a connect, a freed slot or a reload wakes one loop,
which claims tasks in the store (committed) before the RunTask message is sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from conductor.audit import AuditLog
from conductor.states import TaskState
from conductor.store import Change, Claimed, Store
from orchestra import faults, log
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2

logger = log.get("conductor")


@dataclass(eq=False)
class PlayerSession:
    """One live player stream. ``ready`` only after its Hello has been reconciled."""

    name: str
    identity: PeerIdentity
    max_concurrent: int
    connected_since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    ready: bool = False
    in_flight: set[str] = field(default_factory=set)
    outbox: asyncio.Queue[player_pb2.ConductorMessage] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: grpc.StatusCode | None = None
    close_details: str = ""
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def free_slots(self) -> int:
        return self.max_concurrent - len(self.in_flight)

    def send(self, **body: object) -> None:
        self.outbox.put_nowait(player_pb2.ConductorMessage(**body))  # type: ignore[arg-type]

    def close(self, code: grpc.StatusCode, details: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_details = code, details
            self.closed.set()


class Hub:
    def __init__(self, store: Store, roster: frozenset[str], audit: AuditLog) -> None:
        self.store = store
        self.audit = audit
        self.roster = roster
        self.sessions: dict[str, PlayerSession] = {}
        self._wakeup = asyncio.Event()
        self._deadline_wakeup = asyncio.Event()
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)

    # ---- sessions --------------------------------------------------------------------

    def attach(self, session: PlayerSession) -> None:
        previous = self.sessions.get(session.name)
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer session of the same player")
        self.sessions[session.name] = session

    def close_sessions_failing(self, refuses: Callable[[int], str | None]) -> None:
        """After a CRL change: live streams are never re-checked by TLS, so close them here."""
        for session in list(self.sessions.values()):
            reason = refuses(session.identity.serial)
            if reason is not None:
                logger.warning("session_revoked", player=session.name, reason=reason)
                self.audit.record("session_closed", "refused", certname=session.name,
                                  serial=f"{session.identity.serial:x}", reason=reason)
                session.close(grpc.StatusCode.UNAUTHENTICATED, reason)

    def detach(self, session: PlayerSession) -> None:
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]

    # ---- wake-ups and watchers ---------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def wake_deadlines(self) -> None:
        self._deadline_wakeup.set()

    def watch(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers[job_id].add(event)
        return event

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[job_id]

    def changed(self, change: Change) -> None:
        """Called after every committed transition: wake waiters of finished jobs."""
        if change.job_finished:
            logger.info("job_finished", job_id=change.job_id)
            for event in self._watchers.get(change.job_id, ()):
                event.set()

    # ---- dispatch --------------------------------------------------------------------

    async def run_dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._dispatch_once()
            except Exception:
                logger.exception("dispatch_failed")
                await asyncio.sleep(1)
                self._wakeup.set()

    def _pick(self, candidates: list[str]) -> PlayerSession | None:
        ready = [s for name in candidates if name in self.roster
                 and (s := self.sessions.get(name)) is not None and s.ready and s.free_slots > 0]
        if not ready:
            return None
        # Least busy first (by share of slots in use, then count); ties broken at random
        # so equal players share the load.
        random.shuffle(ready)
        return min(ready, key=lambda s: (len(s.in_flight) / s.max_concurrent, len(s.in_flight)))

    async def _dispatch_once(self) -> None:
        now = time.time()
        takers = {name for name, s in self.sessions.items()
                  if s.ready and s.free_slots > 0 and name in self.roster}
        if not takers:
            return
        for task_id, scope, player, targets, tried, deadline_at in await self.store.queued(takers):
            if deadline_at <= now:
                continue  # the deadline loop expires it
            candidates = [player] if scope == "all" and player else [t for t in targets if t not in tried]
            session = self._pick(candidates)
            if session is None:
                continue
            claimed = await self.store.claim(task_id, session.name)
            if claimed is None:
                continue
            faults.point("dispatch.claimed")
            if session.closed.is_set() or self.sessions.get(session.name) is not session:
                # It went away while we committed: the next Hello reconciles this task.
                continue
            self._send_run(session, claimed)

    def _send_run(self, session: PlayerSession, claimed: Claimed) -> None:
        session.in_flight.add(claimed.task_id)
        session.send(run=player_pb2.RunTask(
            task_id=claimed.task_id, attempt=claimed.attempt, job_id=claimed.job_id,
            score=claimed.score, params=claimed.params, requester=claimed.requester,
            deadline_at=claimed.deadline_at))
        logger.info("task_dispatched", task_id=claimed.task_id, player=session.name,
                    attempt=claimed.attempt)
        self.audit.record("dispatch", "sent", job_id=claimed.job_id, task_id=claimed.task_id,
                          score=claimed.score, certname=session.name,
                          serial=f"{session.identity.serial:x}", attempt=claimed.attempt)

    # ---- one-of failover ---------------------------------------------------------------

    async def fail_over_from(self, name: str) -> None:
        """One-of tasks sent to a player that is gone, and not granted, go back to the queue.

        Safe because a player starts nothing without a grant, and the conductor grants
        only after committing the task as running.
        """
        if name in self.sessions:
            return  # a newer session of the same player is already there
        for task in await self.store.tasks_of(name, [TaskState.DISPATCHED]):
            change = await self.store.requeue(
                task.task_id, attempt=task.attempt, player=name, one_of_only=True,
                detail=f"{name} went away before starting it; another target may take it")
            if change.applied:
                logger.info("task_failed_over", task_id=task.task_id, left=name)
        self.wake()

    async def run_startup_grace(self, grace: float) -> None:
        """After a restart, players get `grace` seconds to come back before failover."""
        await asyncio.sleep(grace)
        for name in await self.store.players_with(TaskState.DISPATCHED):
            if name not in self.sessions:
                await self.fail_over_from(name)

    # ---- deadlines -------------------------------------------------------------------

    async def run_deadlines(self) -> None:
        while True:
            try:
                changes, dropped = await self.store.expire_due(time.time())
                for change in changes:
                    self.changed(change)
                for task_id, player, attempt in dropped:
                    session = self.sessions.get(player)
                    if session is not None:
                        session.in_flight.discard(task_id)
                        session.send(cancel=player_pb2.CancelTask(
                            task_id=task_id, attempt=attempt, reason="job deadline passed"))
                next_at = await self.store.next_deadline()
            except Exception:
                logger.exception("deadline_check_failed")
                next_at = None
            delay = 60.0 if next_at is None else min(60.0, max(0.05, next_at - time.time()))
            self._deadline_wakeup.clear()
            try:
                await asyncio.wait_for(self._deadline_wakeup.wait(), delay)
            except TimeoutError:
                pass

    async def run_retention(self, keep_seconds: float) -> None:
        """Finished jobs are kept keep_seconds, then forgotten (checked every few minutes)."""
        while True:
            try:
                purged = await self.store.purge_finished(time.time() - keep_seconds)
                if purged:
                    logger.info("jobs_purged", count=purged, older_than_seconds=keep_seconds)
            except Exception:
                logger.exception("retention_failed")
            await asyncio.sleep(min(300.0, max(1.0, keep_seconds / 10)))

    # ---- players file reload ---------------------------------------------------------

    async def set_roster(self, roster: frozenset[str]) -> None:
        removed = self.roster - roster
        added = roster - self.roster
        self.roster = roster
        logger.info("players_reloaded", players=len(roster), added=sorted(added), removed=sorted(removed))
        for name in removed:
            session = self.sessions.get(name)
            if session is not None:
                session.close(grpc.StatusCode.PERMISSION_DENIED, f"{name} was removed from the players file")
                # Let its handler finish: a result it already received is then committed.
                await asyncio.wait({asyncio.ensure_future(session.finished.wait())}, timeout=10)
            await self._end_tasks_of_removed(name)
        self.wake()

    async def _end_tasks_of_removed(self, name: str) -> None:
        for task in await self.store.tasks_of(name, [TaskState.QUEUED, TaskState.DISPATCHED,
                                                     TaskState.RUNNING]):
            if task.state == TaskState.RUNNING:
                new, reason = TaskState.LOST, "player removed from the players file while the task ran"
            else:
                new, reason = TaskState.REMOVED, "player removed from the players file before the task started"
            self.changed(await self.store.transition(task.task_id, new, expect_attempt=task.attempt,
                                                     expect_state=task.state, detail=reason, reason=reason,
                                                     finished_at=time.time()))
        # One-of tasks not bound to a player: removed once none of their targets is left.
        for task_id, scope, player, targets, _tried, _deadline in await self.store.queued():
            if scope == "one" and player is None and not any(t in self.roster for t in targets):
                reason = "every target was removed from the players file"
                self.changed(await self.store.transition(task_id, TaskState.REMOVED, detail=reason,
                                                         reason=reason, finished_at=time.time()))
