"""The PlayerLink service: authenticate, reconcile the Hello, then relay task messages.

Reconcile rules (CONTRACT.md §8): conductor ``dispatched`` + player never saw it -> safe
to send again; player ``started`` -> keep waiting; player ``finished`` -> accept the
result once (by task id and attempt); conductor ``running`` + no record on the player
-> ``lost``, never re-run.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc

from conductor.auth import current_identity, warn_if_expiring
from conductor.hub import Hub, PlayerSession
from conductor.states import TaskState
from orchestra import faults, log
from orchestra.inventory import PROTOCOL_VERSION
from orchestra.params import OUTPUT_TRUNCATED_MARKER
from orchestra.wire import player_pb2, player_pb2_grpc

logger = log.get("conductor")

OUTCOME_STATES = {
    player_pb2.OUTCOME_OK: TaskState.OK,
    player_pb2.OUTCOME_FAILED: TaskState.FAILED,
    player_pb2.OUTCOME_TIMED_OUT: TaskState.TIMED_OUT,
    player_pb2.OUTCOME_REFUSED: TaskState.REFUSED,
    player_pb2.OUTCOME_CANCELLED: TaskState.CANCELLED,
    player_pb2.OUTCOME_LOST: TaskState.LOST,
    player_pb2.OUTCOME_EXPIRED: TaskState.EXPIRED,
}
MAX_TAIL = 1024 * 1024  # per stream, stored; players send far less by default
MAX_REASON = 2000


class PlayerLink(player_pb2_grpc.PlayerLinkServicer):
    def __init__(self, hub: Hub, conductor_name: str, heartbeat: float, liveness: float) -> None:
        self.hub = hub
        self.store = hub.store
        self.conductor_name = conductor_name
        self.heartbeat = heartbeat
        self.liveness = liveness

    async def Session(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        identity = current_identity.get()  # set by the AuthInterceptor, which admitted it
        if identity is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no verified client certificate")
        assert identity is not None
        name = identity.certname
        try:
            first = await asyncio.wait_for(context.read(), self.liveness)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello received")
        if first is grpc.aio.EOF or first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            logger.warning("player_refused", player=name, reason="protocol version",
                           version=hello.protocol_version)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"protocol version {hello.protocol_version} is not supported;"
                                f" this conductor speaks {PROTOCOL_VERSION}")
        session = PlayerSession(name=name, identity=identity,
                                max_concurrent=max(1, hello.max_concurrent))
        self.hub.attach(session)
        logger.info("player_connected", player=name, scores=len(hello.scores),
                    spool=len(hello.spool), serial=f"{identity.serial:x}")
        warn_if_expiring("player", name, identity.not_after)
        writer = asyncio.ensure_future(self._write(session, context))
        try:
            await context.write(player_pb2.ConductorMessage(welcome=player_pb2.Welcome(
                protocol_version=PROTOCOL_VERSION, conductor=self.conductor_name,
                heartbeat_seconds=int(self.heartbeat))))
            await self.store.record_player(name, _scores_blob(hello), session.max_concurrent,
                                           identity.not_after)
            await self._reconcile(session, hello)
            session.ready = True
            self.hub.wake()
            await self._read(session, context)
        finally:
            session.ready = False
            writer.cancel()
            self.hub.detach(session)
            try:
                await self.hub.fail_over_from(session.name)
            finally:
                session.finished.set()
                self.hub.wake()
            logger.info("player_disconnected", player=name, reason=session.close_details or "stream ended")
        if session.close_code is not None:
            await context.abort(session.close_code, session.close_details)

    async def _read(self, session: PlayerSession, context: grpc.aio.ServicerContext) -> None:
        closed = asyncio.ensure_future(session.closed.wait())
        try:
            while True:
                reader = asyncio.ensure_future(context.read())
                done, _ = await asyncio.wait({reader, closed}, timeout=self.liveness,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader not in done:
                    reader.cancel()
                    if closed not in done:
                        logger.warning("player_silent", player=session.name, seconds=self.liveness)
                        session.close(grpc.StatusCode.UNAVAILABLE, "no message within the liveness timeout")
                    return
                message = reader.result()
                if message is grpc.aio.EOF:
                    return
                session.last_seen = time.time()
                kind = message.WhichOneof("body")
                if kind == "start_request":
                    await self._on_start_request(session, message.start_request)
                elif kind == "result":
                    await self._on_result(session, message.result)
                elif kind == "hello":
                    session.close(grpc.StatusCode.INVALID_ARGUMENT, "hello sent twice")
                    return
        finally:
            closed.cancel()

    async def _write(self, session: PlayerSession, context: grpc.aio.ServicerContext) -> None:
        while True:
            try:
                message = await asyncio.wait_for(session.outbox.get(), self.heartbeat)
            except TimeoutError:
                message = player_pb2.ConductorMessage(heartbeat=player_pb2.Heartbeat(sent_at=time.time()))
            await context.write(message)

    async def _reconcile(self, session: PlayerSession, hello: player_pb2.Hello) -> None:
        known: set[str] = set()
        for entry in hello.spool:
            known.add(entry.task_id)
            if entry.state == player_pb2.SPOOL_STATE_FINISHED:
                await self._on_result(session, entry.result)
                continue
            task = await self.store.task(entry.task_id)
            ours = (task is not None and task.player == session.name and task.attempt == entry.attempt
                    and task.state in (TaskState.DISPATCHED, TaskState.RUNNING))
            if not ours:
                session.send(cancel=player_pb2.CancelTask(
                    task_id=entry.task_id, attempt=entry.attempt,
                    reason="the conductor no longer assigns this task to this player"))
                continue
            assert task is not None
            session.in_flight.add(task.task_id)
            if task.cancel_requested:
                session.send(cancel=player_pb2.CancelTask(task_id=task.task_id, attempt=task.attempt,
                                                          reason="cancelled by request"))
        for task in await self.store.tasks_of(session.name, [TaskState.DISPATCHED, TaskState.RUNNING]):
            if task.task_id in known:
                continue
            if task.state == TaskState.DISPATCHED:
                await self.store.requeue(task.task_id, attempt=task.attempt, player=session.name,
                                         detail="player never received it; safe to send again")
                logger.info("task_requeued", task_id=task.task_id, player=session.name)
            else:
                reason = "the player has no record of this started task (spool lost)"
                self.hub.changed(await self.store.transition(
                    task.task_id, TaskState.LOST, expect_attempt=task.attempt, expect_player=session.name,
                    detail=reason, reason=reason, finished_at=time.time()))
                logger.warning("task_lost", task_id=task.task_id, player=session.name)

    async def _on_start_request(self, session: PlayerSession, request: player_pb2.StartRequest) -> None:
        """Grant only after committing running: an ungranted task never started anywhere."""
        task = await self.store.task(request.task_id)
        ours = task is not None and task.player == session.name and task.attempt == request.attempt
        if ours and task is not None and task.state == TaskState.DISPATCHED and not task.cancel_requested:
            change = await self.store.transition(
                task.task_id, TaskState.RUNNING, expect_attempt=task.attempt,
                expect_player=session.name, detail="start granted", started_at=time.time())
            self.hub.changed(change)
            ours = change.applied
            faults.point("grant.committed")
        elif not (ours and task is not None and task.state == TaskState.RUNNING):
            ours = False
        if ours:
            session.send(grant=player_pb2.StartGrant(task_id=request.task_id, attempt=request.attempt))
        else:
            session.in_flight.discard(request.task_id)
            session.send(cancel=player_pb2.CancelTask(
                task_id=request.task_id, attempt=request.attempt,
                reason="the conductor no longer assigns this task to this player"))
            self.hub.wake()

    async def _on_result(self, session: PlayerSession, result: player_pb2.TaskResult) -> None:
        new = OUTCOME_STATES.get(result.outcome)
        task = await self.store.task(result.task_id)
        if new is not None and task is not None and task.player == session.name \
                and task.attempt == result.attempt and not task.state.terminal:
            failed_over = new == TaskState.REFUSED and (await self.store.requeue(
                task.task_id, attempt=task.attempt, player=session.name, one_of_only=True,
                refused_by=session.name,
                detail=f"refused by {session.name}: {result.reason[:MAX_REASON]}; trying another target",
            )).applied
            if failed_over:
                logger.info("task_failed_over", task_id=task.task_id, refused_by=session.name,
                            reason=result.reason[:MAX_REASON])
            else:
                change = await self.store.transition(
                    task.task_id, new, expect_attempt=result.attempt, expect_player=session.name,
                    detail=result.reason[:MAX_REASON],
                    exit_code=result.exit_code if result.has_exit_code else None,
                    signal=result.signal, response=_json(dict(result.response)),
                    stdout=_bounded(result.stdout_tail), stderr=_bounded(result.stderr_tail),
                    stdout_truncated=int(result.stdout_truncated or len(result.stdout_tail) > MAX_TAIL),
                    stderr_truncated=int(result.stderr_truncated or len(result.stderr_tail) > MAX_TAIL),
                    reason=result.reason[:MAX_REASON],
                    started_at=result.started_at or task.started_at, finished_at=time.time())
                self.hub.changed(change)
                if change.applied:
                    logger.info("task_result", task_id=task.task_id, player=session.name,
                                state=new.value, exit_code=result.exit_code if result.has_exit_code else None)
                    self.hub.audit.record(
                        "result", new.value, job_id=task.job_id, task_id=task.task_id,
                        certname=session.name, serial=f"{session.identity.serial:x}",
                        exit_code=result.exit_code if result.has_exit_code else None,
                        signal=result.signal or None, reason=result.reason or None)
        else:
            logger.info("result_ignored", task_id=result.task_id, player=session.name,
                        attempt=result.attempt, reason="stale or duplicate")
        faults.point("result.committed")
        session.in_flight.discard(result.task_id)
        # The ack goes out only after the result (or its earlier copy) is committed.
        session.send(ack=player_pb2.ResultAck(task_id=result.task_id, attempt=result.attempt))
        self.hub.wake()

def _bounded(tail: bytes) -> bytes:
    if len(tail) <= MAX_TAIL:
        return bytes(tail)
    return OUTPUT_TRUNCATED_MARKER + bytes(tail[-(MAX_TAIL - len(OUTPUT_TRUNCATED_MARKER)):])


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _scores_blob(hello: player_pb2.Hello) -> bytes:
    """The inventory as stored: a Hello holding only the scores (protobuf bytes)."""
    return player_pb2.Hello(scores=hello.scores).SerializeToString()
