"""Rollouts, score limits and groups as pure rules: the phase rule, the sliding window,
the fleet-wide and per-host limits, group expansion and drains."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor import rollout
from conductor.clusters import Clusters
from conductor.limits import Limits, Reservations
from conductor.rollout import CANARY, ROLLING, STOPPED, Rollouts, Standing, after_ending
from conductor.states import TaskState
from conductor.store import Drain, QueuedTask, ScoreRules
from orchestra.errors import ValidationError
from orchestra.joboptions import Amount, Rollout, parse_amount, parse_priority, resolve_rollout

OK, FAILED, LOST, EXPIRED = TaskState.OK, TaskState.FAILED, TaskState.LOST, TaskState.EXPIRED
JOB = "0" * 32


def task(number: int, player: str = "p", job: str = JOB) -> QueuedTask:
    return QueuedTask(f"{job}.{number}", "all", player, (), (), 2e9, 1.0, score="deploy")


# ---- the phase rule ---------------------------------------------------------------------

def test_the_canary_phase_ends_when_every_canary_succeeded() -> None:
    plan = Rollout(canary=2, batch=5)
    standing = Standing(CANARY, 2, 0)
    standing = after_ending(plan, standing, 0, OK)
    assert standing == Standing(CANARY, 1, 0)
    standing = after_ending(plan, standing, 1, OK)
    assert standing == Standing(ROLLING, 0, 0)


def test_any_canary_that_does_not_succeed_stops_the_rollout() -> None:
    plan = Rollout(canary=3)
    for ending in (FAILED, LOST, EXPIRED, TaskState.CANCELLED, TaskState.REMOVED):
        stopped = after_ending(plan, Standing(CANARY, 3, 0), 1, ending)
        assert stopped.phase == STOPPED and stopped.reason == f"canary task 1 ended {ending.value}"


def test_max_failures_stops_at_the_failure_that_reaches_it() -> None:
    plan = Rollout(batch=2, max_failures=2)
    standing = after_ending(plan, Standing(ROLLING, 0, 0), 4, FAILED)
    assert standing.phase == ROLLING and standing.failures == 1
    standing = after_ending(plan, standing, 5, OK)
    assert standing.failures == 1
    standing = after_ending(plan, standing, 6, TaskState.EXPIRED)  # not the score's failure
    assert standing.failures == 1
    standing = after_ending(plan, standing, 7, TaskState.TIMED_OUT)
    assert standing.phase == STOPPED and standing.reason == "2 tasks failed (max failures 2)"
    assert after_ending(plan, standing, 8, FAILED) == standing  # a stopped rollout stays as it is


def test_a_retry_reopens_with_a_fresh_failure_budget() -> None:
    assert rollout.after_retry(Rollout(canary=2, max_failures=1), 1) == Standing(CANARY, 1, 0)
    assert rollout.after_retry(Rollout(canary=2, max_failures=1), 0) == Standing(ROLLING, 0, 0)


@given(st.lists(st.sampled_from([OK, FAILED, LOST, EXPIRED, TaskState.TIMED_OUT]), max_size=40),
       st.integers(0, 5), st.one_of(st.none(), st.integers(1, 5)))
@settings(max_examples=200, deadline=None)
def test_the_rule_never_goes_back_and_counts_every_failure(endings: list[TaskState], canary: int,
                                                           max_failures: int | None) -> None:
    plan = Rollout(canary=canary, batch=3, max_failures=max_failures)
    standing = Standing(rollout.first_phase(plan), canary, 0)
    order = {CANARY: 0, ROLLING: 1, STOPPED: 2}
    for number, ending in enumerate(endings):
        after = after_ending(plan, standing, number, ending)
        assert order[after.phase] >= order[standing.phase]
        if standing.phase != STOPPED:
            assert after.failures == standing.failures + (ending.failure and 1)
        standing = after
    failed = sum(1 for e in endings if e.failure)
    if max_failures is not None and failed >= max_failures:
        assert standing.phase == STOPPED


# ---- the window ---------------------------------------------------------------------------

def connected(_: QueuedTask) -> bool:
    return True


def test_the_window_releases_the_next_task_as_each_ends() -> None:
    gates = Rollouts()
    gates.track(JOB, Rollout(batch=2), ROLLING)
    assert not any(gates.offer(task(n)) for n in range(5))
    first = gates.release(JOB, connected)
    assert [t.number for t in first] == [0, 1]
    assert gates.release(JOB, connected) == []  # the window is full
    gates.ended(JOB, first[0].task_id)
    assert [t.number for t in gates.release(JOB, connected)] == [2]  # sliding, not waves
    assert gates.offer(first[1])  # sent back (never started): released already, not held again


def test_only_canaries_are_released_until_they_succeed() -> None:
    gates = Rollouts()
    gates.track(JOB, Rollout(canary=1, batch=3), CANARY)
    for n in range(4):
        gates.offer(task(n))
    assert [t.number for t in gates.release(JOB, connected)] == [0]
    gates.ended(JOB, f"{JOB}.0")
    gates.moved(JOB, ROLLING)
    assert [t.number for t in gates.release(JOB, connected)] == [1, 2, 3]


def test_a_release_prefers_connected_targets_then_target_order() -> None:
    gates = Rollouts()
    gates.track(JOB, Rollout(batch=1), ROLLING)
    for n, player in enumerate(["away1", "away2", "here"]):
        gates.offer(task(n, player))
    assert [t.player for t in gates.release(JOB, lambda t: t.player == "here")] == ["here"]
    gates.ended(JOB, f"{JOB}.2")
    assert [t.player for t in gates.release(JOB, lambda t: False)] == ["away1"]


def test_a_stopped_rollout_releases_nothing_more() -> None:
    gates = Rollouts()
    gates.track(JOB, Rollout(batch=1, max_failures=1), ROLLING, in_flight=[f"{JOB}.0"])
    gates.offer(task(1))
    assert gates.release(JOB, connected) == []  # a restart: the task in flight fills the window
    gates.moved(JOB, STOPPED)
    assert not gates.gated(JOB) and gates.offer(task(2))  # untracked: nothing held any more


# ---- score limits ---------------------------------------------------------------------------

def test_concurrency_is_fleet_wide_and_exclusive_is_per_host() -> None:
    limits = Limits()
    limits.track("a" * 32, "deploy", ScoreRules(concurrency=2))
    limits.track("b" * 32, "deploy", ScoreRules(exclusive=True))
    pass_ = Reservations()
    assert limits.admits(task(0, "p1", "a" * 32), "p1", pass_)
    assert limits.admits(task(1, "p2", "a" * 32), "p2", pass_)
    assert not limits.admits(task(2, "p3", "a" * 32), "p3", pass_)  # two in this pass already
    limits.claimed(f"{'a' * 32}.0", "a" * 32, "p1")
    limits.claimed(f"{'a' * 32}.1", "a" * 32, "p2")
    fresh = Reservations()
    assert limits.fleet_full(task(2, "p3", "a" * 32), fresh)
    # exclusive: p1 runs deploy already (the other job's task counts: the limit is the score's)
    assert not limits.admits(task(0, "p1", "b" * 32), "p1", fresh)
    assert limits.admits(task(1, "p4", "b" * 32), "p4", fresh)
    assert limits.left(f"{'a' * 32}.0") == {"p3", "p1"}  # whoever waited is woken
    assert limits.in_flight("deploy") == 1
    assert limits.left("not-tracked") == set()


# ---- groups and drains ------------------------------------------------------------------------

ROSTER = ["web1", "web2", "db1", "db2"]


def test_groups_expand_to_the_players_they_match() -> None:
    clusters = Clusters({"web": ("web*",), "db": ("db1", "db9"), "none": ("x*",)})
    assert clusters.expand(["@web", "db2", "web1"], ROSTER) == ["web1", "web2", "db2"]
    assert clusters.members("db", ROSTER) == ["db1"]  # db9 is not a player
    with pytest.raises(ValidationError, match="no such group @nope"):
        clusters.expand(["@nope"], ROSTER)
    with pytest.raises(ValidationError, match="group @none matches no player"):
        clusters.expand(["@none"], ROSTER)


def test_drains_cover_hosts_by_name_or_by_group() -> None:
    clusters = Clusters({"web": ("web*",)})
    drains = [Drain("@web", 1.0, "user:ops", "patching"), Drain("web2", 2.0, "user:bob"), Drain("@gone", 3.0, "x")]
    covered = clusters.drained(drains, ROSTER)
    assert covered["web1"].name == "@web" and covered["web2"].name == "web2"  # its own first
    assert set(covered) == {"web1", "web2"}
    with pytest.raises(ValidationError, match="not in the players file: web9"):
        clusters.check_names(["web9"], ROSTER)


# ---- job options --------------------------------------------------------------------------------

def test_amounts_and_priorities() -> None:
    assert parse_amount("10%", "--batch") == Amount(10, True)
    assert Amount(10, True).of(5) == 1 and Amount(10, True).of(95) == 10 and Amount(3).of(100) == 3
    assert parse_amount("", "--batch") is None
    for bad in ("0", "-1", "ten", "101%", "0%", "1.5"):
        with pytest.raises(ValidationError):
            parse_amount(bad, "--batch")
    assert [parse_priority(p) for p in ("low", "normal", "HIGH", "-100", 100)] == [-10, 0, 10, -100, 100]
    with pytest.raises(ValidationError, match="out of range"):
        parse_priority("101")


def test_rollouts_are_for_all_of_jobs_and_need_other_targets_than_canaries() -> None:
    assert resolve_rollout(1, "50%", "", "all", 10) == Rollout(1, 5, None)
    with pytest.raises(ValidationError, match="all-of jobs only"):
        resolve_rollout(0, "2", "", "one", 10)
    with pytest.raises(ValidationError, match="leaves no other target"):
        resolve_rollout(3, "", "", "all", 3)
