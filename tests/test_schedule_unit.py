"""The pure rules of schedules: cron expressions (UTC, with an optional seconds field),
when a run is due, missed or on time, and what a listing says of the last run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.schedules import LATE_AFTER, check_cron, check_name, due, last_status, next_time
from conductor.store import ScheduleRecord
from orchestra.errors import ValidationError


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def record(next_at: float | None, cron: str = "*/15 * * * *", paused: bool = False) -> ScheduleRecord:
    return ScheduleRecord(name="nightly", owner={"kind": "user", "name": "ops"}, cron=cron, missed="skip",
                          overlap=False, paused=paused, kind="job", request=b"", created_at=0.0, next_at=next_at)


def test_five_fields_are_minutes_in_utc_and_a_sixth_leading_field_is_seconds() -> None:
    assert next_time("0 9 * * *", at("2026-03-29T08:59:59")) == at("2026-03-29T09:00:00")  # no DST in UTC
    assert next_time("*/15 * * * *", at("2026-01-01T10:00:00")) == at("2026-01-01T10:15:00")  # strictly after
    assert next_time("*/2 * * * * *", at("2026-01-01T10:00:00.5")) == at("2026-01-01T10:00:02")
    assert next_time("30 0 12 * * *", at("2026-01-01T00:00:00")) == at("2026-01-01T12:00:30")
    assert next_time("@hourly", at("2026-01-01T10:20:00")) == at("2026-01-01T11:00:00")


@pytest.mark.parametrize(("text", "message"), [
    ("", "needs a cron expression"),
    ("* * * *", "has 4 fields"),
    ("* * * * * * 2030", "has 7 fields"),
    ("61 * * * *", "invalid cron expression"),
    ("*/0 * * * *", "invalid cron expression"),
    ("0 0 30 2 *", "invalid cron expression"),  # 30 February never comes
    ("H * * * *", "invalid cron expression"),
    ("@reboot", "invalid cron expression"),
    ("* * * * \x1b[2J", "printable"),
])
def test_invalid_cron_expressions_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        check_cron(text)


def test_a_valid_expression_is_kept_with_its_fields_one_space_apart() -> None:
    assert check_cron("  */15   *  * * mon-fri ") == "*/15 * * * mon-fri"
    assert check_cron("@daily") == "@daily"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_valid_expression_or_a_validation_error(text: str) -> None:
    try:
        check_cron(text)
    except ValidationError:
        pass


@given(st.lists(st.sampled_from(["*", "*/5", "0", "1-5", "1,2", "jan", "mon"]), min_size=5, max_size=6))
def test_field_lists_from_the_usual_vocabulary_never_raise_anything_else(words: list[str]) -> None:
    try:
        check_cron(" ".join(words))
    except ValidationError:
        pass


@pytest.mark.parametrize("name", ["nightly", "db.backup-1", "a", "x" * 63])
def test_schedule_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Nightly", "-x", "a b", "x" * 64, "../etc"])
def test_bad_schedule_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid schedule name"):
        check_name(name)


def test_a_run_on_time_moves_on_to_the_time_after_the_one_it_was_due_at() -> None:
    due_at = at("2026-01-01T10:15:00")
    up = due_at - 3600
    assert due(record(due_at), due_at - 1, up) is None  # not yet
    assert due(record(None, paused=True), due_at + 1, up) is None
    run = due(record(due_at), due_at + 30, up)
    assert run is not None and not run.missed
    assert (run.fires.due_at, run.fires.next_at) == (due_at, at("2026-01-01T10:30:00"))


def test_a_run_due_before_the_conductor_came_up_was_missed_and_moves_on_past_now() -> None:
    due_at = at("2026-01-01T10:15:00")
    now = at("2026-01-01T11:07:00")  # three runs missed meanwhile
    run = due(record(due_at), now, up_since=now - 2)
    assert run is not None and "not running" in run.missed
    assert (run.fires.due_at, run.fires.next_at) == (due_at, at("2026-01-01T11:15:00"))
    # Even a run due a moment before the start was missed: the conductor was down then.
    assert due(record(due_at), due_at + 1, up_since=due_at + 0.5).missed  # type: ignore[union-attr]


def test_a_run_reached_too_late_while_up_is_missed_too() -> None:
    due_at = at("2026-01-01T10:15:00")
    run = due(record(due_at), due_at + LATE_AFTER + 5, up_since=due_at - 3600)
    assert run is not None and "late" in run.missed
    assert run.fires.next_at == at("2026-01-01T10:30:00")
    late_but_not_missed = due(record(due_at), due_at + LATE_AFTER - 5, up_since=due_at - 3600)
    assert late_but_not_missed is not None and not late_but_not_missed.missed


def test_last_status_says_refused_or_skipped_when_the_last_run_was_not_submitted() -> None:
    assert last_status("refused: by policy: no rule allows user:ops to run step", "ok") == "refused"
    assert last_status("skipped: the previous run 01ab is still running", "pending") == "skipped"
    assert last_status("", "failed") == "failed"
    assert last_status("", "") == ""
