"""``submitjob --file job.toml``: the job file, in-process.

A job file says what a command line says, checked by the same functions with the same
messages (put under the file's name and the key); the command line overrides it, scalar
by scalar and parameter by parameter; every way to be wrong is one line and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience import jobfile, submitjob
from audience.jobfile import JobFile
from audience.parse import Submission, parse_submission
from orchestra.errors import ExitCode, OrchestraError, ValidationError
from orchestra.params import MAX_VALUE_BYTES

SOME = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

EXAMPLE = """\
# Deploy 2.1 to the web servers, a canary first.
score = "deploy"
targets = ["web1.test", "web2.test", "@db"]
scope = "all"
name = "deploy 2.1"
priority = "high"
expires = 600
canary = 1
batch = "25%"
max_failures = 2
idempotency_key = "deploy-2.1"

[params]
version = "2.1"
token = { file = "secrets/token" }
db_password = { env = "DB_PASSWORD" }

[labels]
team = "web"
change = "CHG-1234"
"""
ENV = {"DB_PASSWORD": "hunter2"}


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("t0ken\n")
    (tmp_path / "job.toml").write_text(EXAMPLE)
    return tmp_path


def write(tmp_path: Path, text: str, name: str = "job.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(argv: list[str], environ: dict[str, str] | None = None) -> str:
    """The one line submitjob prints for argv (exit 2)."""
    with pytest.raises(OrchestraError) as caught:
        parse_submission(argv, environ=environ or {})
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE and "\n" not in message and message.strip()
    return message


# ---- a whole file ---------------------------------------------------------------------------

def test_a_job_file_gives_every_field_with_secrets_read_from_files_and_the_environment(job_dir: Path) -> None:
    path = str(job_dir / "job.toml")
    assert jobfile.load(path, ENV) == JobFile(
        path=path, score="deploy", targets=("web1.test", "web2.test", "@db"), scope="all",
        name="deploy 2.1", priority=10, expires=600.0, canary=1, batch="25%", max_failures="2",
        idempotency_key="deploy-2.1",
        params={"VERSION": "2.1", "TOKEN": "t0ken", "DB_PASSWORD": "hunter2"},
        labels={"team": "web", "change": "CHG-1234"})


def test_a_job_file_alone_is_a_whole_submission(job_dir: Path) -> None:
    sub = parse_submission(["--file", str(job_dir / "job.toml")], environ=ENV)
    assert sub == Submission(
        score="deploy", scope="all", targets=("web1.test", "web2.test", "@db"),
        params={"VERSION": "2.1", "TOKEN": "t0ken", "DB_PASSWORD": "hunter2"}, expires=600.0,
        idempotency_key="deploy-2.1", name="deploy 2.1", labels={"team": "web", "change": "CHG-1234"},
        priority=10, canary=1, batch="25%", max_failures="2")
    request = submitjob.request_of(sub)
    assert (request.rollout.canary, request.rollout.batch, request.rollout.max_failures) == (1, "25%", "2")
    assert request.priority == 10 and request.name == "deploy 2.1" and request.expires_seconds == 600


def test_relative_secret_files_are_found_beside_the_job_file_not_in_the_working_directory(
        job_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert jobfile.load(str(job_dir / "job.toml"), ENV).params["TOKEN"] == "t0ken"


def test_a_job_file_may_be_given_in_the_original_form_too(job_dir: Path) -> None:
    sub = parse_submission(["-all-of", "--file", str(job_dir / "job.toml"), "!", "extra", "x"], environ=ENV)
    assert sub.score == "deploy" and sub.scope == "all" and sub.params["EXTRA"] == "x"


def test_a_minimal_job_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'score = "hello"\ntargets = ["p1.test"]\n')
    assert parse_submission(["--file", path], environ={}) == Submission(
        score="hello", scope="all", targets=("p1.test",), params={})


# ---- the command line overrides the file ------------------------------------------------------

def test_command_line_options_replace_the_file_scalars(job_dir: Path) -> None:
    sub = parse_submission(["--file", str(job_dir / "job.toml"), "--name", "hotfix", "--priority", "low",
                            "--expires", "30", "--canary", "2", "--batch", "5", "--max-failures", "10%",
                            "--idempotency-key", "k2"], environ=ENV)
    assert (sub.name, sub.priority, sub.expires, sub.canary, sub.batch, sub.max_failures,
            sub.idempotency_key) == ("hotfix", -10, 30.0, 2, "5", "10%", "k2")


def test_an_empty_rollout_option_lifts_the_files_limit(job_dir: Path) -> None:
    sub = parse_submission(["--file", str(job_dir / "job.toml"), "--canary", "0", "--batch", "",
                            "--max-failures", "", "--one-of"], environ=ENV)
    assert (sub.scope, sub.canary, sub.batch, sub.max_failures) == ("one", 0, "", "")
    assert not submitjob.request_of(sub).HasField("rollout")


def test_params_and_labels_merge_key_by_key_the_command_line_winning(job_dir: Path) -> None:
    sub = parse_submission(["--file", str(job_dir / "job.toml"), "VERSION=2.2", "--param-env", "extra=X",
                            "--label", "team=ops", "--label", "ticket=42"], environ={**ENV, "X": "x"})
    assert sub.params == {"VERSION": "2.2", "TOKEN": "t0ken", "DB_PASSWORD": "hunter2", "EXTRA": "x"}
    assert sub.labels == {"team": "ops", "change": "CHG-1234", "ticket": "42"}
    assert sub.score == "deploy"  # a first word with '=' is a parameter, not SCORE


def test_parameter_keys_merge_whatever_their_case(job_dir: Path) -> None:
    sub = parse_submission(["--file", str(job_dir / "job.toml"), "version=3"], environ=ENV)
    assert sub.params["VERSION"] == "3" and "version" not in sub.params


def test_score_on_the_command_line_keeps_the_files_targets_and_hosts_replace_them(job_dir: Path) -> None:
    path = str(job_dir / "job.toml")
    sub = parse_submission(["--file", path, "deploy-v2"], environ=ENV)
    assert (sub.score, sub.targets) == ("deploy-v2", ("web1.test", "web2.test", "@db"))
    sub = parse_submission(["--file", path, "deploy", "web9.test", "web8.test"], environ=ENV)
    assert (sub.score, sub.targets, sub.scope) == ("deploy", ("web9.test", "web8.test"), "all")


def test_scope_on_the_command_line_replaces_the_files(tmp_path: Path) -> None:
    path = write(tmp_path, 'score = "hello"\ntargets = ["a.test", "b.test"]\nscope = "all"\n')
    assert parse_submission(["--file", path, "--one-of"], environ={}).scope == "one"
    path = write(tmp_path, 'score = "hello"\ntargets = ["a.test", "b.test"]\n')
    assert refused(["--file", path]) == "more than one target: choose --all-of or --one-of"


# ---- what must come from somewhere ----------------------------------------------------------

def test_score_and_targets_must_come_from_the_file_or_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'targets = ["p1.test"]\n')
    assert refused(["--file", path]) == (f"{path}: score: not given, neither in the file nor as"
                                         " SCORE on the command line")
    assert parse_submission(["--file", path, "hello"], environ={}).score == "hello"
    path = write(tmp_path, 'score = "hello"\n')
    assert refused(["--file", path]) == "no target hosts given"
    assert refused(["--file", path, "hello"]) == "no target hosts given"
    assert parse_submission(["--file", path, "hello", "p1.test"], environ={}).targets == ("p1.test",)


# ---- errors: one line naming the file and the key --------------------------------------------

@pytest.mark.parametrize("text, key, problem", [
    ('scor = "hello"\n', "scor", "unknown key"),
    ('score = 1\n', "score", "must be a string, not 1"),
    ('score = "../x"\n', "score", "invalid score name '../x'"),
    ('targets = "p1.test"\n', "targets", "must be a list of host names or @groups, not 'p1.test'"),
    ('targets = ["p1.test", 2]\n', "targets[1]", "must be a string, not 2"),
    ('targets = []\n', "targets", "no target hosts given"),
    ('targets = ["a/b"]\n', "targets", "invalid host name 'a/b'"),
    ('targets = ["@"]\n', "targets", "invalid group name '@'"),
    ('scope = "some"\n', "scope", "invalid scope 'some': must be all or one"),
    ('scope = true\n', "scope", "must be \"all\" or \"one\", not True"),
    ('name = "a\\nb"\n', "name", "job name must be printable"),
    ('priority = "urgent"\n', "priority", "invalid priority 'urgent': low, normal, high or an integer"),
    ('priority = 101\n', "priority", "priority 101 is out of range -100 to 100"),
    ('priority = 1.5\n', "priority", "must be low, normal, high or an integer, not 1.5"),
    ('expires = 0\n', "expires", "must be a positive number of seconds: '0'"),
    ('expires = "10"\n', "expires", "must be a number of seconds, not '10'"),
    ('expires = inf\n', "expires", "not a finite number of seconds"),
    ('canary = "1"\n', "canary", "must be an integer, not '1'"),
    ('canary = true\n', "canary", "must be an integer, not True"),
    ('batch = "ten"\n', "batch", "invalid --batch 'ten': a number of tasks or a percentage such as 10%"),
    ('batch = 0\n', "batch", "--batch must be at least 1"),
    ('max_failures = "200%"\n', "max_failures", "--max-failures '200%': a percentage must be from 1% to 100%"),
    ('max_failures = 1.5\n', "max_failures", "must be an integer or a percentage"),
    ('idempotency_key = "a\\u0007"\n', "idempotency_key", "idempotency key must be printable"),
    ('params = "x"\n', "params", "must be a table, not 'x'"),
    ('[params]\n"a-b" = "1"\n', "params", "invalid parameter name 'a-b'"),
    ('[params]\njob_id = "1"\n', "params", "reserved"),
    ('[params]\nwho = "a"\nWHO = "b"\n', "params", "parameter WHO given twice"),
    ('[params]\nwho = 1\n', "params.who", "must be a string, { file = \"PATH\" } or { env = \"VAR\" }, not 1"),
    ('[params]\nwho = { path = "x" }\n', "params.who.path", "unknown key (file or env)"),
    ('[params]\nwho = {}\n', "params.who", "give exactly one of file and env"),
    ('[params]\nwho = { file = "x", env = "Y" }\n', "params.who", "give exactly one of file and env"),
    ('[params]\nwho = { file = 1 }\n', "params.who.file", "must be a path string, not 1"),
    ('[params]\nwho = { env = "" }\n', "params.who.env", "must not be empty"),
    ('[params]\nwho = { env = "NOT_SET_ANYWHERE" }\n', "params.who",
     "environment variable NOT_SET_ANYWHERE is not set"),
    ('[params]\nwho = { file = "missing.txt" }\n', "params.who", "cannot read "),
    ('[labels]\nteam = 1\n', "labels.team", "must be a string, not 1"),
    ('[labels]\n"1x" = "a"\n', "labels", "invalid label name '1x'"),
    ('labels = ["a"]\n', "labels", "must be a table, not ['a']"),
])
def test_a_bad_key_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, key: str,
                                                            problem: str) -> None:
    path = write(tmp_path, text)
    message = refused(["--file", path, "hello", "p1.test"])
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message, message


def test_an_unknown_key_is_named_even_among_good_ones(tmp_path: Path) -> None:
    path = write(tmp_path, 'score = "hello"\ntargets = ["p1.test"]\n[param]\nwho = "x"\n')
    assert refused(["--file", path]) == f"{path}: param: unknown key"


@pytest.mark.parametrize("content, problem", [
    (b"score = \xff\n", "job file is not UTF-8 text"),
    (b"score = \n", "invalid TOML: "),
    (b"score = 'a'\nscore = 'b'\n", "invalid TOML: "),
    (b"#" * (1024 * 1024 + 1), "job file is larger than 1 MiB"),
])
def test_a_file_that_is_not_utf8_not_toml_or_too_large_is_one_line(tmp_path: Path, content: bytes,
                                                                    problem: str) -> None:
    path = tmp_path / "job.toml"
    path.write_bytes(content)
    message = refused(["--file", str(path)])
    assert message.startswith(f"{path}: {problem}"), message


def test_a_job_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    assert refused(["--file", str(tmp_path / "none.toml")]) == \
        f"{tmp_path / 'none.toml'}: cannot read job file: No such file or directory"
    assert refused(["--file", str(tmp_path)]) == f"{tmp_path}: cannot read job file: Is a directory"


def test_a_secret_file_of_a_job_file_follows_the_command_lines_rules(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (MAX_VALUE_BYTES + 1))
    (tmp_path / "latin1").write_bytes(b"caf\xe9")
    (tmp_path / "exact").write_bytes(b"x" * MAX_VALUE_BYTES + b"\n")
    for name, problem in (("big", "is larger than"), ("latin1", "is not UTF-8 text")):
        path = write(tmp_path, f'score = "s"\ntargets = ["h"]\n[params]\nk = {{ file = "{name}" }}\n')
        assert refused(["--file", path]) == f"{path}: params.k: {tmp_path / name} {problem}" + (
            f" {MAX_VALUE_BYTES} bytes, the most a value may be" if name == "big" else "")
    path = write(tmp_path, 'score = "s"\ntargets = ["h"]\n[params]\nk = { file = "exact" }\n')
    assert parse_submission(["--file", path], environ={}).params["K"] == "x" * MAX_VALUE_BYTES


def test_the_environment_is_os_environ_unless_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORC_TEST_SECRET", "from-env")
    path = write(tmp_path, 'score = "s"\ntargets = ["h"]\n[params]\nk = { env = "ORC_TEST_SECRET" }\n')
    assert parse_submission(["--file", path]).params == {"K": "from-env"}


def test_the_rollout_rules_apply_to_the_merged_job(tmp_path: Path) -> None:
    path = write(tmp_path, 'score = "s"\ntargets = ["a.test", "b.test"]\nscope = "one"\ncanary = 1\n')
    assert refused(["--file", path]) == "--canary, --batch and --max-failures apply to all-of jobs only"
    assert parse_submission(["--file", path, "--all-of"], environ={}).canary == 1
    path = write(tmp_path, 'score = "s"\ntargets = ["a.test"]\ncanary = 1\n')
    assert refused(["--file", path]) == "--canary 1 leaves no other target: the job has 1"
    path = write(tmp_path, 'score = "s"\ntargets = ["a.test"]\ncanary = -1\n')
    assert refused(["--file", path]) == "--canary must be a number of targets"


# ---- properties -------------------------------------------------------------------------------

@SOME
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_content_is_a_job_or_one_line_refusal(content: bytes) -> None:
    try:
        found = jobfile.parse(content, "job.toml", environ={})
    except ValidationError as err:
        assert str(err).startswith("job.toml: ") and "\n" not in str(err)
        return
    assert isinstance(found, JobFile)


toml_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
printable = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
                    max_size=12)
text = printable | toml_text  # mostly valid, sometimes not
amounts = st.integers(0, 5) | st.sampled_from(["10%", "50 %", "0%", "ten", ""])
# Each option's value of the type a job file takes for it (a string where the file takes
# one, a number where it takes one): what the command line would be given as text.
OPTION_VALUES = {"name": text, "idempotency_key": text,
                 "priority": st.integers(-120, 120) | st.sampled_from(["low", " High ", "urgent"]),
                 "canary": st.integers(-1, 3), "batch": amounts, "max_failures": amounts,
                 "expires": st.integers(-1, 1000)}


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                             for c in value) + '"'
    return str(value)


@settings(SOME, max_examples=600)
@given(score=st.sampled_from(["hello", "deploy", "hello", "../x", "deploy", "hello", "deploy"]),
       targets=st.lists(st.sampled_from(["p1.test", "p2.test", "p3.test", "@web", "a/b", "p4.test",
                                         "p5.test", "@db", "p6.test"]), min_size=1, max_size=4),
       options=st.fixed_dictionaries({}, optional=OPTION_VALUES),
       scope=st.sampled_from([None, "all", "all", "one"]),
       params=st.dictionaries(st.sampled_from(["who", "n", "a_b", "job_id", "Path", "x1"]), text,
                              max_size=3),
       labels=st.dictionaries(st.sampled_from(["team", "x.y", "1x", "env", "a-b"]), text, max_size=2))
def test_a_job_file_and_the_same_command_line_agree(tmp_path: Path, score: str, targets: list[str],
                                                    options: dict[str, object], scope: str | None,
                                                    params: dict[str, str], labels: dict[str, str]) -> None:
    """Whatever a job file says, the same job on the command line is accepted as the same
    submission or refused too: one set of rules, whichever way the job is given."""
    lines = [f"score = {toml_value(score)}", f"targets = [{', '.join(map(toml_value, targets))}]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
    lines += [f"scope = {toml_value(scope)}"] if scope else []
    lines += ["[params]", *(f"{key} = {toml_value(value)}" for key, value in params.items())]
    lines += ["[labels]", *(f'"{key}" = {toml_value(value)}' for key, value in labels.items())]
    path = tmp_path / "prop.toml"
    path.write_text("\n".join(lines) + "\n")
    argv = [*(f"--{key.replace('_', '-')}={value}" for key, value in options.items()),
            *([f"--{scope}-of"] if scope else []),
            *(part for key, value in labels.items() for part in ("--label", f"{key}={value}")),
            "--", score, *(f"{key}={value}" for key, value in params.items()), *targets]
    outcomes: list[Submission | str] = []
    for line in (["--file", str(path)], argv):
        try:
            outcomes.append(parse_submission(line, environ={}))
        except OrchestraError as err:
            assert err.exit_code == ExitCode.USAGE and "\n" not in str(err)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1], (path.read_text(), argv)


def test_parse_reads_no_environment_when_given_one(tmp_path: Path) -> None:
    assert "PATH" in os.environ
    path = write(tmp_path, 'score = "s"\ntargets = ["h"]\n[params]\nk = { env = "PATH" }\n')
    assert refused(["--file", path]) == f"{path}: params.k: environment variable PATH is not set"
