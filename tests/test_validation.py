"""Pure logic: parameter and name rules, score .conf parsing, players file parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conductor.players import parse_players
from orchestra.errors import ConfigError, ValidationError
from orchestra.params import (
    MAX_VALUE_BYTES, PARAM_KEY_RE, ParamDecl, ScoreDecls, apply_decls, check_score_name,
    normalize_params,
)
from player.scores import parse_conf


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 65, "a\x00b", "-x", "a b"])
def test_bad_score_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        check_score_name(name)


@pytest.mark.parametrize("name", ["hello", "a", "deploy-app_v2.sh", "X" * 64])
def test_good_score_names_pass(name: str) -> None:
    assert check_score_name(name) == name


def test_keys_are_upper_cased_and_values_kept_intact() -> None:
    assert normalize_params({"who": "a\nb", "Path": "/x"}) == {"WHO": "a\nb", "PATH": "/x"}


@pytest.mark.parametrize("pairs, message", [
    ([("", "x")], "empty name"),
    ([("a=b", "x")], "invalid parameter name"),
    ([("x", "a\x00")], "NUL"),
    ([("x", "y" * (MAX_VALUE_BYTES + 1))], "limit"),
    ([("who", "1"), ("WHO", "2")], "given twice"),
    ([("task_id", "1")], "reserved"),
    ([("x", "\udcff")], "UTF-8"),
])
def test_bad_parameters_are_rejected(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        normalize_params(pairs)


@given(st.dictionaries(st.text(max_size=70), st.text(max_size=200), max_size=8))
def test_normalize_accepts_only_what_the_rules_allow(raw: dict[str, str]) -> None:
    try:
        result = normalize_params(raw)
    except ValidationError as err:
        assert str(err)  # a clear one-line message
        assert "\n" not in str(err)
        return
    for key, value in result.items():
        assert PARAM_KEY_RE.fullmatch(key) and key == key.upper()
        assert "\x00" not in value
        assert f"ORC_{key}" not in {"ORC_JOB_ID", "ORC_TASK_ID", "ORC_SCORE", "ORC_PLAYER",
                                    "ORC_REQUESTER", "ORC_RESPONSE_FILE", "ORC_ATTEMPT"}


def test_declarations_are_enforced() -> None:
    decls = ScoreDecls((ParamDecl("WHO", required=True, pattern="[a-z]+"),
                        ParamDecl("VERSION", choices=("1.0", "2.0"), default="1.0")))
    assert apply_decls({"WHO": "bob"}, decls, "s") == {"WHO": "bob", "VERSION": "1.0"}
    with pytest.raises(ValidationError, match="requires parameter WHO"):
        apply_decls({}, decls, "s")
    with pytest.raises(ValidationError, match="does not match"):
        apply_decls({"WHO": "Bob; id"}, decls, "s")
    with pytest.raises(ValidationError, match="not one of"):
        apply_decls({"WHO": "bob", "VERSION": "3.0"}, decls, "s")
    with pytest.raises(ValidationError, match="does not declare parameter EXTRA"):
        apply_decls({"WHO": "bob", "EXTRA": "1"}, decls, "s")
    assert apply_decls({"ANY": "thing"}, ScoreDecls(), "s") == {"ANY": "thing"}


def test_conf_reads_both_spellings_and_our_directives() -> None:
    conf = parse_conf(
        "# comment\n; also a comment\nINTERFACE=pipe\ntimeout 300   # seconds\ndir = /var/tmp\n"
        "param WHO required pattern=^[a-z]+$\n"
        "param VERSION optional choices=1.0,2.0 default=1.0\nparam TOKEN optional secret\n")
    assert conf.interface == "pipe" and conf.timeout == 300 and conf.workdir == "/var/tmp"
    decls = conf.decls.by_name()
    assert decls["WHO"].required and decls["WHO"].pattern == "^[a-z]+$"
    assert decls["VERSION"].choices == ("1.0", "2.0") and decls["VERSION"].default == "1.0"
    assert decls["TOKEN"].secret and not decls["TOKEN"].required


@pytest.mark.parametrize("text, line", [
    ("interface env\nbogus 1\n", "line 2: unknown directive 'bogus'"),
    ("interface shell\n", "line 1: interface must be env or pipe"),
    ("timeout -1\n", "line 1: timeout"),
    ("dir relative/path\n", "line 1: dir must be an absolute path"),
    ("param 1X\n", "line 1: param needs a valid name"),
    ("param X pattern=(\n", "line 1: param X: bad pattern"),
    ("param X choices=a,b default=c\n", "line 1: param X: default"),
    ("param X\nparam x\n", "line 2: parameter X declared twice"),
])
def test_bad_conf_lines_are_reported_with_their_number(text: str, line: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_conf(text)
    assert line in str(caught.value)


def test_players_file_rules() -> None:
    text = "# fleet\n\nweb1.example.com\nweb2.example.com  # comment\nweb1.example.com\n"
    assert parse_players(text) == frozenset({"web1.example.com", "web2.example.com"})
    with pytest.raises(ConfigError, match="line 2"):
        parse_players("ok.example\nnot ok\n")
    with pytest.raises(ConfigError, match="line 1"):
        parse_players("../etc/passwd\n")


def test_player_resolves_only_regular_executables_inside_the_scores_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from player.scores import ScoreUnavailable, resolve

    scores = tmp_path / "scores"
    scores.mkdir()
    (tmp_path / "outside").write_text("#!/bin/sh\n")
    (tmp_path / "outside").chmod(0o755)
    for name, make in {
        "ok": lambda p: (p.write_text("#!/bin/sh\n"), p.chmod(0o755)),
        "noexec": lambda p: p.write_text("#!/bin/sh\n"),
        "adir": lambda p: p.mkdir(),
        "escape": lambda p: p.symlink_to(tmp_path / "outside"),
        "inside": lambda p: p.symlink_to(scores / "ok"),
    }.items():
        make(scores / name)
        (scores / f"{name}.conf").write_text("interface env\n")
    (scores / "noconf").write_text("#!/bin/sh\n")
    (scores / "noconf").chmod(0o755)
    assert resolve(scores, "ok").path == scores.resolve() / "ok"
    assert resolve(scores, "inside").path == scores.resolve() / "ok"
    for name, why in [("noexec", "not executable"), ("adir", "not a regular file"),
                      ("escape", "outside the scores directory"), ("noconf", "not installed"),
                      ("../outside", "invalid score name"), ("/bin/sh", "invalid score name"),
                      ("a/b", "invalid score name"), (".hidden", "invalid score name"),
                      ("ok.conf", "invalid score name")]:
        with pytest.raises(ScoreUnavailable, match=why):
            resolve(scores, name)
