"""submitjob's command line, parsed in-process: both forms, the shared rules, and properties.

These replace most of the generated command lines once thrown at a live conductor: the
parser is pure, so thousands of examples run in a second or two.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from audience import submitjob
from audience.common import HelpRequested
from audience.parse import Submission, parse_submission
from orchestra.errors import ExitCode, OrchestraError, UsageError, ValidationError
from orchestra.joboptions import MAX_PRIORITY, MIN_PRIORITY, parse_amount
from orchestra.params import (
    MAX_TARGETS, MAX_VALUE_BYTES, PARAM_KEY_RE, check_idempotency_key, check_target, check_targets,
    is_score_name, normalize_params, resolve_scope,
)

MANY = settings(max_examples=2000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SOME = settings(MANY, max_examples=500)  # for strategies that generate from regular expressions


# ---- examples: the modern form ---------------------------------------------------------

def test_modern_form_splits_parameters_from_hosts_and_upper_cases_keys() -> None:
    sub = parse_submission(["--all-of", "hello", "who=ops", "p1.test", "path=/a=b", "p2.test"])
    assert sub == Submission(score="hello", scope="all", targets=("p1.test", "p2.test"),
                             params={"WHO": "ops", "PATH": "/a=b"})


def test_modern_form_carries_every_option() -> None:
    sub = parse_submission(["--one-of", "--wait", "--timeout", "5", "--json", "--config", "a.toml",
                            "--expires", "60", "--idempotency-key", "deploy-42", "hello", "p1.test"])
    assert sub == Submission(score="hello", scope="one", targets=("p1.test",), params={},
                             config="a.toml", wait=True, timeout=5.0, json=True, expires=60.0,
                             idempotency_key="deploy-42")


def test_one_target_needs_no_scope_and_repeats_are_dropped() -> None:
    assert parse_submission(["hello", "p1.test"]).scope == "all"
    assert parse_submission(["hello", "p1.test", "p1.test"]).targets == ("p1.test",)


@pytest.mark.parametrize("argv, error, message", [
    (["hello", "p1.test", "p2.test"], ValidationError, "more than one target: choose --all-of or --one-of"),
    (["hello", "who=ops"], ValidationError, "no target hosts given"),
    (["../x", "who=ops"], ValidationError, "no target hosts given"),
    (["../x", "p1.test"], ValidationError, "invalid score name '../x'"),
    (["hello", "a/b"], ValidationError, "invalid host name 'a/b'"),
    (["hello", "=x", "p1.test"], ValidationError, "parameter with an empty name"),
    (["hello", "a-b=1", "p1.test"], ValidationError, "invalid parameter name 'a-b'"),
    (["hello", "job_id=1", "p1.test"], ValidationError, "reserved"),
    (["--timeout", "3", "hello", "p1.test"], UsageError, "--timeout needs --wait (see submitjob --help)"),
    (["--expires", "0", "hello", "p1.test"], UsageError, "must be a positive number of seconds"),
    (["--expires", "1e30", "hello", "p1.test"], UsageError,
     "argument --expires: too large: '1e30' seconds (at most 1000000000, about 31 years)"),
    (["--expires=1000000001", "hello", "p1.test"], UsageError, "too large: '1000000001' seconds"),
    (["--expires", "inf", "hello", "p1.test"], UsageError, "not a finite number of seconds: 'inf'"),
    (["--expires", "nan", "hello", "p1.test"], UsageError, "not a number of seconds: 'nan'"),
    (["--wait", "--timeout", "1e300", "hello", "p1.test"], UsageError, "too large: '1e300' seconds"),
    (["hello", "p1.test", "--bogus"], UsageError, "unrecognized arguments: --bogus"),
    ([], UsageError, "the following arguments are required"),
    (["--idempotency-key", "x" * 201, "hello", "p1.test"], ValidationError,
     "idempotency key must be printable and at most 200 characters"),
    (["--idempotency-key", "a\nb", "hello", "p1.test"], ValidationError, "idempotency key"),
])
def test_bad_command_lines_raise_one_line_errors(argv: list[str], error: type[OrchestraError],
                                                 message: str) -> None:
    with pytest.raises(error) as caught:
        parse_submission(argv)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


def test_too_many_targets_are_refused_by_the_cli_too() -> None:
    hosts = [f"h{n}.test" for n in range(MAX_TARGETS + 1)]
    with pytest.raises(ValidationError, match=f"too many targets: {MAX_TARGETS + 1} > {MAX_TARGETS}"):
        parse_submission(["--all-of", "hello", *hosts])


def test_help_is_an_answer_not_an_error() -> None:
    with pytest.raises(HelpRequested) as caught:
        parse_submission(["--help"])
    assert caught.value.text.startswith("usage: submitjob")


# ---- examples: the original Orchestra form ---------------------------------------------

def test_legacy_form_with_all_of_and_parameters() -> None:
    sub = parse_submission(["-all-of", "hello", "p1.test", "p2.test", "!", "who", "legacy"])
    assert sub == Submission(score="hello", scope="all", targets=("p1.test", "p2.test"),
                             params={"WHO": "legacy"})


def test_legacy_form_means_one_of_without_all_of() -> None:
    sub = parse_submission(["hello", "p1.test", "p2.test", "!"])
    assert sub.scope == "one" and sub.params == {}


def test_legacy_form_takes_the_modern_options() -> None:
    sub = parse_submission(["--wait", "--timeout", "5", "--json", "--config", "a.toml", "-all-of",
                            "hello", "p1.test", "!", "msg", "--not-an-option"])
    assert sub == Submission(score="hello", scope="all", targets=("p1.test",),
                             params={"MSG": "--not-an-option"}, config="a.toml", wait=True,
                             timeout=5.0, json=True)


@pytest.mark.parametrize("argv, message", [
    (["hello", "p1.test", "!", "who"], "parameters after '!' come in KEY VALUE pairs; 'who' has no value"),
    (["-all-of", "hello"], "usage: submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]"),
    (["hello", "!", "who", "x"], "usage: submitjob [-all-of] SCORE HOST... [! KEY VALUE ...]"),
    (["-all-of", "--one-of", "hello", "p1.test"], "not allowed with"),
])
def test_bad_legacy_command_lines_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_submission(argv)
    assert message in str(caught.value)


def test_legacy_form_applies_the_same_rules() -> None:
    with pytest.raises(ValidationError, match="invalid host name 'a=b'"):
        parse_submission(["hello", "p1.test", "a=b", "!"])
    with pytest.raises(ValidationError, match="reserved"):
        parse_submission(["hello", "p1.test", "!", "job_id", "1"])


# ---- the shared rules (orchestra.params), as the conductor also calls them -------------

def test_shared_target_scope_and_key_rules() -> None:
    assert check_targets(["b.test", "a.test", "b.test"]) == ["b.test", "a.test"]
    with pytest.raises(ValidationError, match="^no target hosts given$"):
        check_targets([])
    assert resolve_scope(None, ["a.test"]) == "all"
    assert resolve_scope(None, ["a.test", "a.test"]) == "all"
    assert resolve_scope("one", ["a.test", "b.test"]) == "one"
    with pytest.raises(ValidationError, match="^more than one target: choose --all-of or --one-of$"):
        resolve_scope(None, ["a.test", "b.test"])
    assert check_idempotency_key("") is None
    assert check_idempotency_key("k" * 200) == "k" * 200


# ---- main: what the user sees -----------------------------------------------------------

def test_main_prints_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert submitjob.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: submitjob") and err == ""


def test_main_refuses_bad_input_in_one_line_before_dialling(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitjob, "with_client", lambda *_: pytest.fail("dialled the conductor"))
    assert submitjob.main(["hello", "p1.test", "p2.test"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "submitjob: more than one target: choose --all-of or --one-of\n"


def test_main_folds_a_multi_line_complaint_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert submitjob.main(["hello", "p1.test", "--no\nsuch"]) == 2
    _, err = capsys.readouterr()
    assert err == "submitjob: unrecognized arguments: --no such (see submitjob --help)\n"


def test_fractional_expiry_is_rounded_up_not_dropped() -> None:
    sub = parse_submission(["--expires", "0.5", "hello", "p1.test"])
    assert submitjob.request_of(sub).expires_seconds == 1


# ---- properties --------------------------------------------------------------------------

HOSTS = ["p1.test", "p2.test", "web-1.example.com"]
TOKENS = ["hello", *HOSTS, "who=ops", "=x", "a-b=1", "job_id=1", "x=\n", "!", "-all-of",
          "--all-of", "--one-of", "--all", "--wait", "--timeout", "3", "--json", "--expires",
          "0.5", "--idempotency-key", "--config", "--", "-h", "-x", "", "../x", ".hidden",
          "@web", "@", "--name", "--label", "team=web", "--priority", "high", "-101", "--canary",
          "1", "--batch", "10%", "0%", "--max-failures", "--param"]
word = st.one_of(st.sampled_from(TOKENS), st.text(max_size=12))


@MANY
@given(st.lists(word, max_size=8))
@example(["--", "-all-of", "!"])
@example(["\udcff", "p1.test"])
def test_any_argv_is_accepted_with_valid_fields_or_refused_cleanly(argv: list[str]) -> None:
    try:
        sub = parse_submission(argv)
    except HelpRequested:
        return
    except OrchestraError as err:
        assert err.exit_code == ExitCode.USAGE and str(err).strip()
        return
    assert is_score_name(sub.score)
    assert sub.targets and all(check_target(t) == t for t in sub.targets)
    assert len(set(sub.targets)) == len(sub.targets)
    assert all(PARAM_KEY_RE.fullmatch(k) and k == k.upper() for k in sub.params)
    assert sub.scope in ("all", "one")
    assert sub.timeout is None or sub.wait
    assert sub.priority is None or MIN_PRIORITY <= sub.priority <= MAX_PRIORITY
    assert all(parse_amount(amount, "x") is not None for amount in (sub.batch, sub.max_failures) if amount)
    assert not (sub.canary or sub.batch or sub.max_failures) or sub.scope == "all"
    submitjob.request_of(sub)  # always fits the wire


def plain(text: str) -> bool:
    """Not a word either form gives a meaning of its own."""
    return "=" not in text and text not in ("!", "-all-of", "--")


score_word = st.one_of(st.sampled_from(["hello", "deploy-app_v2.sh", "../x", ".x", ""]),
                       st.text(max_size=10)).filter(plain)
host_word = st.one_of(st.sampled_from(HOSTS), st.text(max_size=10)).filter(plain)
key_word = st.one_of(st.sampled_from(["who", "Path", "job_id", "", "1x", "a-b"]),
                     st.text(max_size=8)).filter(plain)
value_word = st.one_of(st.sampled_from(["ops", "", "a=b", "!", "--wait", "x\ny"]), st.text(max_size=10))
options = st.lists(st.sampled_from([("--wait",), ("--json",), ("--config", "c.toml"),
                                    ("--expires", "30"), ("--idempotency-key", "k1")]),
                   max_size=3, unique=True)


@MANY
@given(score=score_word, hosts=st.lists(host_word, max_size=4),
       params=st.lists(st.tuples(key_word, value_word), max_size=3),
       scope=st.sampled_from([None, "--all-of", "--one-of"]), extra=options)
def test_scope_follows_the_rule(score: str, hosts: list[str], params: list[tuple[str, str]],
                                scope: str | None, extra: list[tuple[str, ...]]) -> None:
    flags = [part for option in extra for part in option] + ([scope] if scope else [])
    argv = [*flags, "--", score, *(f"{k}={v}" for k, v in params), *hosts]
    try:
        sub = parse_submission(argv)
    except OrchestraError as err:
        if "more than one target" in str(err):
            assert scope is None and len(set(hosts)) > 1
        return
    assert scope is not None or len(set(hosts)) == 1
    assert sub.scope == {"--all-of": "all", "--one-of": "one", None: "all"}[scope]
    assert sub.targets == tuple(dict.fromkeys(hosts))


@MANY
@given(score=score_word, hosts=st.lists(host_word, max_size=4),
       params=st.lists(st.tuples(key_word, value_word), max_size=3),
       all_of=st.booleans(), extra=options)
def test_legacy_and_modern_forms_agree(score: str, hosts: list[str], params: list[tuple[str, str]],
                                       all_of: bool, extra: list[tuple[str, ...]]) -> None:
    flags = [part for option in extra for part in option]
    modern = [*flags, "--all-of" if all_of else "--one-of", "--", score,
              *(f"{k}={v}" for k, v in params), *hosts]
    legacy = [*flags, *(["-all-of"] if all_of else []), "--", score, *hosts, "!",
              *(part for pair in params for part in pair)]
    outcomes: list[Submission | str] = []
    for argv in (modern, legacy):
        try:
            outcomes.append(parse_submission(argv))
        except (UsageError, ValidationError):
            outcomes.append("refused")  # the first complaint may differ; refusal may not
    assert outcomes[0] == outcomes[1], (modern, legacy)


# ---- options anywhere, in both forms ------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["--config", "F", "-all-of", "hello", "p1.test", "p2.test"],
     Submission(score="hello", scope="all", targets=("p1.test", "p2.test"), params={}, config="F")),
    (["-all-of", "hello", "p1.test", "!", "who", "x", "--wait"],
     Submission(score="hello", scope="all", targets=("p1.test",), params={"WHO": "x"}, wait=True)),
    (["hello", "p1.test", "p2.test", "!", "who", "--wait", "--wait", "--timeout", "5", "n", "1", "--json"],
     Submission(score="hello", scope="one", targets=("p1.test", "p2.test"),
                params={"WHO": "--wait", "N": "1"}, wait=True, timeout=5.0, json=True)),
    (["-all-of", "hello", "--config", "F", "p1.test", "--expires=60"],
     Submission(score="hello", scope="all", targets=("p1.test",), params={}, config="F", expires=60.0)),
    (["--idempotency-key", "!", "hello", "who=x", "--wait", "p1.test"],
     Submission(score="hello", scope="all", targets=("p1.test",), params={"WHO": "x"}, wait=True,
                idempotency_key="!")),
])
def test_options_stand_anywhere_and_never_swallow_or_become_job_words(
        argv: list[str], expected: Submission) -> None:
    assert parse_submission(argv) == expected


def test_nothing_after_double_dash_is_an_option_in_either_form() -> None:
    with pytest.raises(ValidationError, match="invalid parameter name '--wait'"):
        parse_submission(["hello", "p1.test", "!", "--", "--wait", "x"])
    with pytest.raises(ValidationError, match="invalid host name '--wait'"):
        parse_submission(["--", "hello", "p1.test", "--wait"])


host_name = st.one_of(st.sampled_from(HOSTS), st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True))
score_name = st.one_of(st.sampled_from(["hello", "deploy-app_v2.sh"]),
                       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True))
param_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
# Values that look like options, separators, hosts or parameters must stay values.
param_value = st.one_of(st.sampled_from(["--wait", "-all-of", "!", "--", "p1.test", "a=b", "--config",
                                         "-x", ""]), st.text(max_size=8))
# Option values that look like job words must stay option values.
option_value = st.sampled_from(["c.toml", "p1.test", "hello", "who=ops", "!", "a b"])


@st.composite
def option_groups(draw: st.DrawFn, scopes: list[str]) -> list[tuple[str, ...]]:
    """Options (with their values) as the user would type them, each at most once."""
    value = draw(option_value)
    choices: list[tuple[str, ...]] = [
        ("--wait",), ("--json",), ("--expires", "30"), ("--idempotency-key", value),
        draw(st.sampled_from([("--config", value), (f"--config={value}",)])),
    ]
    groups = draw(st.lists(st.sampled_from(choices), unique=True, max_size=4))
    if ("--wait",) in groups and draw(st.booleans()):
        groups.append(("--timeout", "5"))
    scope = draw(st.sampled_from([None, *scopes]))
    return groups + ([(scope,)] if scope else [])


def expected_submission(score: str, scope: str, hosts: list[str], pairs: list[tuple[str, str]],
                        groups: list[tuple[str, ...]]) -> Submission:
    given: dict[str, str] = {}
    for group in groups:
        name, _, attached = group[0].partition("=")
        given[name] = attached or (group[1] if len(group) > 1 else "")
    return Submission(
        score=score, scope=scope, targets=tuple(dict.fromkeys(hosts)),
        params={k.upper(): v for k, v in pairs}, config=given.get("--config"),
        wait="--wait" in given, timeout=5.0 if "--timeout" in given else None,
        json="--json" in given, expires=30.0 if "--expires" in given else None,
        idempotency_key=given.get("--idempotency-key"))


def shared_rules_accept(hosts: list[str], pairs: list[tuple[str, str]]) -> bool:
    try:
        check_targets(hosts)
        normalize_params(pairs)
    except ValidationError:
        return False
    return len({k.upper() for k, _ in pairs}) == len(pairs)


@SOME
@given(data=st.data(), score=score_name, hosts=st.lists(host_name, min_size=1, max_size=3),
       pairs=st.lists(st.tuples(param_key, param_value), max_size=3))
def test_modern_form_takes_options_anywhere(data: st.DataObject, score: str, hosts: list[str],
                                            pairs: list[tuple[str, str]]) -> None:
    assume(shared_rules_accept(hosts, pairs))
    groups = data.draw(option_groups(["--all-of", "--one-of"]))
    words = [score, *data.draw(st.permutations([*(f"{k}={v}" for k, v in pairs), *hosts]))]
    hosts = [word for word in words[1:] if "=" not in word]  # the order they now stand in
    parts = [[word] for word in words]  # an option and its value stay together
    for group in groups:
        parts.insert(data.draw(st.integers(0, len(parts))), list(group))
    argv = [word for part in parts for word in part]
    scope = {("--all-of",): "all", ("--one-of",): "one"}
    requested = next((scope[g] for g in groups if g in scope), None)
    assume(requested or len(set(hosts)) == 1)
    assert parse_submission(argv) == expected_submission(score, requested or "all", hosts, pairs,
                                                         groups), argv


@SOME
@given(data=st.data(), score=score_name, hosts=st.lists(host_name, min_size=1, max_size=3),
       pairs=st.lists(st.tuples(param_key, param_value), max_size=3))
def test_original_form_takes_options_anywhere_even_after_its_pairs(
        data: st.DataObject, score: str, hosts: list[str], pairs: list[tuple[str, str]]) -> None:
    assume(shared_rules_accept(hosts, pairs))
    groups = data.draw(option_groups(["-all-of"]))
    head = [[score], *([host] for host in hosts)]
    tail = [[k, v] for k, v in pairs]  # options go between pairs, never inside one
    for group in groups:
        side = head if data.draw(st.booleans()) else tail
        side.insert(data.draw(st.integers(0, len(side))), list(group))
    argv = [*(word for part in head for word in part), "!", *(word for part in tail for word in part)]
    scope = "all" if ("-all-of",) in groups else "one"
    assert parse_submission(argv) == expected_submission(score, scope, hosts, pairs, groups), argv


# ---- the job's name, labels, priority and rollout --------------------------------------------

def test_new_options_are_carried_into_the_submission_and_the_request() -> None:
    sub = parse_submission(["--all-of", "deploy", "web1.test", "@db", "--name", "deploy 2.1",
                            "--label", "team=web", "--label", "change=CHG-1", "--priority", "high",
                            "--canary", "1", "--batch", " 25 %", "--max-failures", "3"])
    assert sub == Submission(score="deploy", scope="all", targets=("web1.test", "@db"), params={},
                             name="deploy 2.1", labels={"team": "web", "change": "CHG-1"}, priority=10,
                             canary=1, batch="25%", max_failures="3")
    request = submitjob.request_of(sub)
    assert (request.name, dict(request.labels), request.priority) == (
        "deploy 2.1", {"team": "web", "change": "CHG-1"}, 10)
    assert (request.rollout.canary, request.rollout.batch, request.rollout.max_failures) == (1, "25%", "3")


def test_priority_and_rollout_are_set_on_the_wire_only_when_given() -> None:
    request = submitjob.request_of(parse_submission(["hello", "p1.test"]))
    assert not request.HasField("priority") and not request.HasField("rollout")
    request = submitjob.request_of(parse_submission(["hello", "p1.test", "--priority", "normal"]))
    assert request.HasField("priority") and request.priority == 0


@pytest.mark.parametrize("given, value", [("low", -10), ("normal", 0), ("HIGH", 10), ("-100", -100),
                                          ("100", 100), ("7", 7)])
def test_priority_takes_a_name_or_a_number(given: str, value: int) -> None:
    assert parse_submission(["--priority", given, "hello", "p1.test"]).priority == value


def test_a_group_target_needs_a_scope_and_may_have_a_canary() -> None:
    with pytest.raises(ValidationError, match="^a group may name several hosts: choose --all-of or --one-of$"):
        parse_submission(["hello", "@web"])
    assert parse_submission(["--one-of", "hello", "@web"]).targets == ("@web",)
    # The conductor knows how many hosts a group has: the CLI lets a canary through.
    assert parse_submission(["--all-of", "hello", "@web", "--canary", "5"]).canary == 5


@pytest.mark.parametrize("argv, message", [
    (["--priority", "urgent"], "invalid priority 'urgent': low, normal, high or an integer from -100 to 100"),
    (["--priority", "101"], "priority 101 is out of range -100 to 100"),
    (["--name", "a\nb"], "job name must be printable and at most 200 characters"),
    (["--name", "x" * 201], "job name must be printable and at most 200 characters"),
    (["--label", "team"], "a label is KEY=VALUE, not 'team'"),
    (["--label", "1x=a"], "invalid label name '1x'"),
    (["--label", "a=1", "--label", "a=2"], "label a given twice"),
    (["--label", "a=\x1b"], "label a: value must be printable text"),
    (["--canary", "x"], "argument --canary: not a whole number: 'x'"),
    (["--canary", "-1"], "--canary must be a number of targets"),
    (["--canary", "2"], "--canary 2 leaves no other target: the job has 2"),
    (["--batch", "ten"], "invalid --batch 'ten': a number of tasks or a percentage such as 10%"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--max-failures", "101%"], "--max-failures '101%': a percentage must be from 1% to 100%"),
    (["--one-of", "--batch", "1"], "--canary, --batch and --max-failures apply to all-of jobs only"),
    (["--param", "x=1"], "ambiguous option: --param could match --param-file, --param-env"),
    (["@bad/name"], "invalid group name '@bad/name'"),
])
def test_bad_new_options_are_one_line_errors(argv: list[str], message: str) -> None:
    line = ["--all-of", "hello", "p1.test", "p2.test"] if "--one-of" not in argv else ["hello", "p1.test", "p2.test"]
    with pytest.raises(OrchestraError) as caught:
        parse_submission([*line, *argv])
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


def test_the_original_form_refuses_a_rollout_unless_all_of() -> None:
    with pytest.raises(ValidationError, match="apply to all-of jobs only"):
        parse_submission(["hello", "p1.test", "p2.test", "!", "who", "x", "--canary", "1"])
    sub = parse_submission(["-all-of", "hello", "p1.test", "p2.test", "!", "who", "x", "--canary", "1"])
    assert (sub.scope, sub.canary) == ("all", 1)


# ---- secret parameters: --param-file and --param-env ------------------------------------------

def test_param_file_reads_the_value_with_one_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t\n\n")
    (tmp_path / "key").write_text("line1\nline2")
    sub = parse_submission(["hello", "p1.test", "--param-file", f"token={tmp_path / 'token'}",
                            "--param-file", f"KEY={tmp_path / 'key'}", "who=ops"])
    assert sub.params == {"WHO": "ops", "TOKEN": "s3cr3t\n", "KEY": "line1\nline2"}


def test_param_env_reads_the_value_from_the_environment() -> None:
    sub = parse_submission(["hello", "p1.test", "--param-env", "password=DB_PW", "--param-env", "e=EMPTY"],
                           environ={"DB_PW": "hunter2", "EMPTY": ""})
    assert sub.params == {"PASSWORD": "hunter2", "E": ""}


def test_param_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORC_TEST_PW", "pw")
    assert parse_submission(["hello", "p1.test", "--param-env", "pw=ORC_TEST_PW"]).params == {"PW": "pw"}


def test_a_key_given_twice_across_words_files_and_variables_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v").write_text("x")
    for extra in (["--param-file", f"who={tmp_path / 'v'}"], ["--param-env", "WHO=V"]):
        with pytest.raises(ValidationError, match="^parameter WHO given twice$"):
            parse_submission(["hello", "p1.test", "who=ops", *extra], environ={"V": "v"})
    with pytest.raises(ValidationError, match="^parameter WHO given twice$"):
        parse_submission(["hello", "p1.test", "--param-file", f"who={tmp_path / 'v'}",
                          "--param-env", "Who=V"], environ={"V": "v"})


def secret_error(tmp_path: Path, argv: list[str]) -> str:
    with pytest.raises(OrchestraError) as caught:
        parse_submission(["hello", "p1.test", *argv], environ={"SET": "x"})
    assert caught.value.exit_code == ExitCode.USAGE and "\n" not in str(caught.value)
    return str(caught.value)


def test_every_way_a_secret_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    missing, big, latin1 = tmp_path / "missing", tmp_path / "big", tmp_path / "latin1"
    big.write_bytes(b"x" * (MAX_VALUE_BYTES + 1))
    latin1.write_bytes(b"caf\xe9")
    assert secret_error(tmp_path, ["--param-file", f"k={missing}"]) == \
        f"--param-file k: cannot read {missing}: No such file or directory"
    assert secret_error(tmp_path, ["--param-file", f"k={tmp_path}"]) == \
        f"--param-file k: cannot read {tmp_path}: Is a directory"
    assert secret_error(tmp_path, ["--param-file", f"k={big}"]) == \
        f"--param-file k: {big} is larger than {MAX_VALUE_BYTES} bytes, the most a value may be"
    assert secret_error(tmp_path, ["--param-file", f"k={latin1}"]) == f"--param-file k: {latin1} is not UTF-8 text"
    assert secret_error(tmp_path, ["--param-file", "k"]) == "--param-file takes KEY=PATH, not 'k'"
    assert secret_error(tmp_path, ["--param-file", "=x"]) == "--param-file takes KEY=PATH, not '=x'"
    assert secret_error(tmp_path, ["--param-env", "k="]) == "--param-env takes KEY=VAR, not 'k='"
    assert secret_error(tmp_path, ["--param-env", "k=UNSET"]) == \
        "--param-env k: environment variable UNSET is not set"
    assert secret_error(tmp_path, ["--param-env", "job_id=SET"]).startswith("parameter 'job_id' is reserved")


def test_a_secret_file_of_the_largest_value_with_its_newline_is_taken(tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"x" * MAX_VALUE_BYTES + b"\n")
    sub = parse_submission(["hello", "p1.test", "--param-file", f"v={tmp_path / 'v'}"])
    assert sub.params["V"] == "x" * MAX_VALUE_BYTES


def test_a_secret_never_appears_in_an_error(tmp_path: Path) -> None:
    (tmp_path / "v").write_text("s3cr3t\x00")
    message = secret_error(tmp_path, ["--param-file", f"v={tmp_path / 'v'}"])
    assert message == "parameter V: value contains a NUL byte" and "s3cr3t" not in message


def test_main_reports_an_unreadable_secret_in_one_line_before_dialling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitjob, "with_client", lambda *_: pytest.fail("dialled the conductor"))
    monkeypatch.delenv("ORC_TEST_UNSET", raising=False)
    assert submitjob.main(["hello", "p1.test", "--param-env", "pw=ORC_TEST_UNSET"]) == 2
    assert capsys.readouterr() == ("", "submitjob: --param-env pw: environment variable ORC_TEST_UNSET"
                                       " is not set\n")
    assert submitjob.main(["hello", "p1.test", "--file", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == (f"submitjob: {tmp_path / 'none.toml'}: cannot read job file:"
                                       " No such file or directory\n")


@SOME
@given(data=st.data(), score=score_name, hosts=st.lists(host_name, min_size=1, max_size=3),
       values=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                               max_size=20), min_size=3, max_size=3))
def test_a_parameter_is_the_same_from_a_word_a_file_or_a_variable(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, score: str, hosts: list[str],
        values: list[str]) -> None:
    """However a value is given, the job is the same: a file's one trailing newline aside."""
    folder = tmp_path_factory.mktemp("values")
    argv_word = ["--all-of", score, *hosts]
    argv_secret = list(argv_word)
    environ = {}
    for index, value in enumerate(values):
        argv_word.append(f"k{index}={value}")
        how = data.draw(st.sampled_from(["file", "env"]))
        if how == "file":
            (folder / f"v{index}").write_bytes(value.encode() + b"\n")
            argv_secret += ["--param-file", f"k{index}={folder / f'v{index}'}"]
        else:
            environ[f"V{index}"] = value
            argv_secret += ["--param-env", f"k{index}=V{index}"]
    assert parse_submission(argv_secret, environ=environ) == parse_submission(argv_word)
