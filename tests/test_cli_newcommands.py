"""retryjob, deletejob, drain/undrain, and what getstatus, listplayers and listjobs show of
names, labels, priorities, rollouts, retries and drains: in-process, against fake clients
that answer as the conductor does. The commands against real daemons are tested elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from audience import completion, deletejob, drain, listjobs, listplayers, progress, render, retryjob, waiting
from audience.client import Client
from orchestra.cli import UNSAFE
from orchestra.config import AudienceConfig
from orchestra.errors import (
    POLICY_REFUSAL, ExitCode, NoSuchJobError, OrchestraError, PolicyDenied, ValidationError,
)
from orchestra.outcome import TaskOutcome
from orchestra.wire import audience_pb2, common_pb2

JOB_ID = "0123456789abcdef0123456789abcdef"
ESC = "\x1b[2J"
T0 = 1_790_000_000.0

# The keys getstatus --json had before: each must stay exactly as it was.
OLD_JOB_KEYS = ["job_id", "score", "scope", "targets", "params", "requester", "created_at",
                "deadline_at", "finished_at", "finished", "status", "tasks"]
OLD_TASK_KEYS = ["task_id", "player", "state", "attempt", "dispatched_at", "exit_code", "signal",
                 "response", "response_truncated", "stdout", "stderr", "stdout_truncated",
                 "stderr_truncated", "reason", "started_at", "finished_at"]
OUTCOME_KEYS = list(TaskOutcome().to_json())


def rolled_out_job() -> audience_pb2.Job:
    """A job with every new field: a stopped rollout, a retried task, a skipped one."""
    failed = TaskOutcome(exit_code=1, reason="", started_at=T0 + 1, finished_at=T0 + 2).to_wire()
    lost = TaskOutcome(reason="player gone", started_at=T0 + 3).to_wire()
    retried = audience_pb2.Task(
        task_id=f"{JOB_ID}.1", player="web1.test", state=common_pb2.TASK_STATE_QUEUED, attempt=3,
        retries=2, not_before=T0 + 60,
        history=[audience_pb2.Attempt(attempt=1, player="web1.test", state=common_pb2.TASK_STATE_FAILED,
                                      outcome=failed),
                 audience_pb2.Attempt(attempt=2, player="", state=common_pb2.TASK_STATE_LOST,
                                      outcome=lost)])
    skipped = audience_pb2.Task(task_id=f"{JOB_ID}.2", player="web2.test",
                                state=common_pb2.TASK_STATE_SKIPPED, attempt=1,
                                outcome=TaskOutcome(reason="rollout stopped").to_wire())
    return audience_pb2.Job(
        job_id=JOB_ID, score="deploy", scope=audience_pb2.SCOPE_ALL_OF,
        targets=["web1.test", "web2.test"], requester="user:alice", created_at=T0,
        deadline_at=T0 + 3600, status="pending", tasks=[retried, skipped], name="deploy 2.1",
        labels={"team": "web", "change": "CHG-1"}, priority=10,
        rollout=audience_pb2.Rollout(canary=1, batch=5, has_max_failures=True, max_failures=0,
                                     phase="stopped", phase_reason="canary failed", failures=1),
        retries=2, retry_delay=30.0, concurrency=4, exclusive=True)


# ---- getstatus --json ---------------------------------------------------------------------------

def test_json_keeps_every_old_key_in_order_and_adds_the_new_ones() -> None:
    shown = render.job_dict(rolled_out_job())
    assert [key for key in shown if key in OLD_JOB_KEYS] == OLD_JOB_KEYS
    assert list(shown) == [*OLD_JOB_KEYS[:-1], "name", "labels", "priority", "rollout", "retries",
                           "retry_delay", "concurrency", "exclusive", "workflow_id", "step", "tasks"]
    task = shown["tasks"][0]
    assert [key for key in task if key in OLD_TASK_KEYS] == OLD_TASK_KEYS
    assert list(task) == [*OLD_TASK_KEYS, "retries", "not_before", "history"]


def test_json_of_a_job_with_a_rollout_retries_and_a_skipped_task() -> None:
    shown = json.loads(render.job_json(rolled_out_job()))
    assert {key: shown[key] for key in ("name", "labels", "priority", "rollout", "retries",
                                        "retry_delay", "concurrency", "exclusive")} == {
        "name": "deploy 2.1", "labels": {"change": "CHG-1", "team": "web"}, "priority": 10,
        "rollout": {"canary": 1, "batch": 5, "max_failures": 0, "phase": "stopped",
                    "phase_reason": "canary failed", "failures": 1},
        "retries": 2, "retry_delay": 30.0, "concurrency": 4, "exclusive": True}
    retried, skipped = shown["tasks"]
    assert (retried["retries"], retried["not_before"]) == (2, "2026-09-21T14:14:20.000Z")
    assert [list(attempt) for attempt in retried["history"]] == [
        ["attempt", "player", "state", *OUTCOME_KEYS]] * 2
    first, second = retried["history"]
    assert (first["attempt"], first["player"], first["state"], first["exit_code"], first["finished_at"]) == (
        1, "web1.test", "failed", 1, "2026-09-21T14:13:22.000Z")
    assert (second["attempt"], second["player"], second["state"], second["exit_code"], second["reason"]) == (
        2, None, "lost", None, "player gone")
    assert (skipped["state"], skipped["retries"], skipped["not_before"], skipped["history"]) == (
        "skipped", 0, None, [])


def test_json_of_a_plain_job_has_null_name_and_rollout() -> None:
    shown = render.job_dict(audience_pb2.Job(job_id=JOB_ID, tasks=[audience_pb2.Task()]))
    assert (shown["name"], shown["labels"], shown["priority"], shown["rollout"]) == (None, {}, 0, None)
    assert (shown["retries"], shown["retry_delay"], shown["concurrency"], shown["exclusive"]) == (0, 0.0, 0, False)
    assert shown["tasks"][0]["history"] == [] and shown["tasks"][0]["not_before"] is None


def test_json_max_failures_is_null_unless_the_rollout_has_one() -> None:
    job = audience_pb2.Job(rollout=audience_pb2.Rollout(batch=3, phase="rolling"))
    assert render.job_dict(job)["rollout"] == {"canary": 0, "batch": 3, "max_failures": None,
                                               "phase": "rolling", "phase_reason": "", "failures": 0}


# ---- getstatus, human text ------------------------------------------------------------------------

def test_text_shows_name_labels_priority_rollout_settings_retries_and_earlier_attempts() -> None:
    text = render.job_text(rolled_out_job())
    lines = text.splitlines()
    assert lines[:4] == [f"job        {JOB_ID}", "name       deploy 2.1",
                         "score      deploy (all-of: web1.test web2.test)", "params     -"]
    assert "labels     change=CHG-1 team=web" in lines
    assert "priority   10 (high)" in lines
    assert "rollout    canary 1, batch 5, max failures 0: stopped (canary failed), 1 failure" in lines
    assert "settings   retries 2 (30s apart), concurrency 4, exclusive" in lines
    assert "  web1.test                queued     retried 2 times" in lines
    assert "    retry waits until 2026-09-21T14:14:20.000Z" in lines
    assert "    attempt 1 on web1.test: failed, exit 1, 1.00s" in lines
    assert "    attempt 2: lost (player gone)" in lines
    assert "  web2.test                skipped" in lines
    assert "status     pending   (1 queued, 1 skipped)" in lines


def test_text_of_a_plain_job_is_as_it_was() -> None:
    job = audience_pb2.Job(job_id=JOB_ID, score="hello", scope=audience_pb2.SCOPE_ALL_OF,
                           targets=["p1.test"], requester="r", status="ok", finished=True,
                           tasks=[audience_pb2.Task(player="p1.test", state=common_pb2.TASK_STATE_OK)])
    assert [line.split()[0] for line in render.job_text(job).splitlines()] == [
        "job", "score", "params", "requester", "created", "status", "p1.test"]


@pytest.mark.parametrize("priority, shown", [(-10, "-10 (low)"), (3, "3"), (100, "100")])
def test_priority_is_shown_with_its_name_when_it_has_one(priority: int, shown: str) -> None:
    assert render.priority_text(priority) == shown
    assert f"priority   {shown}" in render.job_text(audience_pb2.Job(priority=priority))


def test_text_shows_what_users_and_the_conductor_wrote_as_escapes() -> None:
    job = rolled_out_job()
    job.name = f"n{ESC}"
    job.labels["k"] = f"v{ESC}\nforged"
    job.rollout.phase_reason = f"r{ESC}"
    job.tasks[0].history[0].player = f"p{ESC}"
    job.tasks[0].history[1].outcome.reason = f"gone{ESC}\nforged"
    text = render.job_text(job)
    assert not any(ord(char) in UNSAFE - {ord("\n")} for char in text)
    assert len(text.splitlines()) == len(render.job_text(rolled_out_job()).splitlines())
    assert "n\\x1b[2J" in text and "k=v\\x1b[2J\\nforged" in text and "attempt 1 on p\\x1b[2J" in text


def test_a_skipped_task_has_ended_for_the_progress_line() -> None:
    update = audience_pb2.JobProgress(total=3, created_at=T0, counts=[
        audience_pb2.TaskCount(state=common_pb2.TASK_STATE_OK, count=1),
        audience_pb2.TaskCount(state=common_pb2.TASK_STATE_SKIPPED, count=2)])
    assert progress.summary(update, T0 + 5).startswith("[3/3] 1 ok, 2 skipped")


# ---- the client: refusals are exit 2 with the conductor's reason --------------------------------

class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, metadata: tuple[Any, ...] = ()) -> None:
        self._code, self._details, self._metadata = code, details, metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._metadata


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    made = Client(AudienceConfig(path=None, socket=tmp_path / "none.sock", conductor="",
                                 conductor_name="", tls=None))
    yield made
    made.close()


@pytest.mark.parametrize("code, metadata, error, exit_code", [
    (grpc.StatusCode.FAILED_PRECONDITION, (), ValidationError, ExitCode.USAGE),
    (grpc.StatusCode.INVALID_ARGUMENT, (), ValidationError, ExitCode.USAGE),
    (grpc.StatusCode.PERMISSION_DENIED, (POLICY_REFUSAL,), PolicyDenied, ExitCode.USAGE),
    (grpc.StatusCode.NOT_FOUND, (), NoSuchJobError, ExitCode.NO_SUCH_JOB),
])
def test_refusals_map_to_their_exit_codes_with_the_conductors_reason(
        client: Client, code: grpc.StatusCode, metadata: tuple[Any, ...], error: type[OrchestraError],
        exit_code: ExitCode) -> None:
    translated = client.translate(FakeRpcError(code, "job 0123 is not finished", metadata))
    assert isinstance(translated, error) and translated.exit_code == exit_code
    assert "job 0123 is not finished" in str(translated)


def test_the_new_rpcs_send_what_they_are_given(client: Client) -> None:
    sent: dict[str, Any] = {}

    def answer(name: str, reply: Any) -> Callable[..., Any]:
        def call(request: Any, timeout: float) -> Any:
            sent[name] = request
            return reply
        return call
    client.stub = SimpleNamespace(  # type: ignore[assignment]
        Retry=answer("retry", audience_pb2.RetryReply(task_ids=["t"])),
        Delete=answer("delete", audience_pb2.DeleteReply(job_id=JOB_ID)),
        Drain=answer("drain", audience_pb2.DrainReply(names=["@web"])),
        ListPlayers=answer("players", audience_pb2.PlayerList()))
    client.retry(JOB_ID, [common_pb2.TASK_STATE_LOST])
    client.delete(JOB_ID)
    client.drain(["@web", "p1.test"], False, "kernel")
    client.players(["@web"])
    assert sent["retry"] == audience_pb2.RetryRequest(job_id=JOB_ID, states=[common_pb2.TASK_STATE_LOST])
    assert sent["delete"] == audience_pb2.JobRef(job_id=JOB_ID)
    assert sent["drain"] == audience_pb2.DrainRequest(names=["@web", "p1.test"], undrain=False, reason="kernel")
    assert sent["players"] == audience_pb2.ListPlayersRequest(targets=["@web"])


# ---- retryjob -----------------------------------------------------------------------------------

def retry_args(*argv: str) -> Any:
    return retryjob.build_parser().parse_args([*argv, JOB_ID])


@pytest.mark.parametrize("flags, states", [
    ([], [common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_TIMED_OUT]),
    (["--failed"], [common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_TIMED_OUT]),
    (["--lost"], [common_pb2.TASK_STATE_LOST]),
    (["--expired", "--skipped"], [common_pb2.TASK_STATE_EXPIRED, common_pb2.TASK_STATE_SKIPPED]),
    (["--skipped", "--failed", "--lost"], [common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_TIMED_OUT,
                                           common_pb2.TASK_STATE_LOST, common_pb2.TASK_STATE_SKIPPED]),
])
def test_retryjob_flags_name_the_states_to_retry(flags: list[str], states: list[int]) -> None:
    assert retryjob.states_of(retry_args(*flags)) == states


class FakeClient:
    """Answers as the conductor would, and remembers what it was asked."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer(*args) if callable(answer) else answer
        return call


def test_retryjob_prints_the_job_id_and_says_how_many_tasks_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient(retry=audience_pb2.RetryReply(task_ids=[f"{JOB_ID}.1", f"{JOB_ID}.3"]))
    assert retryjob.retry(client, retry_args("--lost")) == 0  # type: ignore[arg-type]
    assert client.calls == [("retry", (JOB_ID, [common_pb2.TASK_STATE_LOST]))]
    assert capsys.readouterr() == (f"{JOB_ID}\n", f"retryjob: retrying 2 tasks of {JOB_ID}\n")
    assert retryjob.retry(client, retry_args("--json")) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert json.loads(out) == {"job_id": JOB_ID, "retried": [f"{JOB_ID}.1", f"{JOB_ID}.3"]}
    assert err == f"retryjob: retrying 2 tasks of {JOB_ID}\n"


def test_retryjob_with_nothing_to_retry_exits_2() -> None:
    client = FakeClient(retry=audience_pb2.RetryReply())
    with pytest.raises(ValidationError) as caught:
        retryjob.retry(client, retry_args("--expired"))  # type: ignore[arg-type]
    assert str(caught.value) == f"nothing to retry: no task of job {JOB_ID} is expired"
    assert caught.value.exit_code == ExitCode.USAGE


def test_retryjob_wait_then_shows_the_job_as_getstatus(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    finished = audience_pb2.Job(job_id=JOB_ID, finished=True, status="failed")
    client = FakeClient(retry=audience_pb2.RetryReply(task_ids=["t"]), wait=lambda *_: finished)
    assert retryjob.retry(client, retry_args("--wait", "--timeout", "5")) == 1  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out.startswith(f"{JOB_ID}\njob        {JOB_ID}\n") and err == f"retryjob: retrying 1 task of {JOB_ID}\n"
    assert client.calls[1] == ("wait", (JOB_ID, 5.0))
    assert retryjob.retry(client, retry_args("--wait", "--json")) == 1  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["status"] == "failed"  # one object: the job's


@pytest.mark.parametrize("module, argv, message", [
    (retryjob, ["nope"], "invalid job id 'nope'"),
    (retryjob, ["--timeout", "3", JOB_ID], "--timeout needs --wait"),
    (retryjob, [JOB_ID, "--all"], "unrecognized arguments: --all"),
    (deletejob, ["NOPE"], "invalid job id 'NOPE'"),
    (deletejob, ["--timeout", "3", JOB_ID], "--timeout needs --cancel"),
    (deletejob, ["--cancel", "--timeout", "0", JOB_ID], "must be a positive number of seconds"),
    (drain, ["a/b"], "invalid host name 'a/b'"),
    (drain, ["@"], "invalid group name '@'"),
    (drain, [], "the following arguments are required: NAME|@GROUP"),
])
def test_bad_command_lines_are_one_line_exit_2_before_dialling(
        module: Any, argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A client that answers nothing: the command must refuse before it asks.
    monkeypatch.setattr(module, "with_client", lambda _config, body: body(FakeClient()))
    assert module.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_undrain_takes_no_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert drain.main_undrain(["--reason", "x", "p1.test"]) == 2
    assert "unrecognized arguments: --reason" in capsys.readouterr().err
    assert drain.build_parser(True).prog == "undrain" and drain.build_parser().prog == "drain"


# ---- deletejob ----------------------------------------------------------------------------------

def delete_args(*argv: str) -> Any:
    return deletejob.build_parser().parse_args([*argv, JOB_ID])


def test_deletejob_deletes_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient(delete=audience_pb2.DeleteReply(job_id=JOB_ID))
    assert deletejob.delete(client, delete_args()) == 0  # type: ignore[arg-type]
    assert client.calls == [("delete", (JOB_ID,))]
    assert capsys.readouterr().out == f"deleted {JOB_ID}\n"
    assert deletejob.delete(client, delete_args("--json")) == 0  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out) == {"job_id": JOB_ID, "deleted": True}


def test_deletejob_passes_on_the_conductors_refusal_of_an_unfinished_job() -> None:
    refusal = ValidationError(f"job {JOB_ID} is not finished: cancel it first (deletejob --cancel)")
    with pytest.raises(ValidationError, match="is not finished"):
        deletejob.delete(FakeClient(delete=refusal), delete_args())  # type: ignore[arg-type]


def test_deletejob_cancel_waits_for_the_job_then_deletes_it(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    running = audience_pb2.Job(job_id=JOB_ID, finished=False)
    ended = audience_pb2.Job(job_id=JOB_ID, finished=True, status="failed")
    client = FakeClient(cancel=running, delete=audience_pb2.DeleteReply(job_id=JOB_ID))
    monkeypatch.setattr(waiting, "wait", lambda _client, job_id, timeout, as_json: ended)
    assert deletejob.delete(client, delete_args("--cancel", "--timeout", "9")) == 0  # type: ignore[arg-type]
    assert [name for name, _ in client.calls] == ["cancel", "delete"]
    assert capsys.readouterr().out == f"deleted {JOB_ID}\n"


def test_deletejob_cancel_that_times_out_exits_3_and_deletes_nothing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    running = audience_pb2.Job(job_id=JOB_ID, finished=False)
    client = FakeClient(cancel=running)
    monkeypatch.setattr(waiting, "wait", lambda *_: running)
    assert deletejob.delete(client, delete_args("--cancel", "--timeout", "1")) == 3  # type: ignore[arg-type]
    assert [name for name, _ in client.calls] == ["cancel"]
    out, err = capsys.readouterr()
    assert out == "" and err == (f"deletejob: job {JOB_ID} is cancelled, but its tasks have not all"
                                 " ended yet (--timeout passed): not deleted\n")


# ---- drain and undrain ----------------------------------------------------------------------------

def run_drain(monkeypatch: pytest.MonkeyPatch, client: FakeClient, argv: list[str], undrain: bool = False) -> int:
    monkeypatch.setattr(drain, "with_client", lambda _config, body: body(client))
    return drain.main_undrain(argv) if undrain else drain.main(argv)


def test_drain_sends_the_names_and_reason_and_prints_what_is_drained_now(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient(drain=audience_pb2.DrainReply(names=["@db", "web1.test"],
                                                      hosts=["db1.test", "db2.test", "web1.test"]))
    assert run_drain(monkeypatch, client, ["web1.test", "@db", "web1.test", "--reason", "kernel"]) == 0
    assert client.calls == [("drain", (["web1.test", "@db"], False, "kernel"))]
    assert capsys.readouterr().out == "drained: @db web1.test\nhosts:   db1.test db2.test web1.test\n"
    assert run_drain(monkeypatch, client, ["--json", "@db"]) == 0
    assert json.loads(capsys.readouterr().out) == {"drained": ["@db", "web1.test"],
                                                   "hosts": ["db1.test", "db2.test", "web1.test"]}


def test_undrain_sends_undrain_and_prints_what_stays_drained(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient(drain=audience_pb2.DrainReply())
    assert run_drain(monkeypatch, client, ["@db"], undrain=True) == 0
    assert client.calls == [("drain", (["@db"], True, ""))]
    assert capsys.readouterr().out == "drained: -\nhosts:   -\n"


@pytest.mark.parametrize("refusal", [ValidationError("unknown group @nope"),
                                     NoSuchJobError("no such player nope.test"),
                                     PolicyDenied("denied: drain is not allowed")])
def test_drain_refused_exits_2_with_the_conductors_reason(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], refusal: OrchestraError) -> None:
    assert run_drain(monkeypatch, FakeClient(drain=refusal), ["nope.test"]) == 2
    assert capsys.readouterr().err == f"drain: {refusal}\n"


def test_drain_reply_shows_names_as_escapes() -> None:
    text = drain.reply_text(audience_pb2.DrainReply(names=[f"a{ESC}"], hosts=[f"b{ESC}"]), False)
    assert "\x1b" not in text and "a\\x1b[2J" in text


# ---- listplayers --------------------------------------------------------------------------------

def players_reply() -> audience_pb2.PlayerList:
    return audience_pb2.PlayerList(players=[
        audience_pb2.PlayerInfo(name="web1.test", connected=True, drained="@web", drained_reason="kernel"),
        audience_pb2.PlayerInfo(name="web2.test", connected=False, drained="web2.test"),
        audience_pb2.PlayerInfo(name="db1.test", connected=True)])


def test_listplayers_shows_drained_players(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient(players=players_reply())
    assert listplayers.show(client, False, ["@web", "db1.test"]) == 0  # type: ignore[arg-type]
    assert client.calls == [("players", (["@web", "db1.test"],))]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["web1.test", "drained"]
    assert "    drained: by @web: kernel" in lines
    assert lines[lines.index("    drained: by @web: kernel") + 1].split()[:2] == ["web2.test", "offline"]
    assert "    drained: by web2.test" in lines
    assert lines[-2].split()[:2] == ["db1.test", "connected"]


def test_listplayers_json_has_drained_and_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert listplayers.show(FakeClient(players=players_reply()), True) == 0  # type: ignore[arg-type]
    players = json.loads(capsys.readouterr().out)["players"]
    assert [(p["drained"], p["drained_reason"]) for p in players] == [
        ("@web", "kernel"), ("web2.test", ""), (None, "")]


def test_listplayers_refuses_a_bad_name_before_dialling(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(listplayers, "with_client", lambda *_: pytest.fail("dialled the conductor"))
    assert listplayers.main(["@bad/group"]) == 2
    assert capsys.readouterr().err.startswith("listplayers: invalid group name '@bad/group'")


# ---- listjobs -----------------------------------------------------------------------------------

def test_listjobs_sends_name_labels_and_a_group_target() -> None:
    args = listjobs.build_parser().parse_args(["--name", "deploy 2.1", "--label", "team=web",
                                               "--label", "change=CHG-1", "--target", "@web"])
    request = listjobs.request_of(args)
    assert (request.name, list(request.labels), request.target) == (
        "deploy 2.1", ["team=web", "change=CHG-1"], "@web")


@pytest.mark.parametrize("argv, message", [
    (["--label", "team"], "a label is KEY=VALUE, not 'team'"),
    (["--label", "a=1", "--label", "a=2"], "label a given twice"),
    (["--name", "a\nb"], "job name must be printable"),
])
def test_listjobs_refuses_bad_filters_before_dialling(argv: list[str], message: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(listjobs, "with_client", lambda *_: pytest.fail("dialled the conductor"))
    assert listjobs.main(argv) == 2
    assert message in capsys.readouterr().err


def summaries(*names: str) -> audience_pb2.JobList:
    return audience_pb2.JobList(jobs=[audience_pb2.JobSummary(
        job_id=f"{index:032x}", score="deploy", scope=audience_pb2.SCOPE_ALL_OF, target_count=2,
        requester="user:alice", created_at=T0, status="pending", name=name,
        labels={"team": "web"} if name else {}, priority=10 if name else 0,
        phase="canary" if name else "") for index, name in enumerate(names)])


def listed(capsys: pytest.CaptureFixture[str], reply: audience_pb2.JobList, *argv: str) -> str:
    args = listjobs.build_parser().parse_args(list(argv))
    assert listjobs.show(FakeClient(jobs=reply), args) == 0  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_listjobs_shows_a_name_column_only_when_a_job_has_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    plain = listed(capsys, summaries("", "")).splitlines()
    assert plain[0].split() == ["JOB", "AGE", "REQUESTER", "SCORE", "SCOPE", "TASKS", "STATUS"]
    named = listed(capsys, summaries("deploy 2.1", "", "x" * 100)).splitlines()
    assert named[0].split() == ["JOB", "AGE", "REQUESTER", "NAME", "SCORE", "SCOPE", "TASKS", "STATUS"]
    assert "deploy 2.1" in named[1] and named[1].endswith("pending (canary)")
    assert named[2].split()[3] == "-" and named[2].endswith("pending")
    assert "x" * 31 + "…" in named[3] and "x" * 32 not in named[3]


def test_listjobs_json_rows_have_name_labels_priority_and_phase(capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(listed(capsys, summaries("deploy 2.1", ""), "--json"))["jobs"]
    assert [(r["name"], r["labels"], r["priority"], r["phase"]) for r in rows] == [
        ("deploy 2.1", {"team": "web"}, 10, "canary"), (None, {}, 0, None)]
    assert list(rows[0])[:10] == ["job_id", "score", "scope", "target_count", "targets", "requester",
                                  "created_at", "finished_at", "status", "counts"]


# ---- tab completion of the new options -------------------------------------------------------------

def test_completers_of_the_new_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    decls = [common_pb2.ParamDecl(name="TOKEN"), common_pb2.ParamDecl(name="WHO")]
    players = [audience_pb2.PlayerInfo(name="web1.test", drained="@web", scores=[
        common_pb2.ScoreInfo(name="deploy", valid=True, params=decls)]),
        audience_pb2.PlayerInfo(name="web2.test", drained="web2.test")]
    monkeypatch.setattr(completion, "_players", lambda _args: players)
    args = SimpleNamespace(score="deploy", words=[])
    assert completion.priorities(prefix="") == ["high", "low", "normal"]
    assert completion.priorities(prefix="h") == ["high"]
    assert completion.param_files(prefix="t", parsed_args=args) == ["token="]
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert completion.param_files(prefix=f"token={tmp_path}/s", parsed_args=args) == [
        f"token={tmp_path}/secret.txt", f"token={tmp_path}/sub/"]
    monkeypatch.setenv("ORC_TEST_COMPLETE_ME", "1")
    assert completion.param_envs(prefix="WHO=ORC_TEST_COMPLETE", parsed_args=args) == [
        "WHO=ORC_TEST_COMPLETE_ME"]
    assert completion.param_envs(prefix="", parsed_args=args) == ["token=", "who="]
    assert completion.drained(prefix="", parsed_args=args) == ["@web", "web2.test"]
    assert completion.drained(prefix="@", parsed_args=args) == ["@web"]
