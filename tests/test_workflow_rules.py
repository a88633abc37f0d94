"""The workflow's rules as pure functions: its shape, its templates and what runs next."""

from __future__ import annotations

import pytest

from conductor.store import StepRecord, WorkflowRecord
from conductor.workflows import Ref, check_steps, plan, references, step_job, substitute
from orchestra.errors import ValidationError
from orchestra.wire import audience_pb2


def step(name: str, *after: str, params: dict[str, str] | None = None,
         on_failure: str = "") -> audience_pb2.WorkflowStep:
    return audience_pb2.WorkflowStep(name=name, after=list(after), on_failure=on_failure,
                                     job=audience_pb2.SubmitRequest(score="s", targets=["h"], params=params or {}))


def test_references_name_params_responses_job_ids_and_the_workflow() -> None:
    assert references("v{{ params.VERSION }}-{{steps.build.response.ARTIFACT}} {{ steps.a.job_id }}"
                      "{{ workflow.id }}") == [Ref("param", key="VERSION"), Ref("response", "build", "ARTIFACT"),
                                               Ref("job_id", "a"), Ref("workflow_id")]
    assert references("plain") == []


@pytest.mark.parametrize("value", ["{{ steps.a.stdout }}", "{{ os.system }}", "{{ params.A }} }}", "{{ params",
                                   "{{ steps.A.job_id }}", "{{ params.A | shell }}"])
def test_a_malformed_template_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        references(value)


def test_substitution_is_plain_text_never_evaluated() -> None:
    filled = substitute("x={{ params.A }};{{ params.A }}", lambda ref: "$(rm -rf /) {{ params.B }}")
    assert filled == "x=$(rm -rf /) {{ params.B }};$(rm -rf /) {{ params.B }}"


def test_a_steps_job_has_every_workflow_param_filled_in_and_the_rest_left_for_its_start() -> None:
    params = {f"P{n}": f"v{n}" for n in range(40)}
    templates = {f"K{n}": f"x-{{{{ params.P{n} }}}}" for n in range(40)}
    later = {"FROM": "{{ steps.a.response.OUT }}", "PLAIN": "as is"}
    one = step("b", "a", params={**templates, **later})
    one.job.idempotency_key = "mine"
    job = step_job(one, params)
    assert dict(job.params) == {**{f"K{n}": f"x-v{n}" for n in range(40)}, **later}
    assert job.idempotency_key == "" and one.job.idempotency_key == "mine"  # the step itself untouched
    assert one.job.params["K0"] == "x-{{ params.P0 }}"


def test_a_valid_workflow_passes() -> None:
    check_steps([step("build"), step("test", "build", params={"A": "{{ steps.build.response.X }}"}),
                 step("deploy", "test", params={"B": "{{ steps.build.job_id }}", "V": "{{ params.V }}"})],
                {"V": "1"})


@pytest.mark.parametrize(("steps", "message"), [
    ([], "at least one step"),
    ([step("a"), step("a")], "given twice"),
    ([step("Bad Name")], "invalid step name"),
    ([step("a", "nope")], "not a step"),
    ([step("a", "a")], "after itself"),
    ([step("a", "c"), step("b", "a"), step("c", "b"), step("d")], "a, b, c depend on each other in a cycle"),
    ([step("a", on_failure="ignore")], "on_failure"),
    ([step("a"), step("b", params={"X": "{{ steps.a.response.K }}"})], "does not come after"),
    ([step("a", params={"X": "{{ params.MISSING }}"})], "no workflow param MISSING"),
    ([step("a", params={"X": "{{ shell }}"})], "unknown template"),
])
def test_a_bad_workflow_is_refused_naming_the_step(steps: list[audience_pb2.WorkflowStep], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_steps(steps, {})


def record(steps: list[StepRecord], cancelled: bool = False) -> WorkflowRecord:
    return WorkflowRecord("w" + "0" * 32, "", {}, {}, "user:a", {}, 1.0, None, "pending", "", cancelled, "",
                          tuple(steps))


def srec(name: str, state: str = "waiting", *after: str, on_failure: str = "stop", job: str | None = None,
         job_status: str | None = None, job_finished_at: float | None = None) -> StepRecord:
    return StepRecord(name, after, on_failure, b"", state, "", job, None, None, job_status, job_finished_at)


def test_first_steps_start_and_the_rest_wait() -> None:
    moves = plan(record([srec("a"), srec("b"), srec("c", "waiting", "a", "b")]), 5.0)
    assert moves.start == ("a", "b") and moves.settle == () and moves.finished is None


def test_a_step_starts_once_every_step_it_comes_after_ended_ok() -> None:
    flow = record([srec("a", "running", job="j1", job_status="ok", job_finished_at=3.0),
                   srec("b", "running", job="j2", job_status="pending"), srec("c", "waiting", "a", "b")])
    moves = plan(flow, 5.0)
    assert [(s.name, s.state, s.finished_at) for s in moves.settle] == [("a", "ok", 3.0)]
    assert moves.start == ()


def test_a_failed_step_that_stops_skips_every_waiting_step() -> None:
    flow = record([srec("a", "running", job="j1", job_status="failed", job_finished_at=3.0),
                   srec("b", "waiting", "a"), srec("c")])
    moves = plan(flow, 5.0)
    assert [(s.name, s.state) for s in moves.settle] == [("a", "failed"), ("b", "skipped"), ("c", "skipped")]
    assert moves.finished == ("failed", "step a failed; the workflow stopped")


def test_a_failed_step_that_continues_lets_the_next_steps_run() -> None:
    flow = record([srec("a", "running", on_failure="continue", job="j1", job_status="partial_fail",
                        job_finished_at=3.0), srec("b", "waiting", "a")])
    moves = plan(flow, 5.0)
    assert moves.start == ("b",) and moves.finished is None
    done = record([srec("a", "partial_fail", on_failure="continue"), srec("b", "ok", "a")])
    assert plan(done, 6.0).finished == ("failed", "step a failed")


def test_after_a_skipped_step_a_step_is_skipped_too() -> None:
    flow = record([srec("a", "skipped"), srec("b", "waiting", "a"), srec("c", "waiting", "b")])
    assert [(s.name, s.state) for s in plan(flow, 5.0).settle] == [("b", "skipped"), ("c", "skipped")]


def test_a_cancelled_workflow_starts_nothing_and_ends_cancelled_once_its_steps_ended() -> None:
    flow = record([srec("a", "running", job="j1", job_status="pending"), srec("b", "waiting", "a")], cancelled=True)
    moves = plan(flow, 5.0)
    assert [(s.name, s.state) for s in moves.settle] == [("b", "cancelled")] and moves.finished is None
    ended = record([srec("a", "running", job="j1", job_status="failed", job_finished_at=4.0),
                    srec("b", "cancelled", "a")], cancelled=True)
    assert plan(ended, 5.0).finished is not None and plan(ended, 5.0).finished[0] == "cancelled"  # type: ignore[index]


def test_every_step_ok_is_an_ok_workflow_and_a_deleted_job_fails_its_step() -> None:
    assert plan(record([srec("a", "ok"), srec("b", "ok", "a")]), 1.0).finished == ("ok", "")
    gone = plan(record([srec("a", "running", job="j1")]), 1.0)
    assert gone.settle[0].state == "failed" and "deleted" in gone.settle[0].reason
