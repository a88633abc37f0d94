"""The player: one outgoing mTLS session to the conductor, reconciled against the spool.

Order of every step is "commit to the spool, then tell the conductor", so whatever the
conductor has heard is durable here, and whatever is durable here is re-announced after
any disconnect or restart: the next Hello lists every unacknowledged task, and the result
of each finished one follows it in a message of its own (so no spool, however full, makes
a Hello too large to be accepted).

The inventory is kept current on a live session too: the scores directory is checked
every SCORES_CHECK_SECONDS (and on SIGHUP; see :mod:`player.watch`), and a changed list
is sent as an Inventory.

With several conductors listed (one leads, the others stand by), the player dials them in
turn until one welcomes it, following a standby's word on who leads, and watches the
others' health meanwhile, so it moves as soon as another one starts to lead
(:class:`LeaderWatch`). Moving is ending a session and starting one: the spool makes that
as safe as any lost connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestra import faults, log
from orchestra.config import PlayerConfig
from orchestra.errors import ValidationError
from orchestra.inventory import PROTOCOL_VERSION
from orchestra.leader_hint import PLAYER_LINK, is_refusal, leader_hint, same_address
from orchestra.outcome import TaskOutcome
from orchestra.params import MAX_REASON_CHARS, MAX_TAIL_BYTES, TASK_ID_RE, apply_decls, normalize_params
from orchestra.stream import Heard, send_with_heartbeats
from orchestra.tls import MAX_MESSAGE_BYTES, Material, channel_credentials, channel_options
from orchestra.wire import common_pb2, player_pb2, player_pb2_grpc
from player import follow, runner, scores
from player.occupancy import ScoreOccupancy
from player.watch import SCORES_CHECK_SECONDS, scan_inventory, scores_signature
from player.spool import Entry, Spool, Step, Verdict

SOFTWARE_VERSION = "0.1.0"
logger = log.get("player")

# A result is sent in a message of its own; one whose outcome would not fit well inside
# gRPC's message limit (results spooled under larger output limits) is cut before it is
# sent: its output tails to MAX_TAIL_BYTES each (the most the conductor keeps), then its
# response if need be. Without that a single oversized result
# would end every session the moment it is sent, and the player would never get through.
RESULT_MAX_BYTES = MAX_MESSAGE_BYTES // 2
# gRPC's own words when the conductor's certificate does not carry the name dialled.
HOSTNAME_MISMATCH = "Hostname Verification Check failed"


# How long a wish to watch a task that is not running here is kept when wishes pile up.
WISH_SECONDS = 30.0
# Seconds a dial may take to get its Welcome before another conductor seen leading is
# dialled instead: a frozen conductor accepts the TCP connection and never finishes TLS,
# which gRPC gives up on only after 20 s.
DIAL_PATIENCE = 2.0
# Seconds a dial may go without its Welcome, when several conductors are listed, before
# it is given up for the next address even though no watch says another one leads (the
# watches may be failing too). gRPC alone gives up on a stalled handshake after 20 s.
DIAL_LIMIT = 8.0
# Seconds a given-up dial has to wind down before the next one starts without it.
DIAL_UNWIND = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING


def backoff_delay(initial: float, ceiling: float, exponent: int) -> float:
    """Full-jitter exponential backoff: a random delay up to ``initial * 2**exponent``
    (at most ``ceiling``), never under a quarter of ``initial``."""
    top = min(ceiling, initial * 2 ** min(exponent, 20))
    return random.uniform(initial / 4, max(top, initial / 4))


def _position(targets: tuple[tuple[str, str], ...], address: str) -> int:
    return next(number for number, (listed, _) in enumerate(targets) if same_address(listed, address))


def _next_index(targets: tuple[tuple[str, str], ...], index: int, hint: str | None) -> int:
    """The address to dial after ``targets[index]``: the leader a refusal named, when it
    is one of ours (never an address taken from the network), else the next one."""
    if hint is not None:
        for number, (listed, _) in enumerate(targets):
            if same_address(listed, hint) and number != index:
                return number
    return (index + 1) % len(targets)


class LeaderWatch:
    """gRPC health watches (service ``orchestra.v1.PlayerLink``) on every listed conductor
    but the one dialled (on all of them between dials), so that a player learns at once
    when another one starts to lead (a frozen leader's connection is otherwise noticed by
    keepalive only, up to 50 s).

    Each watch is a connection of its own with the player's certificate, so a player
    listing N conductors holds N - 1 of them besides its session. One that fails is
    dialled again with the player's jittered backoff, quietly: a standby that is down is
    the leader's business, not this player's."""

    def __init__(self, targets: tuple[tuple[str, str], ...],
                 credentials: Callable[[], grpc.ChannelCredentials], backoff_initial: float,
                 backoff_max: float) -> None:
        self.targets = targets
        self.credentials = credentials
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.serving: set[str] = set()  # last said SERVING on a live watch
        self.promoted: set[str] = set()  # went from not serving to SERVING on one watch
        self.news = asyncio.Event()  # set at every report

    def watch_all_but(self, address: str | None) -> None:
        """Watch every listed conductor except ``address`` (the one being dialled; None
        between dials, when all are watched)."""
        for listed, name in self.targets:
            if listed == address:
                task = self.tasks.pop(listed, None)
                if task is not None:
                    task.cancel()
                self._forget(listed)
            elif listed not in self.tasks:
                self.tasks[listed] = asyncio.ensure_future(self._watch(listed, name))

    def leader_other_than(self, address: str, stuck: bool) -> str | None:
        """A conductor to leave ``address`` for: one seen to start leading (NOT_SERVING, then
        SERVING) while it was watched; when the dial is ``stuck``, any that says SERVING.
        (Only a change counts on a session that got going: two addresses of one conductor
        must not bounce a player between them.)"""
        for listed, _ in self.targets:
            if listed != address and listed in self.promoted:
                return listed
        if stuck:
            for listed, _ in self.targets:
                if listed != address and listed in self.serving:
                    return listed
        return None

    def leading(self, planned: str) -> str | None:
        """Between dials: the conductor to dial next by what the watches say, if any. One
        seen to start leading comes first (``planned`` if it is one), then one that says
        it leads (again ``planned`` first): while a leader is frozen, its watch may still
        say SERVING."""
        for heard in (self.promoted, self.serving):
            if planned in heard:
                return planned
            for listed, _ in self.targets:
                if listed in heard:
                    return listed
        return None

    def _forget(self, address: str) -> None:
        self.serving.discard(address)
        self.promoted.discard(address)

    async def _watch(self, address: str, name: str) -> None:
        failures = 0
        while True:
            leading: bool | None = None  # what this stream said last
            try:
                async with grpc.aio.secure_channel(address, self.credentials(),
                                                   options=channel_options(name)) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=PLAYER_LINK)):
                        failures = 0
                        now_leading = reply.status == SERVING
                        if now_leading:
                            self.serving.add(address)
                            if leading is False:
                                self.promoted.add(address)
                        else:
                            self._forget(address)
                        leading = now_leading
                        logger.debug("leader_watch_report", conductor=address,
                                     status=health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                        self.news.set()
                logger.debug("leader_watch_ended", conductor=address)
            except grpc.aio.AioRpcError as err:
                logger.debug("leader_watch_failed", conductor=address, code=err.code().name,
                             details=(err.details() or "").partition("\n")[0])
            except (ConnectionError, TimeoutError) as err:
                logger.debug("leader_watch_failed", conductor=address, error=str(err) or type(err).__name__)
            except Exception:
                logger.exception("leader_watch_failed", conductor=address)  # and it is tried again
            if leading:  # no longer known to lead; one seen to take over still has (its
                self.serving.discard(address)  # servers change hands right after saying so)
                self.news.set()
            failures += 1
            await asyncio.sleep(backoff_delay(self.backoff_initial, self.backoff_max, failures))

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()


@dataclasses.dataclass(frozen=True)
class Wish:
    """The conductor asked to watch a task's output: which attempt, from where (None: the
    last part printed so far), and when (time.monotonic())."""

    attempt: int
    starts: tuple[int, int] | None
    at: float


def _message(**body: object) -> player_pb2.PlayerMessage:
    return player_pb2.PlayerMessage(**body)  # type: ignore[arg-type]


def _heartbeat() -> player_pb2.PlayerMessage:
    return _message(heartbeat=player_pb2.Heartbeat(sent_at=time.time()))


async def _raise_status(call: grpc.aio.StreamStreamCall) -> None:
    """Raise the status a finished call ended with, unless it is OK. (Unlike a unary
    call, a stream-stream call cannot be awaited for it.)"""
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(code, await call.initial_metadata(), await call.trailing_metadata(),
                                   details=await call.details())


def fit_result(result: player_pb2.TaskResult) -> player_pb2.TaskResult:
    """The result, cut if need be so its message stays within RESULT_MAX_BYTES."""
    if result.ByteSize() <= RESULT_MAX_BYTES:
        return result
    outcome = TaskOutcome.from_wire(result.outcome).bounded(MAX_TAIL_BYTES, MAX_REASON_CHARS)
    cut = player_pb2.TaskResult(task_id=result.task_id, attempt=result.attempt, ending=result.ending,
                                outcome=outcome.to_wire())
    if cut.ByteSize() > RESULT_MAX_BYTES:
        outcome = dataclasses.replace(outcome, response={}, response_truncated=True)
        cut.outcome.CopyFrom(outcome.to_wire())
    logger.warning("result_cut_to_fit", task_id=result.task_id, size=result.ByteSize(),
                   sent=cut.ByteSize())
    return cut


class Player:
    def __init__(self, config: PlayerConfig, material: Material) -> None:
        self.config = config
        self.material = material
        self.certname = material.certname
        self.spool = Spool(config.spool_dir)
        self.files_root = config.spool_dir / "tasks"
        self.limits = runner.Limits(config.default_timeout, config.kill_grace,
                                    config.output_tail_bytes, config.max_output_bytes,
                                    config.response_max_bytes)
        self.slots = asyncio.Semaphore(config.max_concurrent)
        self.executions: dict[str, runner.Execution] = {}
        # Tasks waiting for the conductor's StartGrant: True = start, False = dropped.
        self.grants: dict[str, asyncio.Future[tuple[bool, str]]] = {}
        # The attempt of each task id the spool holds unacknowledged, as this process knows
        # it (from its accept, or from the spool at start-up) until that attempt's ack: a
        # grant, cancel or ack naming another attempt of the same task id is not for it.
        self.attempts: dict[str, int] = {}
        self.occupancy = ScoreOccupancy()  # scores with a task running here (exclusive yes)
        self.outbox: asyncio.Queue[player_pb2.PlayerMessage] | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.welcomed_at: float | None = None  # monotonic time of the last Welcome
        self.connected = False  # welcomed on the session in use now
        self.reconnects = 0  # sessions established after the first one (for the metrics)
        self.dialled = config.conductors[0]  # HOST:PORT of the conductor of the current session
        self.scores_check_seconds = SCORES_CHECK_SECONDS
        self.inventory_lock = asyncio.Lock()  # one scan and announcement at a time, in order
        self.unwinding: set[asyncio.Future[None]] = set()  # given-up dials still ending
        self.scores_seen: tuple[object, ...] | None = None  # signature the last scan saw
        self.inventory_sent = b""  # the list last announced on the current session
        # Live output: the tasks the conductor asked to watch on this session (with the
        # attempt), their followers while they run, and the session's unsent window.
        self.watching: dict[str, Wish] = {}
        self.followers: dict[str, asyncio.Task[None]] = {}
        self.window = follow.Window()

    # ---- start-up recovery -------------------------------------------------------------

    async def recover(self) -> None:
        """Resume what an earlier player process left in the spool; never re-run a start."""
        # Nothing is awaited once the spool is read: every score left running occupies its
        # score before any accepted task is looked at, so an exclusive one waits for it.
        for entry in await self.spool.pending():
            self.attempts[entry.task_id] = entry.attempt
            if entry.step == Step.ACCEPTED:
                self._spawn(self._run(entry))
            elif entry.step == Step.STARTED:
                self.occupancy.occupy(entry.score)
                self._spawn(self._outlive(entry))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task_handler_failed", error=repr(task.exception()))

    async def _outlive(self, entry: Entry) -> None:
        """Watch a score an earlier player process started (its score occupied by
        :meth:`recover`) to its end, and report it lost."""
        try:
            if entry.pid is None:
                reason = "the player stopped after recording the start, before the score was spawned"
            else:
                reason = await runner.outlive(entry.pid, entry.proc_start, entry.kill_at,
                                              self.config.kill_grace)
            logger.warning("task_lost", task_id=entry.task_id, reason=reason)
            outcome = runner.collect(runner.TaskFiles(self.files_root, entry.task_id),
                                     self._interface(entry.score), self.limits, TaskOutcome(reason=reason))
            await self._finish(runner.task_result(entry.task_id, entry.attempt,
                                                  player_pb2.ENDING_LOST, outcome))
        finally:
            self.occupancy.vacate(entry.score)

    def _interface(self, score: str) -> str:
        try:
            return scores.resolve(self.config.scores_dir, score).conf.interface
        except scores.ScoreUnavailable:
            return "env"

    def _exclusive(self, score: str) -> bool:
        """Whether the score's .conf says ``exclusive yes`` now (False for a score that
        cannot run: the check right before the run refuses it)."""
        try:
            return scores.resolve(self.config.scores_dir, score).conf.exclusive
        except scores.ScoreUnavailable:
            return False

    # ---- running tasks ---------------------------------------------------------------

    def _simple_result(self, entry: Entry, ending: player_pb2.Ending,
                       reason: str) -> player_pb2.TaskResult:
        """The result of a task that ends without running: no exit status, no output."""
        return runner.task_result(entry.task_id, entry.attempt, ending,
                                  TaskOutcome.ended(reason, time.time()))

    async def _run(self, entry: Entry) -> None:
        # An exclusive score's task waits for its turn before it takes a slot, so the
        # wait holds up no other score; it asks for its grant only once it has the turn.
        occupied = self._exclusive(entry.score)
        if occupied:
            if self.occupancy.busy(entry.score):
                logger.info("task_waiting_for_exclusive_score", task_id=entry.task_id, score=entry.score)
            await self.occupancy.take_turn(entry.score)
        try:
            async with self.slots:
                current = await self.spool.get(entry.task_id)
                if current is None or current.attempt != entry.attempt or current.step != Step.ACCEPTED:
                    return  # cancelled (or replaced by a later attempt) while it waited
                try:
                    score = scores.resolve(self.config.scores_dir, entry.score)
                    params = apply_decls(normalize_params(entry.params), score.conf.decls, score.name)
                except (scores.ScoreUnavailable, ValidationError) as err:
                    logger.warning("task_refused", task_id=entry.task_id, reason=str(err))
                    await self._finish(self._simple_result(entry, player_pb2.ENDING_REFUSED, str(err)))
                    return
                if entry.deadline_at and time.time() > entry.deadline_at:
                    await self._finish(self._simple_result(
                        entry, player_pb2.ENDING_EXPIRED, "job deadline passed before the task could start"))
                    return
                granted, reason = await self._ask_to_start(entry)
                if not granted:
                    await self._finish(self._simple_result(entry, player_pb2.ENDING_CANCELLED, reason))
                    return
                if not occupied:
                    self.occupancy.occupy(entry.score)
                    occupied = True
                await self._execute(entry, score, params)
        finally:
            if occupied:
                self.occupancy.vacate(entry.score)

    async def _execute(self, entry: Entry, score: scores.Score, params: dict[str, str]) -> None:
        """Start a granted task and see it to its result."""
        files = runner.TaskFiles(self.files_root, entry.task_id)
        files.remove()  # an earlier attempt's output, if this task ran here before
        ctx = runner.TaskContext(entry.task_id, entry.attempt, entry.job_id, self.certname,
                                 entry.requester, params)
        execution = runner.Execution(score, ctx, files, self.limits)
        await self.spool.mark_started(entry.task_id, entry.attempt, time.time() + execution.timeout)
        faults.point("player.started")
        self.executions[entry.task_id] = execution
        logger.info("task_started", task_id=entry.task_id, score=score.name, attempt=entry.attempt)
        ended = execution.ended
        self._follow(entry.task_id)
        try:
            # The pid is committed while the score runs, not before it is watched;
            # it is on disk before the result is recorded.
            noted: list[asyncio.Future[None]] = []

            async def note(pid: int, start: int | None) -> None:
                noted.append(asyncio.ensure_future(
                    self.spool.set_process(entry.task_id, entry.attempt, pid, start)))
            result = await execution.run(note)
            await asyncio.gather(*noted)
        finally:
            ended.set()  # a follower sends what is left, then stops
            self.executions.pop(entry.task_id, None)
            self.watching.pop(entry.task_id, None)
        await self._finish(result, self.followers.get(entry.task_id))

    async def _ask_to_start(self, entry: Entry) -> tuple[bool, str]:
        """Wait for the conductor's grant; asked again after every reconnect."""
        waiter: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.grants[entry.task_id] = waiter
        try:
            self._request_start(entry.task_id, entry.attempt)
            return await waiter
        finally:
            self.grants.pop(entry.task_id, None)

    def _request_start(self, task_id: str, attempt: int) -> None:
        self._send(_message(start_request=player_pb2.StartRequest(task_id=task_id, attempt=attempt)))

    async def _finish(self, result: player_pb2.TaskResult, follower: asyncio.Task[None] | None = None) -> None:
        """Record the result, then send it. A task whose output is followed lets the
        follower's last pass (what the score printed last) go out first, for at most
        LAST_PASS_SECONDS: after the result is durable, so a crash meanwhile loses nothing."""
        if await self.spool.finish(result):
            faults.point("player.finished")
            outcome = TaskOutcome.from_wire(result.outcome)
            logger.info("task_finished", task_id=result.task_id,
                        ending=player_pb2.Ending.Name(result.ending),
                        exit_code=outcome.exit_code, signal=outcome.signal or None)
            if follower is not None:
                await asyncio.wait({follower}, timeout=follow.LAST_PASS_SECONDS)
                follower.cancel()
            self._send_result(result)

    def _send_result(self, result: player_pb2.TaskResult) -> None:
        self._send(_message(result=fit_result(result)))

    # ---- messages from the conductor ---------------------------------------------------

    async def _on_run(self, run: player_pb2.RunTask) -> None:
        if TASK_ID_RE.fullmatch(run.task_id) is None:
            logger.error("bad_task_id", task_id=run.task_id[:80])
            return
        admission = await self.spool.admit(run)
        held = admission.entry
        if admission.verdict == Verdict.DUPLICATE:  # never run twice: re-announce where it stands
            logger.info("duplicate_task_ignored", task_id=run.task_id, attempt=run.attempt,
                        held_attempt=held.attempt)
            if held.result is not None:
                self._send_result(held.result)
            return
        if admission.verdict == Verdict.BUSY:
            self._refuse_attempt(run, held)
            return
        self.attempts[run.task_id] = run.attempt
        faults.point("player.accepted")
        earlier = {} if admission.replaced is None else {"replaced_attempt": admission.replaced.attempt}
        logger.info("task_accepted", task_id=run.task_id, score=run.score, attempt=run.attempt, **earlier)
        self._spawn(self._run(held))

    def _refuse_attempt(self, run: player_pb2.RunTask, held: Entry) -> None:
        """A later attempt of a task whose earlier attempt may still run here: refused,
        the earlier one kept as it is. The refusal is not spooled: a RunTask sent again
        after a reconnect gets the same answer, or runs if the earlier attempt is over."""
        where = "still running on this host" if held.step == Step.STARTED else "still waiting to start here"
        reason = f"attempt {held.attempt} of this task is {where}"
        logger.warning("task_attempt_refused", task_id=run.task_id, attempt=run.attempt,
                       held_attempt=held.attempt, held_step=held.step.value)
        self._send_result(runner.task_result(run.task_id, run.attempt, player_pb2.ENDING_REFUSED,
                                             TaskOutcome.ended(reason, time.time())))

    def _other_attempt(self, task_id: str, attempt: int) -> bool:
        """Whether a grant, cancel or ack naming ``attempt`` is about another attempt than
        the one this player holds of the task (an attempt not named, 0, is the one held)."""
        held = self.attempts.get(task_id)
        return attempt != 0 and held is not None and attempt != held

    def _on_grant(self, grant: player_pb2.StartGrant) -> None:
        if self._other_attempt(grant.task_id, grant.attempt):
            logger.info("stale_grant_ignored", task_id=grant.task_id, attempt=grant.attempt)
            return
        waiter = self.grants.get(grant.task_id)
        if waiter is not None and not waiter.done():
            waiter.set_result((True, ""))

    async def _on_cancel(self, cancel: player_pb2.CancelTask) -> None:
        if self._other_attempt(cancel.task_id, cancel.attempt):
            logger.info("stale_cancel_ignored", task_id=cancel.task_id, attempt=cancel.attempt)
            return
        waiter = self.grants.get(cancel.task_id)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result((False, cancel.reason or "cancelled before it started"))
            return
        execution = self.executions.get(cancel.task_id)
        if execution is not None:
            execution.cancel(cancel.reason or "cancelled")
            return
        entry = await self.spool.get(cancel.task_id)
        if entry is None or (cancel.attempt and cancel.attempt != entry.attempt):
            return
        if entry.step == Step.ACCEPTED:
            await self._finish(self._simple_result(entry, player_pb2.ENDING_CANCELLED,
                                                   cancel.reason or "cancelled before it started"))
        elif entry.step == Step.STARTED and entry.pid is not None:
            runner.kill_group(entry.pid, signal.SIGTERM)
        elif entry.step == Step.FINISHED and entry.result is not None:
            self._send_result(entry.result)

    def _on_watch(self, watch: player_pb2.WatchOutput) -> None:
        """Start or stop sending a task's live output. A wish for a task not running yet
        (its grant and the wish crossed) is kept until it starts or the session ends."""
        if TASK_ID_RE.fullmatch(watch.task_id) is None:
            return
        if not watch.on:
            self.watching.pop(watch.task_id, None)
            follower = self.followers.pop(watch.task_id, None)
            if follower is not None:
                follower.cancel()
            return
        now = time.monotonic()
        if len(self.watching) >= 4 * self.config.max_concurrent + 64:
            # A wish for a task that never started here (its end and the wish crossed) is
            # forgotten after WISH_SECONDS, so they cannot crowd out the live ones.
            self.watching = {task_id: wish for task_id, wish in self.watching.items()
                             if task_id in self.executions or now - wish.at < WISH_SECONDS}
            if len(self.watching) >= 4 * self.config.max_concurrent + 64:
                return
        starts = (watch.stdout_from, watch.stderr_from) if watch.resume else None
        self.watching[watch.task_id] = Wish(watch.attempt, starts, now)
        self._follow(watch.task_id)

    def _follow(self, task_id: str) -> None:
        """A follower for the task, if it runs here now, is watched, and has none yet."""
        execution = self.executions.get(task_id)
        wish = self.watching.get(task_id)
        if execution is None or wish is None or task_id in self.followers or self.outbox is None:
            return
        if wish.attempt and wish.attempt != execution.ctx.attempt:
            return
        outbox = self.outbox

        def send(chunk: player_pb2.OutputChunk) -> None:
            if self.outbox is outbox:  # never onto the next session's outbox
                outbox.put_nowait(_message(output=chunk))
            else:
                self.window.written(len(chunk.data))
        follower = asyncio.ensure_future(follow.follow(task_id, execution.ctx.attempt, execution.files.dir,
                                                       execution.ended, self.window, send, wish.starts))
        self.followers[task_id] = follower
        follower.add_done_callback(lambda _: self._followed(task_id, follower))

    def _followed(self, task_id: str, follower: asyncio.Task[None]) -> None:
        if self.followers.get(task_id) is follower:
            del self.followers[task_id]

    def _stop_following(self) -> None:
        """The session ended: its wishes end with it (the next conductor session asks
        again for what is still followed), and so does its window."""
        self.watching.clear()
        for follower in list(self.followers.values()):
            follower.cancel()
        self.followers.clear()
        self.window = follow.Window()

    def _on_ack(self, ack: player_pb2.ResultAck) -> None:
        # An ack of another attempt (an earlier one acknowledged late, or a later one this
        # player refused) concerns neither the row nor the files of the attempt held here.
        if self._other_attempt(ack.task_id, ack.attempt):
            return
        self.attempts.pop(ack.task_id, None)
        self.spool.ack_later(ack.task_id, ack.attempt)
        busy = ack.task_id in self.executions or ack.task_id in self.grants
        if not busy and TASK_ID_RE.fullmatch(ack.task_id):
            runner.TaskFiles(self.files_root, ack.task_id).remove()

    # ---- the session -------------------------------------------------------------------

    def _send(self, message: player_pb2.PlayerMessage) -> None:
        if self.outbox is not None:
            self.outbox.put_nowait(message)

    async def _scan(self) -> list[common_pb2.ScoreInfo]:
        """Scan the scores directory (off the event loop); remembers what it looked like
        beforehand, so a change made during the scan is seen by the next check."""
        scores_dir = self.config.scores_dir
        self.scores_seen = await asyncio.to_thread(scores_signature, scores_dir)
        return await asyncio.to_thread(scan_inventory, scores_dir, self.config.default_timeout)

    async def hello(self) -> tuple[player_pb2.PlayerMessage, list[player_pb2.TaskResult]]:
        """The Hello, and the results that follow it (one message each).

        The Hello lists every unacknowledged task with where it stands and nothing more:
        10,000 entries are well under 1 MB. The results of the finished ones come after
        it, each bounded by :func:`fit_result`, however many the spool holds."""
        async with self.inventory_lock:
            infos = await self._scan()
            self.inventory_sent = common_pb2.Inventory(scores=infos).SerializeToString()
        pending = await self.spool.pending()
        results = [entry.result for entry in pending
                   if entry.step == Step.FINISHED and entry.result is not None]
        return _message(hello=player_pb2.Hello(
            protocol_version=PROTOCOL_VERSION, software_version=SOFTWARE_VERSION, scores=infos,
            spool=[entry.to_wire() for entry in pending],
            max_concurrent=self.config.max_concurrent)), results

    async def refresh_inventory(self, reason: str, force: bool = False) -> None:
        """Re-scan the scores directory if it changed (always when forced) and tell the
        conductor on the live session if the list differs (always when forced)."""
        async with self.inventory_lock:
            if not force:
                seen = await asyncio.to_thread(scores_signature, self.config.scores_dir)
                if seen == self.scores_seen:
                    return
            infos = await self._scan()
            inventory = common_pb2.Inventory(scores=infos)
            serialized = inventory.SerializeToString()
            if self.outbox is None or (serialized == self.inventory_sent and not force):
                return  # no session: the next Hello carries the new list
            self.inventory_sent = serialized
            self._send(_message(inventory=inventory))
            logger.info("inventory_sent", reason=reason, scores=len(infos),
                        valid=sum(1 for info in infos if info.valid))

    async def watch_scores(self) -> None:
        """Forever: notice scores installed, changed or removed while the player runs."""
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.scores_check_seconds)
                return
            except TimeoutError:
                pass
            try:
                await self.refresh_inventory("scores_changed")
            except Exception:
                logger.exception("scores_check_failed")  # tried again at the next interval

    def use_material(self, material: Material) -> None:
        """A reloaded certificate and key: used from the next dial on; the live session
        keeps the connection it has."""
        self.material = material

    def _session_failed(self, err: grpc.aio.AioRpcError, address: str, name: str) -> None:
        details = err.details() or ""
        if HOSTNAME_MISMATCH in details:
            # gRPC says only that the check failed; say what to do about it.
            logger.error("session_ended", conductor=address, code=err.code().name, details=details,
                         conductor_name=name,
                         hint=f"the conductor's certificate does not name {name!r}:"
                              f" set conductor_name in {self.config.path} to the name in the"
                              " conductor's certificate (needed when dialling it by IP address)")
        elif is_refusal(err):  # a standby: expected while several conductors are listed
            logger.info("session_ended", conductor=address, code=err.code().name, details=details,
                        leader=leader_hint(err))
        else:
            logger.warning("session_ended", conductor=address, code=err.code().name, details=details)

    async def serve(self) -> None:
        """Connect, run a session, reconnect with full-jitter exponential backoff; forever.

        With several conductors listed, each dial goes to the next address, or to the one
        a refusing standby named as the leader (if it is listed), and the backoff grows
        per round of the list rather than per address. Meanwhile the others are watched
        (:class:`LeaderWatch`): one that starts to lead ends the session at once."""
        targets = self.config.targets()
        watch = LeaderWatch(targets, lambda: channel_credentials(self.material), self.config.backoff_initial,
                            self.config.backoff_max) if len(targets) > 1 else None
        failures = 0  # dials in a row that did not get a session going
        index = 0
        try:
            while not self.stopping.is_set():
                address, name = targets[index]
                started = time.monotonic()
                hint, moved = await self._attempt(address, name, watch)
                if self.stopping.is_set():
                    break
                # A session that got going resets the backoff; refusals and outages grow it.
                welcomed = self.welcomed_at is not None and self.welcomed_at >= started
                failures = 0 if welcomed and time.monotonic() - started > 5 else failures + 1
                if moved is not None:
                    index = _position(targets, moved)
                else:
                    index = _next_index(targets, index, hint)
                if moved is not None and failures == 0:
                    # Another conductor took over: come over soon, the fleet spread out.
                    delay = random.uniform(0, self.config.backoff_initial)
                else:
                    delay = backoff_delay(self.config.backoff_initial, self.config.backoff_max,
                                          failures // len(targets))
                index = await self._pause(targets, index, delay, failures, watch)
        finally:
            if watch is not None:
                await watch.close()

    async def _attempt(self, address: str, name: str,
                       watch: LeaderWatch | None) -> tuple[str | None, str | None]:
        """One dial and the session it leads to, until it ends: the leader a refusal named
        (or None), and the address a watch saw start to lead meanwhile (or None)."""
        hint: str | None = None
        moved: str | None = None
        self.dialled = address
        try:
            if watch is None:
                await self._dial(address, name)
            else:
                moved = await self._dial_watched(address, name, watch)
        except grpc.aio.AioRpcError as err:
            hint = leader_hint(err)
            self._session_failed(err, address, name)
        except (TimeoutError, ConnectionError, asyncio.InvalidStateError) as err:
            # InvalidStateError: a write raced with the end of the call.
            logger.warning("session_ended", conductor=address, error=str(err) or type(err).__name__)
        except Exception:
            # Whatever went wrong with this session, the player must live on and retry.
            logger.exception("session_failed", conductor=address)
        finally:
            self.outbox = None
            self.connected = False
            self._stop_following()
        return hint, moved

    async def _dial(self, address: str, name: str) -> None:
        # Built for each dial: a certificate reloaded on SIGHUP is used from the next one.
        async with grpc.aio.secure_channel(address, channel_credentials(self.material),
                                           options=channel_options(name)) as channel:
            await self._session(channel)

    async def _dial_watched(self, address: str, name: str, watch: LeaderWatch) -> str | None:
        """:meth:`_dial` while the other conductors are watched: ended (its call cancelled,
        as a lost connection would end it) when one of them starts to lead; returns that
        one. A dial that has not got through after DIAL_PATIENCE seconds (a frozen
        conductor holds the TLS handshake) gives way to any other that leads now, and
        after DIAL_LIMIT seconds to the next address (returns None, as a failed dial)."""
        started = time.monotonic()
        watch.watch_all_but(address)
        session = asyncio.ensure_future(self._dial(address, name))
        try:
            while True:
                waited = time.monotonic() - started
                if self.connected:
                    timeout = None
                elif waited >= DIAL_LIMIT:
                    logger.warning("session_ended", conductor=address, seconds=DIAL_LIMIT,
                                   reason="no welcome: trying the next conductor")
                    return None
                else:
                    timeout = (DIAL_PATIENCE if waited < DIAL_PATIENCE else DIAL_LIMIT) - waited
                news = asyncio.ensure_future(watch.news.wait())
                try:
                    await asyncio.wait({session, news}, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
                finally:
                    news.cancel()
                if session.done():
                    session.result()  # how it ended, raised
                    return None
                watch.news.clear()
                stuck = not self.connected and time.monotonic() - started >= DIAL_PATIENCE
                leader = watch.leader_other_than(address, stuck)
                if leader is not None:
                    logger.info("session_ended", conductor=address, leader=leader,
                                reason="another conductor leads now" if self.connected
                                else "the dial did not get through and another conductor leads now")
                    return leader
        finally:
            if not session.done():
                session.cancel()
            await self._unwind(session, address)

    async def _unwind(self, session: asyncio.Future[None], address: str) -> None:
        """Let a cancelled dial end, for at most DIAL_UNWIND seconds: one that does not (a
        channel stuck closing) is left to end on its own, and the next dial goes ahead."""
        await asyncio.wait({session}, timeout=DIAL_UNWIND)
        if session.done():
            self._unwound(session)
            return
        logger.warning("dial_unwinding", conductor=address, seconds=DIAL_UNWIND)
        self.unwinding.add(session)
        session.add_done_callback(self._unwound)

    def _unwound(self, session: asyncio.Future[None]) -> None:
        self.unwinding.discard(session)
        if not session.cancelled():
            session.exception()  # retrieved: how a given-up dial ended is of no interest

    async def _pause(self, targets: tuple[tuple[str, str], ...], index: int, delay: float, failures: int,
                     watch: LeaderWatch | None) -> int:
        """Wait ``delay`` before the next dial (to ``targets[index]``). A watched conductor
        seen leading meanwhile (or already) turns the dial to it and cuts the wait to a
        small random one. Returns the index of the address to dial."""
        until = time.monotonic() + delay
        hastened = False
        told: tuple[int, bool] | None = None
        if watch is not None:
            watch.watch_all_but(None)  # the one just dialled too: it may be the one to lead
        while not self.stopping.is_set():
            if watch is not None:
                watch.news.clear()
                leader = watch.leading(targets[index][0])
                if leader is not None:
                    index = _position(targets, leader)
                    if not hastened:
                        hastened = True
                        if until - time.monotonic() > self.config.backoff_initial:
                            until = time.monotonic() + random.uniform(0, self.config.backoff_initial)
            left = until - time.monotonic()
            if told != (index, hastened):
                told = (index, hastened)
                logger.info("reconnect_scheduled", conductor=targets[index][0], delay=round(max(left, 0), 3),
                            failures=failures)
            if left <= 0:
                break
            waits = {asyncio.ensure_future(self.stopping.wait())}
            if watch is not None:
                waits.add(asyncio.ensure_future(watch.news.wait()))
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
        return index

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = player_pb2_grpc.PlayerLinkStub(channel)
        outbox: asyncio.Queue[player_pb2.PlayerMessage] = asyncio.Queue()
        self.outbox = outbox  # before Hello, so nothing finished meanwhile is missed
        call = stub.Session(wait_for_ready=False)
        hello, results = await self.hello()
        try:
            await call.write(hello)
        except asyncio.InvalidStateError:
            # The call ended before the Hello went out (refused at the handshake, say):
            # raise the status it ended with, which says why, not "RPC already finished".
            await _raise_status(call)
            raise
        for result in results:  # after the Hello, in the order it lists them
            self._send_result(result)
        window = self.window

        async def write(message: player_pb2.PlayerMessage) -> None:
            await call.write(message)
            if message.HasField("output"):
                window.written(len(message.output.data))
        writer = asyncio.ensure_future(send_with_heartbeats(
            outbox, write, self.config.heartbeat_seconds, _heartbeat))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await self._receive(call, stopper, writer)
        finally:
            writer.cancel()
            stopper.cancel()

    async def _receive(self, call: grpc.aio.StreamStreamCall, stopper: asyncio.Future[Any],
                       writer: asyncio.Future[None]) -> None:
        """Handle the conductor's messages until the stream ends, we stop, or it falls silent."""
        liveness = self.config.liveness_timeout
        heard = Heard()
        reader = asyncio.ensure_future(self._read_all(call, heard))
        watchdog = asyncio.ensure_future(heard.watch(liveness, self.config.heartbeat_seconds))
        try:
            await asyncio.wait({reader, watchdog, stopper, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, watchdog):
                task.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
        if reader.done() and not reader.cancelled():
            reader.result()  # a failed read raises here
            await _raise_status(call)  # the status the conductor ended the stream with
        elif watchdog.done() and not watchdog.cancelled():
            logger.warning("conductor_silent", seconds=liveness)
            call.cancel()
        elif stopper.done():
            call.cancel()
        else:
            call.cancel()
            writer.result()  # the writer only ends by failing: raise why

    async def _read_all(self, call: grpc.aio.StreamStreamCall, heard: Heard) -> None:
        """One plain read per message, each handled in order, until the stream ends."""
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            heard.now()
            await self._handle(message)

    async def _handle(self, message: player_pb2.ConductorMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "welcome":
            if self.welcomed_at is not None:
                self.reconnects += 1
            self.welcomed_at = time.monotonic()
            self.connected = True
            logger.info("session_established", conductor=self.dialled,
                        conductor_certname=message.welcome.conductor)
            for task_id in list(self.grants):
                entry = await self.spool.get(task_id)
                if entry is not None:
                    self._request_start(task_id, entry.attempt)
        elif kind == "grant":
            self._on_grant(message.grant)
        elif kind == "run":
            # Accepted concurrently, so the accepts of a burst share one commit.
            self._spawn(self._on_run(message.run))
        elif kind == "cancel":
            await self._on_cancel(message.cancel)
        elif kind == "ack":
            self._on_ack(message.ack)
        elif kind == "watch":
            self._on_watch(message.watch)

    async def close(self) -> None:
        """Stop without touching running scores: they run on in their own sessions, and
        the next player process watches them to the end and reports them (README,
        "Restarting a player")."""
        self.stopping.set()
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.wait(self.background, timeout=5)
        self.spool.close()
