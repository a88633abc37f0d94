"""Running one score: allow-listed environment, own process group, timeout, bounded output.

Output goes to files in the task's directory (opened O_APPEND), not pipes, so a score
outlives a player restart without dying of SIGPIPE, and the player can cap the files
by truncating them while the score runs. For the same reason what an interface gives a
score on stdin (player/interfaces.py) is written to a 0600 file there first, and the
score reads that file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestra import faults, log
from orchestra.cli import one_line
from orchestra.errors import StartupError
from orchestra.outcome import TaskOutcome
from orchestra.params import ENV_PREFIX, OUTPUT_TRUNCATED_MARKER
from orchestra.wire import player_pb2
from player import interfaces
from player.interfaces import Interface, Response
from player.scores import Score

logger = log.get("player")
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POLL_SECONDS = 0.5
# How long to wait for a score's exit status after SIGKILL of its group. A process stuck
# in the kernel (uninterruptible I/O) dies only when it leaves it, and asyncio's child
# watcher can lose an exit status (python/cpython#87744): the task must end anyway.
REAP_SECONDS = 30.0
# What gRPC core reads as "true" for a boolean environment setting (gpr_parse_bool_value).
_GRPC_TRUE = frozenset({"1", "t", "true", "y", "yes"})


def refuse_fork_support(environ: Mapping[str, str]) -> None:
    """Refuse to run with gRPC's fork support on: a gRPC process that forks with it
    enabled can hang in fork handlers (DESIGN-NOTES 1.10), and the player forks for
    every score. Raises StartupError naming the variable."""
    value = environ.get("GRPC_ENABLE_FORK_SUPPORT")
    if value is not None and value.strip().lower() in _GRPC_TRUE:
        raise StartupError(f"GRPC_ENABLE_FORK_SUPPORT={value} is set: gRPC fork support can hang "
                           f"a player that spawns scores; unset it or set it to 0")


@dataclass(frozen=True)
class Limits:
    default_timeout: float
    kill_grace: float
    output_tail_bytes: int
    max_output_bytes: int
    response_max_bytes: int


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    attempt: int
    job_id: str
    player: str
    requester: str
    params: Mapping[str, str]


def home_dir() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return "/"


def build_env(score: str, ctx: TaskContext, response_file: Path,
              params_in_environment: bool = True) -> dict[str, str]:
    """The whole child environment: a fixed allow-list, never the player's own (§5).

    Params are already validated and upper-cased; reserved names are set last so that
    even a param that slipped through could not override them. An interface that hands
    the params over otherwise (json) leaves them out.
    """
    env = {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "HOME": home_dir()}
    for key, value in ctx.params.items() if params_in_environment else ():
        env[ENV_PREFIX + key] = value
    env.update({
        "ORC_JOB_ID": ctx.job_id,
        "ORC_TASK_ID": ctx.task_id,
        "ORC_ATTEMPT": str(ctx.attempt),
        "ORC_SCORE": score,
        "ORC_PLAYER": ctx.player,
        "ORC_REQUESTER": ctx.requester,
        "ORC_RESPONSE_FILE": str(response_file),
    })
    return env


def proc_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else None


def same_process_alive(pid: int, start: int | None) -> bool:
    """A PID alone is no proof of life: it must also have the recorded start time."""
    return start is not None and proc_start_time(pid) == start


class TaskFiles:
    """stdout, stderr, response file and stdin of one task, under spool_dir/tasks/TASK_ID."""

    def __init__(self, root: Path, task_id: str) -> None:
        # Absolute whatever root is: the response file's path is handed to a score that
        # runs in its own working directory.
        self.dir = root.absolute() / task_id
        self.stdout = self.dir / "stdout"
        self.stderr = self.dir / "stderr"
        self.response = self.dir / "response"
        self.stdin = self.dir / "stdin"
        self.truncated: set[str] = set()

    def create(self) -> tuple[int, int]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.response.touch(mode=0o600)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return os.open(self.stdout, flags, 0o600), os.open(self.stderr, flags, 0o600)

    def open_stdin(self, data: bytes) -> int:
        """Write what the score reads on stdin to a 0600 file of the task, and open it
        for reading: a file, not a pipe, so the score never depends on the player."""
        with open(os.open(self.stdin, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as out:
            out.write(data)
        return os.open(self.stdin, os.O_RDONLY | os.O_CLOEXEC)

    def enforce_cap(self, limit: int) -> None:
        for name, path in (("stdout", self.stdout), ("stderr", self.stderr)):
            try:
                if path.stat().st_size > limit:
                    os.truncate(path, 0)  # O_APPEND writers continue at the new end
                    self.truncated.add(name)
            except FileNotFoundError:
                pass

    def tail(self, name: str, size: int) -> tuple[bytes, bool]:
        path = getattr(self, name)
        try:
            with open(path, "rb") as handle:
                length = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, length - size))
                data = handle.read(size)
        except FileNotFoundError:
            return b"", False
        cut = length > size or name in self.truncated
        return (OUTPUT_TRUNCATED_MARKER + data if cut else data), cut

    def read_response(self, interface: Interface, limit: int) -> Response:
        """The response, as the interface reads it from its source (at most ``limit``
        bytes of it). A missing file is an empty response."""
        source = self.stdout if interface.response_from == "stdout" else self.response
        try:
            with open(source, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            data = b""
        try:
            response = interface.parse(data[:limit], len(data) > limit)
        except Exception as err:  # an installed interface's bug must not lose the task's result
            return Response(error=one_line(f"the interface could not read the response: {type(err).__name__}: {err}"))
        if not isinstance(response, Response):
            return Response(error=f"the interface returned a {type(response).__name__}, not a Response")
        return response

    def remove(self) -> None:
        for path in (self.stdout, self.stderr, self.response, self.stdin):
            path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass


def kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Execution:
    """One running score. ``cancel()`` asks it to stop; ``run()`` returns the result."""

    def __init__(self, score: Score, ctx: TaskContext, files: TaskFiles, limits: Limits) -> None:
        self.score, self.ctx, self.files, self.limits = score, ctx, files, limits
        self.timeout = score.conf.timeout or limits.default_timeout
        self._cancel_reason: str | None = None
        self._cancelled = asyncio.Event()
        self.ended = asyncio.Event()  # set by the caller once run() returned (live output ends)

    def cancel(self, reason: str) -> None:
        self._cancel_reason = reason
        self._cancelled.set()

    async def run(self, on_spawn: Callable[[int, int | None], Awaitable[None]]) -> player_pb2.TaskResult:
        started_at = time.time()
        name = self.score.conf.interface
        try:
            interface = interfaces.get(name)
            stdin = interface.stdin(self.ctx.params)
            if stdin is not None and not isinstance(stdin, bytes):
                raise TypeError(f"stdin() returned {type(stdin).__name__}, not bytes or None")
        except KeyError:  # checked with the .conf: only a player that loaded none gets here
            return self._result(player_pb2.ENDING_FAILED, TaskOutcome(
                reason=f"cannot start score: unknown interface {name!r}", started_at=started_at))
        except Exception as err:  # an installed interface's bug fails this task only
            return self._result(player_pb2.ENDING_FAILED, TaskOutcome(
                reason=f"cannot start score: interface {name}: {type(err).__name__}: {err}",
                started_at=started_at))
        out_fd, err_fd = self.files.create()
        in_fd: int | None = None
        try:
            if stdin is not None:
                in_fd = self.files.open_stdin(stdin)
            env = build_env(self.score.name, self.ctx, self.files.response, interface.params_in_environment)
            proc = await asyncio.create_subprocess_exec(
                str(self.score.path), stdin=asyncio.subprocess.DEVNULL if in_fd is None else in_fd,
                stdout=out_fd, stderr=err_fd, env=env,
                cwd=self.score.conf.workdir, start_new_session=True, close_fds=True)
        except OSError as err:
            return self._result(player_pb2.ENDING_FAILED, TaskOutcome(
                reason=f"cannot start score: {err.strerror or err}", started_at=started_at))
        finally:
            for fd in (out_fd, err_fd, in_fd):
                if fd is not None:
                    os.close(fd)
        await on_spawn(proc.pid, proc_start_time(proc.pid))
        faults.point("player.spawned")
        ending, reason = await self._supervise(proc, started_at)
        code = proc.returncode
        if code is None:  # killed but never reaped: the stop's ending, without a status
            return self._result(ending, TaskOutcome(reason=reason, started_at=started_at))
        if ending == player_pb2.ENDING_UNSPECIFIED:
            ending = player_pb2.ENDING_OK if code == 0 else player_pb2.ENDING_FAILED
        # A negative return code is the signal that killed the score: no exit code then.
        status = TaskOutcome(exit_code=code if code >= 0 else None, signal=max(-code, 0),
                             reason=reason, started_at=started_at)
        return self._result(ending, status)

    async def _supervise(self, proc: asyncio.subprocess.Process, started_at: float) -> tuple[player_pb2.Ending, str]:
        """Wait for the score, enforcing timeout, cancel and output cap.

        Returns ENDING_UNSPECIFIED when the score exited by itself (its exit status
        decides), otherwise the ending and reason of the stop.
        """
        deadline = started_at + self.timeout
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                unreaped = await self._stop(proc)
                # A score that outlived SIGKILL may still be running: lost, which nothing
                # retries by itself, never timed_out, which the score's retries would re-run.
                ending = player_pb2.ENDING_LOST if unreaped else player_pb2.ENDING_TIMED_OUT
                return ending, f"timed out after {self.timeout:g} s" + unreaped
            waiter = asyncio.ensure_future(proc.wait())
            cancel = asyncio.ensure_future(self._cancelled.wait())
            done, _ = await asyncio.wait({waiter, cancel}, timeout=min(POLL_SECONDS * 2, remaining),
                                         return_when=asyncio.FIRST_COMPLETED)
            cancel.cancel()
            if waiter in done:
                return player_pb2.ENDING_UNSPECIFIED, ""
            waiter.cancel()
            if cancel in done:
                unreaped = await self._stop(proc)
                return player_pb2.ENDING_CANCELLED, (self._cancel_reason or "cancelled") + unreaped
            self.files.enforce_cap(self.limits.max_output_bytes)

    async def _stop(self, proc: asyncio.subprocess.Process) -> str:
        """TERM the whole group, KILL it after kill_grace, then reap the leader.

        Every wait is bounded and nothing here raises: a task must end even when its
        score cannot be reaped, or it would stay ``started`` forever. Returns "" once the
        leader is reaped, otherwise what to add to the task's reason.
        """
        kill_group(proc.pid, signal.SIGTERM)
        if await _reaped(proc, self.limits.kill_grace):
            # The leader is gone; what is left of its group gets no second chance either.
            kill_group(proc.pid, signal.SIGKILL)
            return ""
        kill_group(proc.pid, signal.SIGKILL)
        if await _reaped(proc, REAP_SECONDS):
            return ""
        logger.error("score_not_reaped", pid=proc.pid, seconds=REAP_SECONDS)
        return (f"; its process {proc.pid} did not exit within {REAP_SECONDS:g} s of SIGKILL, "
                f"exit status unknown")

    def _result(self, ending: player_pb2.Ending, status: TaskOutcome) -> player_pb2.TaskResult:
        response = read_response(self.files, self.score.conf.interface, self.limits)
        if ending == player_pb2.ENDING_OK and response.error:
            # Exit 0, but what it printed is no response: the task did not do its job.
            ending, status = player_pb2.ENDING_FAILED, dataclasses.replace(status, reason=one_line(response.error))
        outcome = collect(self.files, self.score.conf.interface, self.limits, status, response)
        return task_result(self.ctx.task_id, self.ctx.attempt, ending, outcome)


async def _reaped(proc: asyncio.subprocess.Process, seconds: float) -> bool:
    """Whether proc exits (and is reaped) within seconds; never raises on timeout."""
    try:
        await asyncio.wait_for(proc.wait(), seconds)
    except TimeoutError:
        return False
    return True


def read_response(files: TaskFiles, interface: str, limits: Limits) -> Response:
    """The task's response as its score's interface reads it."""
    try:
        found = interfaces.get(interface)
    except KeyError:  # the .conf changed to a name this player does not have
        return Response(error=f"unknown interface {interface!r}")
    return files.read_response(found, limits.response_max_bytes)


def collect(files: TaskFiles, interface: str, limits: Limits, status: TaskOutcome,
            response: Response | None = None) -> TaskOutcome:
    """``status`` (exit status, reason, start time) completed with the task's output.

    Output tails and the response (unless already read) are read from the task's files
    now, and now is the outcome's finish time.
    """
    stdout, out_cut = files.tail("stdout", limits.output_tail_bytes)
    stderr, err_cut = files.tail("stderr", limits.output_tail_bytes)
    if response is None:
        response = read_response(files, interface, limits)
    return dataclasses.replace(
        status, response=response.pairs, response_truncated=response.truncated, stdout=stdout, stderr=stderr,
        stdout_truncated=out_cut, stderr_truncated=err_cut, finished_at=time.time())


def task_result(task_id: str, attempt: int, ending: player_pb2.Ending,
                outcome: TaskOutcome) -> player_pb2.TaskResult:
    """The message that reports how one attempt of a task ended."""
    return player_pb2.TaskResult(task_id=task_id, attempt=attempt, ending=ending,
                                 outcome=outcome.to_wire())


async def outlive(pid: int, start: int | None, kill_at: float | None, kill_grace: float) -> str:
    """Wait for a score left running by an earlier player process; enforce its timeout.

    The exit status of a process that is not our child cannot be learned, so the caller
    reports the task as lost with this reason.
    """
    killed = ""
    term_sent_at: float | None = None
    while same_process_alive(pid, start):
        now = time.time()
        if kill_at is not None and now >= kill_at and term_sent_at is None:
            kill_group(pid, signal.SIGTERM)
            term_sent_at, killed = now, " and was killed at its timeout"
        elif term_sent_at is not None and now >= term_sent_at + kill_grace:
            kill_group(pid, signal.SIGKILL)
        await asyncio.sleep(POLL_SECONDS)
    return "the player restarted while the score ran; it ended" + killed + ", exit status unknown"
