"""``submitworkflow wf.toml``: the workflow file and the command line over it, in-process.

A step says what a job file says, checked by the same functions with the same messages
(under the file's name and the step's key path); the workflow adds ``after``,
``on_failure`` and its own name, labels, key and params, which KEY=VALUE words override.
Every way to be wrong is one line and exit 2, before the conductor is dialled.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience import submitworkflow, workflowfile
from orchestra.errors import ExitCode, OrchestraError, UsageError, ValidationError
from orchestra.wire import audience_pb2

SOME = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "workflow.toml"

EVERY_KEY = """\
name = "upgrade web"
labels = { change = "CHG-42" }
idempotency_key = "upgrade-42"

[params]
version = "1.2.3"
region = { env = "REGION" }

[steps.drain]
score = "drain"
targets = ["web1.test"]

[steps.upgrade]
after = ["drain"]
score = "upgrade"
targets = ["web1.test", "web2.test", "@web"]
scope = "all"
name = "the upgrade"
priority = "high"
expires = 90.5
canary = 1
batch = "50%"
max_failures = 1
on_failure = "continue"
labels = { team = "web" }
params = { VERSION = "{{ params.VERSION }}", TOKEN = { file = "secrets/token" }, PASSWORD = { env = "DB_PASSWORD" } }

[steps.check]
after = ["upgrade", "drain"]
score = "check"
targets = ["mon1.test", "mon2.test"]
scope = "one"
params = { BUILD = "{{ steps.upgrade.response.BUILD }}" }
"""
ENV = {"REGION": "eu", "DB_PASSWORD": "hunter2"}


@pytest.fixture
def wf_dir(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("t0ken\n")
    (tmp_path / "wf.toml").write_text(EVERY_KEY)
    return tmp_path


def parse(tmp_path: Path, text: str, params: dict[str, str] | None = None,
          environ: dict[str, str] | None = None) -> audience_pb2.WorkflowRequest:
    return workflowfile.parse(text.encode(), str(tmp_path / "wf.toml"), params or {}, environ or ENV)


def refused(tmp_path: Path, text: str, params: dict[str, str] | None = None) -> str:
    """The one-line message a bad workflow file gets, checked to be exit 2."""
    with pytest.raises(ValidationError) as caught:
        parse(tmp_path, text, params)
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE and "\n" not in message
    return message


def test_every_key_of_the_workflow_and_its_steps_reaches_the_request(wf_dir: Path) -> None:
    request = workflowfile.load(str(wf_dir / "wf.toml"), environ=ENV)
    assert (request.name, dict(request.labels), request.idempotency_key) == ("upgrade web", {"change": "CHG-42"},
                                                                             "upgrade-42")
    assert dict(request.params) == {"VERSION": "1.2.3", "REGION": "eu"}  # keys upper-cased, as a job's
    assert [step.name for step in request.steps] == ["drain", "upgrade", "check"]  # the file's order
    drain, upgrade, check = request.steps
    assert (list(drain.after), drain.on_failure) == ([], "")  # "": the conductor's default, stop
    assert drain.job.score == "drain" and list(drain.job.targets) == ["web1.test"]
    assert drain.job.scope == audience_pb2.SCOPE_ALL_OF and not drain.job.HasField("rollout")
    assert not drain.job.HasField("priority")  # not given: the conductor's default
    assert (list(upgrade.after), upgrade.on_failure) == (["drain"], "continue")
    job = upgrade.job
    assert list(job.targets) == ["web1.test", "web2.test", "@web"] and job.scope == audience_pb2.SCOPE_ALL_OF
    assert (job.name, job.priority, job.expires_seconds) == ("the upgrade", 10, math.ceil(90.5))
    assert (job.rollout.canary, job.rollout.batch, job.rollout.max_failures) == (1, "50%", "1")
    assert dict(job.labels) == {"team": "web"}
    # Templates are sent as written (the conductor fills them in); secrets are read here.
    assert dict(job.params) == {"VERSION": "{{ params.VERSION }}", "TOKEN": "t0ken", "PASSWORD": "hunter2"}
    assert job.idempotency_key == ""
    assert list(check.after) == ["upgrade", "drain"] and check.job.scope == audience_pb2.SCOPE_ONE_OF
    assert dict(check.job.params) == {"BUILD": "{{ steps.upgrade.response.BUILD }}"}


def test_only_the_steps_are_required(tmp_path: Path) -> None:
    request = parse(tmp_path, '[steps.one]\nscore = "hello"\ntargets = ["p1.test"]\n')
    assert (request.name, dict(request.labels), dict(request.params), request.idempotency_key) == ("", {}, {}, "")
    assert len(request.steps) == 1


def test_key_value_overrides_replace_the_files_params_key_by_key(wf_dir: Path) -> None:
    request = workflowfile.load(str(wf_dir / "wf.toml"), {"version": "1.2.4"}, environ=ENV)
    assert dict(request.params) == {"VERSION": "1.2.4", "REGION": "eu"}


def test_an_override_of_a_param_the_file_does_not_declare_is_refused(wf_dir: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        workflowfile.load(str(wf_dir / "wf.toml"), {"VERSON": "1.2.4"}, environ=ENV)
    assert str(caught.value) == (f"parameter VERSON is not one of the workflow's [params] in {wf_dir / 'wf.toml'}"
                                 " (declared: REGION, VERSION)")


def test_secret_files_are_read_relative_to_the_workflow_file(wf_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    request = workflowfile.load(str(wf_dir / "wf.toml"), environ=ENV)
    assert request.steps[1].job.params["TOKEN"] == "t0ken"  # one trailing newline stripped


def test_a_missing_secret_names_the_step_and_the_param(wf_dir: Path) -> None:
    (wf_dir / "secrets" / "token").unlink()
    path = wf_dir / "wf.toml"
    with pytest.raises(ValidationError) as caught:
        workflowfile.load(str(path), environ=ENV)
    assert str(caught.value) == (f"{path}: steps.upgrade.params.TOKEN: cannot read {wf_dir / 'secrets/token'}:"
                                 " No such file or directory")
    (wf_dir / "secrets" / "token").write_text("t0ken")
    with pytest.raises(ValidationError) as caught:
        workflowfile.load(str(path), environ={"REGION": "eu"})
    assert str(caught.value) == f"{path}: steps.upgrade.params.PASSWORD: environment variable DB_PASSWORD is not set"
    with pytest.raises(ValidationError) as caught:
        workflowfile.load(str(path), environ={"DB_PASSWORD": "x"})
    assert str(caught.value) == f"{path}: params.region: environment variable REGION is not set"


STEP = '[steps.one]\nscore = "hello"\ntargets = ["p1.test"]\n'


@pytest.mark.parametrize("text, message", [
    ('schedule = "daily"\n' + STEP, "schedule: unknown key"),
    ("name = 3\n" + STEP, "name: must be a string, not 3"),
    ('idempotency_key = "a\\u0007b"\n' + STEP, "idempotency_key: idempotency key must be printable"),
    ('labels = { "bad key" = "x" }\n' + STEP, "labels: invalid label name 'bad key'"),
    ('params = { "no-dash" = "x" }\n' + STEP, "params: invalid parameter name 'no-dash'"),
    ("", "steps: missing: a workflow needs at least one [steps.NAME] table"),
    ("steps = {}\n", "steps: empty: a workflow needs at least one [steps.NAME] table"),
    ('steps = "drain"\n', "steps: must be a table of steps ([steps.NAME]), not 'drain'"),
    ("steps = { one = 3 }\n", "steps.one: must be a table ([steps.one]), not 3"),
    (STEP + "retries = 3\n", "steps.one.retries: unknown key"),
    (STEP + 'idempotency_key = "k"\n',
     "steps.one.idempotency_key: unknown key (the workflow's idempotency_key covers its steps)"),
    ('[steps.one]\ntargets = ["p1.test"]\n', "steps.one.score: missing: every step needs a score and its targets"),
    ('[steps.one]\nscore = "hello"\n', "steps.one.targets: missing: every step needs a score and its targets"),
    (STEP + 'after = "zero"\n', "steps.one.after: must be a list of step names, not 'zero'"),
    (STEP + "after = [1]\n", "steps.one.after[0]: must be a step name, not 1"),
    (STEP + "on_failure = false\n", "steps.one.on_failure: must be \"stop\" or \"continue\", not False"),
    (STEP + 'priority = "urgent"\n', "steps.one.priority: invalid priority 'urgent'"),
    (STEP + "expires = 0\n", "steps.one.expires: must be a positive number of seconds: '0'"),
    (STEP + 'scope = "some"\n', "steps.one.scope: invalid scope 'some': must be all or one"),
    ('[steps.one]\nscore = "no/slash"\ntargets = ["p1.test"]\n', "steps.one.score: invalid score name 'no/slash'"),
    ('[steps.one]\nscore = "hello"\ntargets = []\n', "steps.one.targets: no target hosts given"),
    ('[steps.one]\nscore = "hello"\ntargets = ["p1.test", "p2.test"]\n',
     'steps.one.scope: more than one target: choose --all-of or --one-of (in a workflow file: scope = "all" or'
     ' "one")'),
    (STEP + 'scope = "one"\ncanary = 1\n',
     "steps.one: --canary, --batch and --max-failures apply to all-of jobs only"),
    (STEP + 'params = { A = { file = "x", env = "Y" } }\n', "steps.one.params.A: give exactly one of file and env"),
    (STEP + "params = { A = 1 }\n", "steps.one.params.A: must be a string"),
    (STEP + 'labels = { a = "x\\u0000" }\n', "steps.one.labels: label a: value must be printable"),
    ("[steps.one\n", "invalid TOML:"),
])
def test_a_bad_workflow_file_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str,
                                                                     message: str) -> None:
    assert refused(tmp_path, text).startswith(f"{tmp_path / 'wf.toml'}: {message}")


def test_a_workflow_file_that_is_not_text_or_too_large_or_unreadable_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "wf.toml")
    with pytest.raises(ValidationError, match=r"wf\.toml: workflow file is not UTF-8 text \(byte 0\)"):
        workflowfile.parse(b"\xff", path)
    with pytest.raises(ValidationError, match=r"wf\.toml: workflow file is larger than 1 MiB"):
        workflowfile.parse(b"#" * (1024 * 1024 + 1), path)
    with pytest.raises(ValidationError, match=r"wf\.toml: cannot read workflow file: No such file or directory"):
        workflowfile.load(path)


def test_shape_and_templates_are_left_to_the_conductor(tmp_path: Path) -> None:
    """Unknown steps in after, cycles and templates naming anything are sent as written:
    the conductor's checks are the only ones, and name the step."""
    request = parse(tmp_path, STEP + 'after = ["one", "nope"]\non_failure = "sometimes"\n'
                    'params = { X = "{{ steps.nope.response.Y }}" }\n')
    step = request.steps[0]
    assert (list(step.after), step.on_failure, step.job.params["X"]) == (
        ["one", "nope"], "sometimes", "{{ steps.nope.response.Y }}")


def test_the_example_workflow_file_is_complete_and_parses(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "deploy-token").write_text("t0ken\n")
    request = workflowfile.parse(EXAMPLE.read_bytes(), str(tmp_path / "workflow.toml"))
    assert [step.name for step in request.steps] == ["drain", "upgrade", "check", "undrain"]
    by_name = {step.name: step for step in request.steps}
    assert by_name["check"].on_failure == "continue" and by_name["upgrade"].on_failure == "stop"
    assert [list(step.after) for step in request.steps] == [[], ["drain"], ["upgrade"], ["check"]]
    assert by_name["upgrade"].job.params["TOKEN"] == "t0ken"
    assert by_name["check"].job.params["BUILD"] == "{{ steps.upgrade.response.BUILD }}"


# ---- the command line ------------------------------------------------------------------

def test_the_command_line_overrides_params_name_labels_and_key_with_options_anywhere(wf_dir: Path) -> None:
    path = str(wf_dir / "wf.toml")
    args = submitworkflow.parse_command_line(["--label", "team=ops", path, "--wait", "version=2.0",
                                              "--name", "hotfix", "--timeout", "30", "--idempotency-key",
                                              "k2", "--label", "change=CHG-43", "--json"])
    assert (args.wait, args.timeout, args.json) == (True, 30.0, True)
    request = submitworkflow.request_of(args, ENV)
    assert request.params["VERSION"] == "2.0"
    assert (request.name, request.idempotency_key) == ("hotfix", "k2")
    assert dict(request.labels) == {"change": "CHG-43", "team": "ops"}  # merged, the command line winning


@pytest.mark.parametrize("argv, error, message", [
    (["wf.toml", "--timeout", "3"], UsageError, "--timeout needs --wait"),
    ([], UsageError, "the following arguments are required: FILE"),
    (["wf.toml", "web1"], ValidationError, "not a key=value parameter: 'web1'"),
    (["wf.toml", "version=1", "VERSION=2"], ValidationError, "parameter VERSION given twice"),
    (["wf.toml", "--label", "nolabel"], ValidationError, "a label is KEY=VALUE, not 'nolabel'"),
    (["wf.toml", "--name", "a\nb"], ValidationError, "job name must be printable"),
])
def test_a_bad_command_line_is_refused_before_anything_is_sent(wf_dir: Path, argv: list[str],
                                                                error: type[OrchestraError], message: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(wf_dir)
    with pytest.raises(error) as caught:
        submitworkflow.request_of(submitworkflow.parse_command_line(argv), ENV)
    assert message in str(caught.value) and caught.value.exit_code == ExitCode.USAGE


def test_a_file_named_after_double_dash_may_start_with_a_dash(wf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(wf_dir)
    (wf_dir / "-wf.toml").write_text(STEP)
    args = submitworkflow.parse_command_line(["--wait", "--", "-wf.toml"])
    assert args.file == "-wf.toml" and submitworkflow.request_of(args).steps[0].name == "one"


# ---- any input: a request or one ValidationError, never anything else --------------------

def toml_value(value: Any) -> str:
    """A value as TOML writes it inline (enough of TOML for the strategy below)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, str):
        return '"' + "".join(c if c.isalnum() or c in " ._-{}%@" else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"


SCALARS = st.one_of(st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=20))
ANY = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.sampled_from(["file", "env", "X", "a"]),
                                                                    inner, max_size=2)), max_leaves=6)
# Mostly values a key could take, so that many files parse; now and then anything at all.
LIKELY: dict[str, Any] = {
    "score": st.sampled_from(["hello", "no/slash"]),
    "targets": st.lists(st.sampled_from(["p1.test", "p2.test", "@web", "bad host"]), max_size=3),
    "scope": st.sampled_from(["all", "one", "some"]),
    "name": st.text(max_size=10),
    "priority": st.one_of(st.sampled_from(["low", "high", "urgent"]), st.integers(-200, 200)),
    "expires": st.one_of(st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False)),
    "canary": st.integers(-1, 3),
    "batch": st.sampled_from([1, 2, "50%", "0%", ""]),
    "max_failures": st.sampled_from([1, "10%", "x"]),
    "params": st.dictionaries(st.sampled_from(["A", "b", "ORC_X", "JOB_ID"]),
                              st.sampled_from(["v", "{{ params.A }}", "{{ nope"]), max_size=3),
    "labels": st.dictionaries(st.sampled_from(["team", "9x"]), st.sampled_from(["web", ""]), max_size=2),
    "after": st.lists(st.sampled_from(["one", "two", 3]), max_size=2),
    "on_failure": st.sampled_from(["stop", "continue", "never"]),
    "idempotency_key": st.sampled_from(["k", ""]),
    "steps": st.just({}),
}


def likely(key: str) -> Any:
    return st.one_of(LIKELY[key], ANY) if key in LIKELY else ANY


def step_tables() -> Any:
    keys = st.lists(st.sampled_from([*workflowfile.STEP_KEYS, "idempotency_key", "bogus"]), max_size=5, unique=True)
    extra = keys.flatmap(lambda chosen: st.fixed_dictionaries({key: likely(key) for key in chosen}))
    return st.tuples(st.booleans(), extra).map(
        lambda made: {**({"score": "hello", "targets": ["p1.test"]} if made[0] else {}), **made[1]})


def top_tables() -> Any:
    keys = st.lists(st.sampled_from([*workflowfile.KEYS, "other"]), max_size=3, unique=True)
    return keys.flatmap(lambda chosen: st.fixed_dictionaries({key: likely(key) for key in chosen}))


@SOME
@given(steps=st.dictionaries(st.sampled_from(["one", "two", "Bad Name"]), step_tables(), max_size=3),
       top=top_tables())
def test_any_workflow_file_is_a_request_or_one_validation_error(tmp_path: Path, steps: dict[str, Any],
                                                                top: dict[str, Any]) -> None:
    top.pop("steps", None)
    text = "".join(f'"{k}" = {toml_value(v)}\n' for k, v in top.items())
    text += "".join(f'[steps."{name}"]\n' + "".join(f'"{k}" = {toml_value(v)}\n' for k, v in table.items())
                    for name, table in steps.items())
    try:
        request = parse(tmp_path, text)
    except ValidationError as err:
        assert "\n" not in str(err) and str(err).startswith(str(tmp_path / "wf.toml"))
    else:
        assert [step.name for step in request.steps] == list(steps)
