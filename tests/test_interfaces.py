"""Score interfaces (player/interfaces.py): the json interface's parsing, the runner with
each built-in on real processes, and a json score end to end through real daemons."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.outcome import TaskOutcome
from orchestra.wire import player_pb2
from player import interfaces, runner
from player.interfaces import JsonInterface, Response, parse_json_object, parse_pairs
from player.scores import Score, ScoreConf, parse_conf
from tests.conftest import MakeCluster, job_json

LIMITS = runner.Limits(default_timeout=30, kill_grace=0.5, output_tail_bytes=4096,
                       max_output_bytes=1 << 20, response_max_bytes=1024)


# ---- the json interface's response, directly ---------------------------------------------


def test_a_json_object_becomes_the_response_strings_as_they_are_the_rest_as_compact_json() -> None:
    stdout = json.dumps({"greeting": "héllo\nworld", "count": 3, "ratio": 0.1, "ok": True, "none": None,
                         "list": [1, "two", {"three": 3}], "nested": {"a": {"b": []}}, "": "empty key"},
                        indent=4).encode()
    assert parse_json_object(stdout, False) == Response({
        "greeting": "héllo\nworld", "count": "3", "ratio": "0.1", "ok": "true", "none": "null",
        "list": '[1,"two",{"three":3}]', "nested": '{"a":{"b":[]}}', "": "empty key"})


@pytest.mark.parametrize("stdout, reason", [
    (b"", "stdout is empty: the json interface needs one JSON object"),
    (b"  \n\t", "stdout is empty: the json interface needs one JSON object"),
    (b"[1, 2]", "stdout is a JSON array, not an object"),
    (b'"text"', "stdout is a JSON string, not an object"),
    (b"42", "stdout is a JSON number, not an object"),
    (b"null", "stdout is a JSON null, not an object"),
    (b"true", "stdout is a JSON boolean, not an object"),
    (b"starting...\n{}", "stdout is not a JSON object: Expecting value at line 1 column 1"),
    (b'{"a": 1}\n{"b": 2}\n', "stdout is not a JSON object: Extra data at line 2 column 1"),
    (b'{"a": 1', "stdout is not a JSON object: Expecting ',' delimiter at line 1 column 8"),
    (b'{"a": NaN}', "stdout is not a JSON object: NaN is not JSON"),
    (b'{"a": -Infinity}', "stdout is not a JSON object: -Infinity is not JSON"),
    (b'{"a": "\xff"}', "stdout is not UTF-8 (byte 7), so not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "stdout is not a JSON object this player can read: it is nested too deeply"),
])
def test_anything_but_one_json_object_is_refused_with_one_line_saying_why(stdout: bytes, reason: str) -> None:
    response = parse_json_object(stdout, False)
    assert response == Response(error=reason)
    assert "\n" not in response.error


def test_a_json_response_larger_than_the_limit_is_refused_not_cut() -> None:
    response = parse_json_object(b'{"a": "' + b"x" * 100, True)
    assert response.truncated and response.pairs == {}
    assert response.error == ("stdout is larger than response_max_bytes (107 bytes) and cannot be read"
                              " as one JSON object")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(), inner, max_size=3), max_leaves=10)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_every_json_object_is_read_back_value_for_value(obj: dict[str, Any]) -> None:
    response = parse_json_object(json.dumps(obj).encode(), False)
    assert response.error == "" and set(response.pairs) == set(obj)
    for key, value in obj.items():
        text = response.pairs[key]
        assert text == value if isinstance(value, str) else json.loads(text) == value


def test_json_params_are_one_line_of_sorted_upper_case_keys_with_string_values() -> None:
    data = JsonInterface().stdin({"WHO": "ops", "MESSAGE": "a \"quoted\"\nline", "CITY": "Zürich"})
    assert data is not None and data.endswith(b"\n") and data.count(b"\n") == 1
    assert data.decode() == '{"CITY":"Zürich","MESSAGE":"a \\"quoted\\"\\nline","WHO":"ops"}\n'


def test_key_value_lines_drop_a_last_line_cut_at_the_limit() -> None:
    assert parse_pairs(b"a=1\nnot a pair\n=no key\nb= two = 2\n", False) == Response({"a": "1", "b": " two = 2"})
    assert parse_pairs(b"a=1\nb=2", True) == Response({"a": "1"}, truncated=True)


# ---- which interface a .conf may name ----------------------------------------------------


def test_a_conf_names_a_built_in_or_installed_interface_in_any_case() -> None:
    assert parse_conf("interface JSON\n").interface == "json"
    assert {"env", "pipe", "json"} <= set(interfaces.names())
    with pytest.raises(ValueError) as raised:
        parse_conf("interface yaml\n")
    message = str(raised.value)
    assert message.startswith("line 1: interface must be env or pipe, or another installed interface (")
    assert "json" in message and message.endswith("not 'yaml'")


# ---- the runner, with each built-in, on real processes -----------------------------------


def run_score(tmp_path: Path, body: str, interface: str,
              params: dict[str, str] | None = None) -> tuple[player_pb2.TaskResult, TaskOutcome, runner.TaskFiles]:
    path = tmp_path / "scores" / "probe"
    path.parent.mkdir(exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    ctx = runner.TaskContext("t1", 1, "job1", "p1.test", "alice", params or {"WHO": "ops"})
    files = runner.TaskFiles(tmp_path / "tasks", "t1")
    execution = runner.Execution(Score("probe", path, ScoreConf(interface=interface)), ctx, files, LIMITS)

    async def on_spawn(pid: int, start: int | None) -> None:
        pass
    result = asyncio.run(execution.run(on_spawn))
    return result, TaskOutcome.from_wire(result.outcome), files


PYTHON_JSON_SCORE = f"""#!{sys.executable}
import json, os, stat, sys
params = json.load(sys.stdin)
mode = stat.S_IMODE(os.fstat(0).st_mode)
print(json.dumps({{"greeting": "hello " + params["WHO"], "params": sorted(params), "stdin_mode": oct(mode),
                  "in_env": sorted(k for k in os.environ if k.startswith("ORC_")),
                  "attempt": int(os.environ["ORC_ATTEMPT"])}}))
"""


def test_a_json_score_reads_its_params_on_stdin_and_not_in_its_environment(tmp_path: Path) -> None:
    result, outcome, files = run_score(tmp_path, PYTHON_JSON_SCORE, "json", {"WHO": "ops", "TOKEN": "s3cret"})
    assert result.ending == player_pb2.ENDING_OK, outcome.reason
    assert outcome.response == {
        "greeting": "hello ops", "params": '["TOKEN","WHO"]', "stdin_mode": "0o600", "attempt": "1",
        "in_env": '["ORC_ATTEMPT","ORC_JOB_ID","ORC_PLAYER","ORC_REQUESTER","ORC_RESPONSE_FILE",'
                  '"ORC_SCORE","ORC_TASK_ID"]'}
    assert stat.S_IMODE(files.stdin.stat().st_mode) == 0o600  # kept with the task's other files
    files.remove()
    assert not files.dir.exists()


def test_a_json_score_that_exits_0_without_a_json_object_fails_and_keeps_its_stdout(tmp_path: Path) -> None:
    result, outcome, _ = run_score(tmp_path, "#!/bin/sh\necho 'all done'\n", "json")
    assert result.ending == player_pb2.ENDING_FAILED
    assert outcome.exit_code == 0 and outcome.response == {}
    assert outcome.reason == "stdout is not a JSON object: Expecting value at line 1 column 1"
    assert outcome.stdout == b"all done\n"


def test_a_failing_json_score_keeps_its_exit_status_without_a_second_reason(tmp_path: Path) -> None:
    result, outcome, _ = run_score(tmp_path, "#!/bin/sh\necho 'Traceback ...'\nexit 4\n", "json")
    assert result.ending == player_pb2.ENDING_FAILED
    assert (outcome.exit_code, outcome.reason) == (4, "")


def test_a_json_response_over_response_max_bytes_fails_the_task(tmp_path: Path) -> None:
    body = f"#!{sys.executable}\nimport json\nprint(json.dumps({{'big': 'x' * 2000}}))\n"
    result, outcome, _ = run_score(tmp_path, body, "json")
    assert result.ending == player_pb2.ENDING_FAILED
    assert outcome.reason.startswith("stdout is larger than response_max_bytes (1024 bytes)")
    assert outcome.response == {} and outcome.response_truncated


def test_env_and_pipe_scores_get_no_stdin_and_their_params_as_variables(tmp_path: Path) -> None:
    body = ('#!/bin/sh\nread -r line && echo "stdin=$line"\necho "who=$ORC_WHO"\n'
            'echo "from_file=yes" > "$ORC_RESPONSE_FILE"\n')
    _, env_outcome, env_files = run_score(tmp_path, body, "env")
    assert env_outcome.response == {"from_file": "yes"} and not env_files.stdin.exists()
    _, pipe_outcome, _ = run_score(tmp_path, body, "pipe")
    assert pipe_outcome.response == {"who": "ops"}  # nothing on stdin: read failed at once


# ---- end to end ----------------------------------------------------------------------------

# A json score in plain shell, no jq: the params line is passed through as a nested value.
SHELL_JSON_SCORE = """#!/bin/sh
read -r params
printf '{"params": %s, "job": "%s", "who_in_env": "%s"}\\n' "$params" "$ORC_JOB_ID" "${ORC_WHO:-unset}"
"""


def test_json_scores_answer_through_real_daemons_and_getstatus_shows_the_response(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    cluster.add_score("greet", PYTHON_JSON_SCORE, "interface json\nparam WHO required\n")
    cluster.add_score("echoparams", SHELL_JSON_SCORE, "interface json\n")
    cluster.add_score("chatty", "#!/bin/sh\necho 'not json'\n", "interface json\n")
    cluster.start()

    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "greet", "who=ops", "p1.test")
    assert code == 0, job
    task: Any = job["tasks"][0]  # type: ignore[index]
    assert task["response"]["greeting"] == "hello ops" and task["response"]["params"] == '["WHO"]'
    code, status = job_json(cluster, "getstatus", str(job["job_id"]))
    assert code == 0 and status["tasks"][0]["response"] == task["response"]  # type: ignore[index]

    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "echoparams", "who=ops",
                         "colour=blue", "p1.test")
    assert code == 0, job
    assert job["tasks"][0]["response"] == {  # type: ignore[index]
        "params": '{"COLOUR":"blue","WHO":"ops"}', "job": job["job_id"], "who_in_env": "unset"}

    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "chatty", "p1.test")
    assert code == 1
    task = job["tasks"][0]  # type: ignore[index]
    assert (task["state"], task["exit_code"]) == ("failed", 0)
    assert task["reason"] == "stdout is not a JSON object: Expecting value at line 1 column 1"
    assert task["stdout"] == "not json\n"
    # Acknowledged results take their task's files with them, the stdin file included.
    spool = cluster.player_dir("p1.test") / "spool" / "tasks"
    cluster.wait_for(lambda: not list(spool.glob("*/stdin")), "the stdin files removed with their tasks")
