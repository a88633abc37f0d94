"""The conductor's pure decisions, tested directly: player choice and reconcile rules."""

from __future__ import annotations

import random

from conductor import reconcile
from conductor.dispatch import pick
from conductor.reconcile import Action
from conductor.sessions import PlayerSession
from conductor.states import TaskState
from conductor.store import QueuedTask, TaskRecord
from orchestra.outcome import TaskOutcome
from orchestra.tls import PeerIdentity
from orchestra.wire import player_pb2


def session(name: str, slots: int, busy: int = 0) -> PlayerSession:
    identity = PeerIdentity(certname=name, serial=1, not_after=9e9)
    s = PlayerSession(name=name, identity=identity, max_concurrent=slots, ready=True)
    s.in_flight.update(f"t{n}" for n in range(busy))
    return s


def task(task_id: str, state: TaskState, player: str | None = "p1", attempt: int = 1) -> TaskRecord:
    return TaskRecord(task_id, task_id.split(".")[0], player, state, attempt, (), None, TaskOutcome())


# ---- choosing a player ----------------------------------------------------------------

def test_pick_prefers_the_least_busy_share_of_slots() -> None:
    takers = {"a": session("a", 4, busy=2), "b": session("b", 1), "c": session("c", 8, busy=7)}
    assert pick(["a", "b", "c"], takers).name == "b"  # type: ignore[union-attr]


def test_pick_only_considers_candidates_with_a_free_slot() -> None:
    takers = {"a": session("a", 1, busy=1), "b": session("b", 2, busy=1)}
    assert pick(["a"], takers) is None
    assert pick(["a", "b", "offline"], takers).name == "b"  # type: ignore[union-attr]
    assert pick([], takers) is None


def test_pick_shares_load_between_equal_players() -> None:
    takers = {"a": session("a", 2), "b": session("b", 2)}
    rng = random.Random(7)
    chosen = {pick(["a", "b"], takers, rng).name for _ in range(40)}  # type: ignore[union-attr]
    assert chosen == {"a", "b"}


def test_one_of_candidates_skip_targets_that_refused() -> None:
    one_of = QueuedTask("j.0", "one", None, ("a", "b", "c"), ("b",), 2e9)
    all_of = QueuedTask("j.1", "all", "c", ("a", "b", "c"), (), 2e9)
    assert one_of.candidates() == ["a", "c"]
    assert all_of.candidates() == ["c"]


# ---- reconcile on hello ---------------------------------------------------------------

def spooled(task_id: str, state: int, attempt: int = 1) -> player_pb2.SpoolEntry:
    entry = player_pb2.SpoolEntry(task_id=task_id, attempt=attempt, state=state)  # type: ignore[arg-type]
    if state == player_pb2.SPOOL_STATE_FINISHED:
        entry.result.task_id, entry.result.attempt = task_id, attempt
    return entry


def test_reconcile_accepts_finished_results_and_keeps_what_is_still_ours() -> None:
    spool = [spooled("a.0", player_pb2.SPOOL_STATE_FINISHED),
             spooled("b.0", player_pb2.SPOOL_STATE_STARTED),
             spooled("c.0", player_pb2.SPOOL_STATE_ACCEPTED)]
    held = [task("a.0", TaskState.RUNNING), task("b.0", TaskState.RUNNING), task("c.0", TaskState.DISPATCHED)]
    queue = {t.task_id: t for t in held[1:]}
    steps = reconcile.plan("p1", spool, queue, held)
    assert [(s.action, s.task_id) for s in steps] == [
        (Action.ACCEPT_RESULT, "a.0"), (Action.KEEP, "b.0"), (Action.KEEP, "c.0")]
    assert steps[0].result is not None and steps[0].result.task_id == "a.0"


def test_reconcile_tells_the_player_to_forget_what_is_no_longer_its() -> None:
    spool = [spooled("moved.0", player_pb2.SPOOL_STATE_ACCEPTED),
             spooled("old.0", player_pb2.SPOOL_STATE_ACCEPTED, attempt=1),
             spooled("done.0", player_pb2.SPOOL_STATE_STARTED),
             spooled("unknown.0", player_pb2.SPOOL_STATE_ACCEPTED)]
    queue = {"moved.0": task("moved.0", TaskState.DISPATCHED, player="p2"),
             "old.0": task("old.0", TaskState.DISPATCHED, attempt=2),
             "done.0": task("done.0", TaskState.CANCELLED),
             "unknown.0": None}
    steps = reconcile.plan("p1", spool, queue, [])
    assert {s.action for s in steps} == {Action.FORGET}
    assert [s.attempt for s in steps] == [1, 1, 1, 1]  # the attempt the player holds


def test_reconcile_requeues_unreceived_work_and_never_reruns_started_work() -> None:
    held = [task("sent.0", TaskState.DISPATCHED), task("ran.0", TaskState.RUNNING),
            task("killing.0", TaskState.CANCELLING)]
    steps = reconcile.plan("p1", [], {}, held)
    assert [(s.action, s.task_id) for s in steps] == [
        (Action.REQUEUE, "sent.0"), (Action.LOSE, "ran.0"), (Action.LOSE, "killing.0")]


def test_reconcile_repeats_a_pending_kill_order() -> None:
    held = [task("k.0", TaskState.CANCELLING)]
    steps = reconcile.plan("p1", [spooled("k.0", player_pb2.SPOOL_STATE_STARTED)], {"k.0": held[0]}, held)
    assert [(s.action, s.task_id) for s in steps] == [(Action.KEEP_AND_CANCEL, "k.0")]
