"""The player's spool with a real SQLite file: its steps, and the upgrade from protocol 1."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import pytest

from orchestra.errors import StartupError
from orchestra.outcome import TaskOutcome
from orchestra.wire import common_pb2, player_pb2
from player.spool import SPOOL_VERSION, Spool, Step, Verdict

T = TypeVar("T")

PROTOCOL1_OUTCOME = common_pb2.TaskOutcome(
    has_exit_code=True, exit_code=3, signal=0, response={"answer": "42"},
    stdout_tail=b"x", stderr_tail=b"oops\n", stdout_truncated=True, response_truncated=True,
    reason="r", started_at=1700000000.5, finished_at=1700000002.25)


def run(spool_dir: Path, use: Callable[[Spool], Awaitable[T]]) -> T:
    """Open the spool, await use(spool) on a fresh event loop, always close the spool."""
    spool = Spool(spool_dir)

    async def main() -> T:
        return await use(spool)
    try:
        return asyncio.run(main())
    finally:
        spool.close()


def run_task(task_id: str, attempt: int = 1) -> player_pb2.RunTask:
    return player_pb2.RunTask(task_id=task_id, attempt=attempt, job_id="job1", score="hello",
                              params={"NAME": "world"}, requester="alice")


def protocol1_blob(task_id: str, attempt: int, ending: player_pb2.Ending) -> bytes:
    # Concatenated messages merge when parsed: this is protocol 1's TaskResult layout,
    # the outcome's fields at numbers 4..15 right beside task_id, attempt and ending.
    head = player_pb2.TaskResult(task_id=task_id, attempt=attempt, ending=ending)
    return head.SerializeToString() + PROTOCOL1_OUTCOME.SerializeToString()


def raw(spool_dir: Path) -> closing[sqlite3.Connection]:
    """The spool file opened directly (autocommit), as an older player would have left it."""
    return closing(sqlite3.connect(spool_dir / "spool.db", isolation_level=None))


def set_user_version(spool_dir: Path, version: int) -> None:
    with raw(spool_dir) as conn:
        conn.execute(f"PRAGMA user_version = {version}")


def user_version(spool_dir: Path) -> int:
    with raw(spool_dir) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def insert_finished(spool_dir: Path, task_id: str, blob: bytes) -> None:
    with raw(spool_dir) as conn:
        conn.execute(
            "INSERT INTO spool (task_id, attempt, job_id, score, params, requester, deadline_at,"
            " step, result, accepted_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (task_id, 2, "job1", "hello", "{}", "alice", 0.0, "finished", blob,
             time.time(), time.time()))


def stored_blob(spool_dir: Path, task_id: str) -> bytes:
    with raw(spool_dir) as conn:
        row = conn.execute("SELECT result FROM spool WHERE task_id = ?", (task_id,)).fetchone()
        return bytes(row[0])


@pytest.fixture
def protocol1_spool(tmp_path: Path) -> Path:
    """A spool as a protocol-1 player left it: user_version 0, one unacknowledged result."""
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).close()
    set_user_version(spool_dir, 0)
    insert_finished(spool_dir, "t-old", protocol1_blob("t-old", 2, player_pb2.ENDING_FAILED))
    return spool_dir


def test_new_spool_is_created_at_the_current_version(tmp_path: Path) -> None:
    Spool(tmp_path / "spool").close()
    assert user_version(tmp_path / "spool") == SPOOL_VERSION == 2


def test_protocol1_result_survives_the_upgrade(protocol1_spool: Path) -> None:
    pending = run(protocol1_spool, lambda spool: spool.pending())

    assert user_version(protocol1_spool) == 2
    [entry] = pending
    assert (entry.task_id, entry.attempt, entry.step) == ("t-old", 2, Step.FINISHED)
    assert entry.result is not None
    assert (entry.result.task_id, entry.result.attempt) == ("t-old", 2)
    assert entry.result.ending == player_pb2.ENDING_FAILED
    assert entry.result.outcome == PROTOCOL1_OUTCOME
    assert TaskOutcome.from_wire(entry.result.outcome) == TaskOutcome(
        exit_code=3, response={"answer": "42"}, response_truncated=True, stdout=b"x",
        stderr=b"oops\n", stdout_truncated=True, reason="r", started_at=1700000000.5,
        finished_at=1700000002.25)
    # Stored in the new layout: nothing left at the reserved numbers 4..15.
    new_layout = player_pb2.TaskResult(task_id="t-old", attempt=2, ending=player_pb2.ENDING_FAILED,
                                       outcome=PROTOCOL1_OUTCOME)
    assert stored_blob(protocol1_spool, "t-old") == new_layout.SerializeToString()


def test_reopening_an_upgraded_spool_does_not_convert_again(protocol1_spool: Path) -> None:
    run(protocol1_spool, lambda spool: spool.pending())
    converted = stored_blob(protocol1_spool, "t-old")
    # A protocol-1 blob slipped into a spool already at version 2 must be left as it is:
    # only the version decides whether results are converted.
    untouched = protocol1_blob("t-late", 1, player_pb2.ENDING_OK)
    insert_finished(protocol1_spool, "t-late", untouched)

    pending = run(protocol1_spool, lambda spool: spool.pending())

    assert stored_blob(protocol1_spool, "t-old") == converted
    assert stored_blob(protocol1_spool, "t-late") == untouched
    by_id = {entry.task_id: entry for entry in pending}
    assert by_id["t-old"].result is not None and by_id["t-old"].result.outcome == PROTOCOL1_OUTCOME
    assert user_version(protocol1_spool) == 2


def test_spool_from_a_newer_player_is_refused(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).close()
    set_user_version(spool_dir, 3)
    with pytest.raises(StartupError, match="newer player"):
        Spool(spool_dir)


def _result(task_id: str, attempt: int, exit_code: int) -> player_pb2.TaskResult:
    outcome = TaskOutcome(exit_code=exit_code, stdout=b"out", started_at=1.0, finished_at=2.0)
    ending = player_pb2.ENDING_OK if exit_code == 0 else player_pb2.ENDING_FAILED
    return player_pb2.TaskResult(task_id=task_id, attempt=attempt, ending=ending,
                                 outcome=outcome.to_wire())


def test_task_goes_accepted_started_finished_acked(tmp_path: Path) -> None:
    async def steps(spool: Spool) -> None:
        entry = await spool.accept(run_task("t1"))
        assert entry is not None and entry.step == Step.ACCEPTED
        assert entry.params == {"NAME": "world"} and entry.result is None
        assert await spool.accept(run_task("t1")) is None  # duplicate refused
        assert await spool.accept(run_task("t1", attempt=2)) is None  # attempt 1 still held

        with pytest.raises(RuntimeError):
            await spool.mark_started("t1", 2, kill_at=0.0)  # not the attempt held
        await spool.mark_started("t1", 1, kill_at=123.0)
        await spool.set_process("t1", 1, 4242, 99)
        started = await spool.get("t1")
        assert started is not None and started.step == Step.STARTED
        assert (started.pid, started.proc_start, started.kill_at) == (4242, 99, 123.0)
        with pytest.raises(RuntimeError):
            await spool.mark_started("t1", 1, kill_at=0.0)  # never started twice

        assert await spool.finish(_result("t1", 2, 0)) is False  # not the attempt held
        assert await spool.finish(_result("t1", 1, 0)) is True
        assert await spool.finish(_result("t1", 1, 7)) is False  # first result wins
        [finished] = await spool.pending()
        assert finished.step == Step.FINISHED and finished.result == _result("t1", 1, 0)
        assert finished.to_wire().state == player_pb2.SPOOL_STATE_FINISHED

        assert await spool.ack("t1", 2) is False  # another attempt's ack is not ours
        assert await spool.ack("t1", 1) is True
        assert await spool.ack("t1", 1) is False
        assert await spool.pending() == []
        assert await spool.accept(run_task("t1")) is None  # the tombstone still refuses it
    run(tmp_path / "spool", steps)


def test_finished_result_is_still_pending_after_reopen(tmp_path: Path) -> None:
    async def finish(spool: Spool) -> None:
        await spool.accept(run_task("t1"))
        await spool.finish(_result("t1", 1, 5))
    run(tmp_path / "spool", finish)

    [entry] = run(tmp_path / "spool", lambda spool: spool.pending())
    assert entry.step == Step.FINISHED and entry.result == _result("t1", 1, 5)
    assert TaskOutcome.from_wire(entry.result.outcome).exit_code == 5


# ---- a later attempt of a task the spool holds (the conductor retried it) ----------------


def _step_to(spool: Spool, step: Step) -> Callable[[str, int], Awaitable[None]]:
    """A coroutine function that brings task_id's attempt (just accepted) to ``step``."""
    async def bring(task_id: str, attempt: int) -> None:
        if step in (Step.STARTED, Step.FINISHED, Step.ACKED):
            await spool.mark_started(task_id, attempt, kill_at=0.0)
            await spool.set_process(task_id, attempt, 4242, 99)
        if step in (Step.FINISHED, Step.ACKED):
            assert await spool.finish(_result(task_id, attempt, 1))
        if step == Step.ACKED:
            assert await spool.ack(task_id, attempt)
    return bring


@pytest.mark.parametrize("step", [Step.FINISHED, Step.ACKED])
def test_later_attempt_replaces_an_attempt_that_is_over(tmp_path: Path, step: Step) -> None:
    async def use(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=1))
        await _step_to(spool, step)("t1", 1)
        later = player_pb2.RunTask(task_id="t1", attempt=3, job_id="job1", score="hello",
                                   params={"NAME": "again"}, requester="bob", deadline_at=99.5)

        admission = await spool.admit(later)

        assert admission.verdict == Verdict.NEW_ATTEMPT and admission.runs
        assert admission.replaced is not None
        assert (admission.replaced.attempt, admission.replaced.step) == (1, step)
        new = admission.entry
        assert (new.task_id, new.attempt, new.step) == ("t1", 3, Step.ACCEPTED)
        assert (new.params, new.requester, new.deadline_at) == ({"NAME": "again"}, "bob", 99.5)
        assert (new.pid, new.proc_start, new.kill_at, new.result) == (None, None, None, None)
        assert await spool.get("t1") == new
        assert [entry.task_id for entry in await spool.pending()] == ["t1"]
        # The new attempt goes through every step like a first one.
        await spool.mark_started("t1", 3, kill_at=1.0)
        assert await spool.finish(_result("t1", 3, 0))
        assert await spool.ack("t1", 3)
    run(tmp_path / "spool", use)


def test_later_attempt_is_durable_once_admitted(tmp_path: Path) -> None:
    async def admit(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=1))
        await _step_to(spool, Step.FINISHED)("t1", 1)
        assert (await spool.admit(run_task("t1", attempt=2))).verdict == Verdict.NEW_ATTEMPT
    run(tmp_path / "spool", admit)

    [entry] = run(tmp_path / "spool", lambda spool: spool.pending())
    assert (entry.attempt, entry.step, entry.result) == (2, Step.ACCEPTED, None)


@pytest.mark.parametrize("step", [Step.ACCEPTED, Step.STARTED])
def test_later_attempt_is_refused_while_the_earlier_may_still_run(tmp_path: Path, step: Step) -> None:
    async def use(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=1))
        await _step_to(spool, step)("t1", 1)
        before = await spool.get("t1")

        admission = await spool.admit(run_task("t1", attempt=2))

        assert admission.verdict == Verdict.BUSY and not admission.runs
        assert admission.entry == before and admission.replaced is None
        assert await spool.get("t1") == before  # the earlier attempt is kept as it was
        assert await spool.accept(run_task("t1", attempt=5)) is None
        # It still finishes as attempt 1, and only then may attempt 2 take its place.
        if step == Step.ACCEPTED:
            await spool.mark_started("t1", 1, kill_at=0.0)
        assert await spool.finish(_result("t1", 1, 0))
        assert (await spool.admit(run_task("t1", attempt=2))).verdict == Verdict.NEW_ATTEMPT
    run(tmp_path / "spool", use)


@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("attempt", [1, 2])
def test_same_or_earlier_attempt_is_a_duplicate_whatever_its_step(
        tmp_path: Path, step: Step, attempt: int) -> None:
    async def use(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=2))
        await _step_to(spool, step)("t1", 2)
        before = await spool.get("t1")

        admission = await spool.admit(run_task("t1", attempt=attempt))

        assert admission.verdict == Verdict.DUPLICATE and not admission.runs
        assert admission.entry == before and await spool.get("t1") == before
    run(tmp_path / "spool", use)


def test_ack_of_the_earlier_attempt_never_touches_the_later_one(tmp_path: Path) -> None:
    async def use(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=1))
        await _step_to(spool, Step.FINISHED)("t1", 1)
        await spool.admit(run_task("t1", attempt=2))
        await spool.mark_started("t1", 2, kill_at=0.0)
        assert await spool.finish(_result("t1", 2, 0))
        finished = await spool.get("t1")

        assert await spool.ack("t1", 1) is False  # late: attempt 1's result was replaced
        spool.ack_later("t1", 1)
        await spool.db.write(lambda conn: None)  # committed with the next write, in order
        assert await spool.get("t1") == finished
        [pending] = await spool.pending()
        assert pending == finished and pending.result == _result("t1", 2, 0)
        assert await spool.ack("t1", 2) is True
        assert await spool.pending() == []
    run(tmp_path / "spool", use)


def test_result_of_the_earlier_attempt_never_lands_on_the_later_one(tmp_path: Path) -> None:
    async def use(spool: Spool) -> None:
        await spool.accept(run_task("t1", attempt=1))
        await _step_to(spool, Step.FINISHED)("t1", 1)
        await spool.admit(run_task("t1", attempt=2))

        assert await spool.finish(_result("t1", 1, 0)) is False
        with pytest.raises(RuntimeError):
            await spool.mark_started("t1", 1, kill_at=0.0)
        entry = await spool.get("t1")
        assert entry is not None and (entry.attempt, entry.step) == (2, Step.ACCEPTED)
    run(tmp_path / "spool", use)
