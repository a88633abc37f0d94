"""Policy.decide, directly: who may run which score on which targets with which values.

Policies are built with parse_policy from the same raw TOML values conductor.toml holds, so
these tests also pin down what a written policy means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conductor.policy import Decision, Policy, Requester, parse_policy
from orchestra.errors import ConfigError

SOURCE = Path("conductor.toml")
ALICE = Requester("user", "alice", frozenset({"ops"}), uid=1001)
BOB = Requester("user", "bob", frozenset({"dev"}), uid=1002)
CI = Requester("cert", "ci.example.com", serial=0x2A)
OTHER_CERT = Requester("cert", "laptop.example.com", serial=0x2B)
WEB = ["web1.example.com", "web2.example.com"]


def policy(rules: list[dict[str, Any]] | None = None, groups: dict[str, Any] | None = None,
           audience: dict[str, Any] | None = None) -> Policy:
    return parse_policy(rules, groups, audience, SOURCE)


def allowed(decision: Decision, rule: str) -> bool:
    return decision.allowed and decision.rule == rule


# ---- no policy written ------------------------------------------------------------------

def test_without_rules_local_users_may_run_anything() -> None:
    decision = policy().decide(BOB, "anything", ["db1.example.com"], {"X": "1"})
    assert decision == Decision(True, "", "no policy configured; the local socket's mode is the gate")


def test_without_rules_certificates_are_denied_by_default() -> None:
    decision = policy().decide(CI, "hello", ["web1.example.com"], {})
    assert decision == Decision(False, "", "no policy rule allows cert:ci.example.com to run hello"
                                           " on web1.example.com")


# ---- requesters ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, who, expected", [
    ("user:alice", ALICE, True),
    ("user:al*", ALICE, True),
    ("user:alice", BOB, False),
    ("group:ops", ALICE, True),
    ("group:ops", BOB, False),
    ("group:o*", ALICE, False),  # group names are exact, not globs
    ("cert:ci.example.com", CI, True),
    ("cert:*.example.com", OTHER_CERT, True),
    ("cert:ci.example.com", OTHER_CERT, False),
    ("user:ci.example.com", CI, False),  # a certificate is never a local user
    ("cert:alice", ALICE, False),  # and a local user never a certificate
    ("group:ops", Requester("cert", "ops"), False),
    ("*", BOB, True),
    ("*", CI, True),
])
def test_requesters_match_by_kind(pattern: str, who: Requester, expected: bool) -> None:
    rules = policy([{"name": "r", "requesters": [pattern]}])
    decision = rules.decide(who, "hello", ["web1.example.com"], {})
    assert decision.allowed is expected
    assert decision.rule == ("r" if expected else "")


def test_a_request_no_rule_matches_is_denied_naming_who_what_and_where() -> None:
    rules = policy([{"name": "ops", "requesters": ["group:ops"]}])
    decision = rules.decide(BOB, "deploy", WEB, {})
    assert decision == Decision(False, "", "no policy rule allows user:bob to run deploy on"
                                           " web1.example.com, web2.example.com")


def test_the_denial_lists_at_most_five_targets() -> None:
    targets = [f"h{n}.test" for n in range(7)]
    decision = policy([{"requesters": ["user:alice"]}]).decide(BOB, "s", targets, {})
    assert decision.reason.endswith("on h0.test, h1.test, h2.test, h3.test, h4.test ...")


# ---- scores -------------------------------------------------------------------------------

@pytest.mark.parametrize("score, expected", [
    ("deploy", True), ("hello", True), ("hello-world", True), ("deploy2", False), ("rm", False),
])
def test_scores_match_names_and_globs(score: str, expected: bool) -> None:
    rules = policy([{"name": "r", "requesters": ["*"], "scores": ["deploy", "hello*"]}])
    assert rules.decide(ALICE, score, ["web1.example.com"], {}).allowed is expected


# ---- targets ------------------------------------------------------------------------------

GROUPS = {"web": ["web1.example.com", "web*.example.com"], "db": ["db1.example.com"]}


@pytest.mark.parametrize("targets, expected", [
    (["db1.example.com"], True),  # a name
    (["cache3.example.com"], True),  # a glob
    (["web7.example.com"], True),  # a glob inside @group
    (["web1.example.com", "db1.example.com", "cache1.example.com"], True),
    (["db2.example.com"], False),
    (["web1.example.com", "db2.example.com"], False),  # every target must be allowed
    (["WEB1.example.com"], False),  # case matters: certnames are compared exactly
])
def test_an_allow_rule_must_cover_every_target(targets: list[str], expected: bool) -> None:
    rules = policy([{"name": "r", "requesters": ["*"],
                     "targets": ["@web", "db1.example.com", "cache*.example.com"]}], GROUPS)
    assert rules.decide(ALICE, "hello", targets, {}).allowed is expected


def test_an_allow_rule_without_targets_covers_every_target() -> None:
    rules = policy([{"name": "r", "requesters": ["*"]}])
    assert allowed(rules.decide(ALICE, "hello", ["any.example.com", "other.test"], {}), "r")


def test_a_rule_naming_an_unknown_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown group @nope"):
        policy([{"requesters": ["*"], "targets": ["@nope"]}])


# ---- parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("params, expected", [
    ({"VERSION": "1.2.3"}, True),
    ({"VERSION": "1.2.3; rm -rf /"}, False),  # full match, not search
    ({"VERSION": ""}, False),
    ({"VERSION": "2.0", "OTHER": "anything"}, True),  # unlisted params are not constrained
    ({}, True),  # a pattern constrains a param only when it is given
])
def test_param_patterns_must_fully_match_the_given_values(params: dict[str, str],
                                                          expected: bool) -> None:
    rules = policy([{"name": "r", "requesters": ["*"], "params": {"version": "[0-9.]+"}}])
    decision = rules.decide(ALICE, "deploy", ["web1.example.com"], params)
    assert decision.allowed is expected
    assert decision.rule == ("r" if expected else "")


def test_a_failed_param_pattern_falls_through_to_the_next_rule() -> None:
    rules = policy([
        {"name": "strict", "requesters": ["*"], "params": {"VERSION": "[0-9.]+"}},
        {"name": "admins", "requesters": ["user:alice"]},
    ])
    assert allowed(rules.decide(ALICE, "deploy", ["w.test"], {"VERSION": "latest"}), "admins")
    assert not rules.decide(BOB, "deploy", ["w.test"], {"VERSION": "latest"}).allowed


# ---- deny rules and order -----------------------------------------------------------------

def test_first_matching_rule_wins_and_a_deny_names_its_rule() -> None:
    rules = policy([
        {"name": "no-db", "effect": "deny", "requesters": ["group:dev"], "targets": ["@db"]},
        {"name": "everyone", "requesters": ["*"]},
    ], GROUPS)
    decision = rules.decide(BOB, "hello", ["web1.example.com", "db1.example.com"], {})
    assert decision == Decision(False, "no-db", "policy rule 'no-db' denies user:bob running hello"
                                                " on web1.example.com, db1.example.com")
    assert allowed(rules.decide(BOB, "hello", ["web1.example.com"], {}), "everyone")
    assert allowed(rules.decide(ALICE, "hello", ["db1.example.com"], {}), "everyone")


def test_a_deny_rule_matches_if_any_target_matches() -> None:
    rules = policy([{"name": "d", "effect": "deny", "requesters": ["*"], "targets": ["db*"]},
                    {"name": "a", "requesters": ["*"]}])
    assert rules.decide(ALICE, "s", ["web1", "web2", "db9"], {}).rule == "d"


def test_a_deny_rule_without_targets_denies_everywhere() -> None:
    rules = policy([{"name": "no-rm", "effect": "deny", "requesters": ["*"], "scores": ["rm*"]},
                    {"name": "all", "requesters": ["*"]}])
    assert rules.decide(ALICE, "rmdir", ["any.test"], {}).rule == "no-rm"
    assert allowed(rules.decide(ALICE, "ls", ["any.test"], {}), "all")


def test_an_allow_before_a_deny_wins() -> None:
    rules = policy([{"name": "alice", "requesters": ["user:alice"]},
                    {"name": "nobody", "effect": "deny", "requesters": ["*"]}])
    assert allowed(rules.decide(ALICE, "s", ["h.test"], {}), "alice")
    assert rules.decide(BOB, "s", ["h.test"], {}).rule == "nobody"


def test_once_rules_exist_local_users_are_denied_by_default() -> None:
    rules = policy([{"name": "ops", "requesters": ["group:ops"]}])
    decision = rules.decide(BOB, "hello", ["h.test"], {})
    assert not decision.allowed and decision.rule == "" and decision.reason.startswith("no policy rule")


def test_unnamed_rules_are_named_by_position() -> None:
    rules = policy([{"requesters": ["user:nobody"]}, {"requesters": ["*"]}])
    assert allowed(rules.decide(ALICE, "s", ["h.test"], {}), "#2")


# ---- remote audience certificates ---------------------------------------------------------

def test_an_audience_entry_allows_its_certificate_only_its_scores_and_targets() -> None:
    rules = policy(groups=GROUPS, audience={"ci.example.com": {"scores": ["deploy"], "targets": ["@web"]}})
    assert rules.admits_cert("ci.example.com") and not rules.admits_cert("laptop.example.com")
    assert allowed(rules.decide(CI, "deploy", WEB, {}), "audience ci.example.com")
    assert not rules.decide(CI, "deploy", ["db1.example.com"], {}).allowed
    assert not rules.decide(CI, "hello", WEB, {}).allowed
    assert not rules.decide(OTHER_CERT, "deploy", WEB, {}).allowed
    # The entry is for that certificate only, and the local users' open default stays.
    assert allowed(rules.decide(ALICE, "anything", ["db1.example.com"], {}), "")


def test_policy_rules_come_before_audience_entries() -> None:
    rules = policy([{"name": "freeze", "effect": "deny", "requesters": ["cert:*"], "scores": ["deploy"]}],
                   GROUPS, {"ci.example.com": {"scores": ["deploy"], "targets": ["@web"]}})
    assert rules.decide(CI, "deploy", WEB, {}).rule == "freeze"


def test_an_audience_entry_must_name_scores_and_targets() -> None:
    with pytest.raises(ConfigError, match="scores and targets are required"):
        policy(audience={"ci.example.com": {"scores": ["deploy"]}})


# ---- other requesters' jobs -------------------------------------------------------------

SUPER = frozenset({0})


def test_a_requester_may_always_touch_its_own_jobs_and_no_one_elses_by_default() -> None:
    rules = policy([{"name": "all", "requesters": ["*"]}])
    assert rules.may_touch(ALICE, "cancel", "user:alice", "deploy", WEB, {}, SUPER).allowed
    for action in ("read", "cancel"):
        decision = rules.may_touch(BOB, action, "user:alice", "deploy", WEB, {}, SUPER)
        assert not decision.allowed, action  # "run everything" grants nothing over others' jobs
    assert not policy().may_touch(BOB, "read", "user:alice", "deploy", WEB, {}, SUPER).allowed


def test_root_may_read_and_cancel_every_job() -> None:
    root = Requester("user", "root", uid=0)
    assert policy().may_touch(root, "cancel", "user:alice", "deploy", WEB, {}, SUPER).allowed


def test_read_and_cancel_grants_cover_their_scores_and_targets() -> None:
    rules = policy([
        {"name": "auditors", "requesters": ["group:dev"], "actions": ["read"], "targets": ["web*"]},
        {"name": "ops-admin", "requesters": ["group:ops"], "actions": ["run", "cancel"]},
    ])
    assert allowed(rules.may_touch(BOB, "read", "user:carol", "deploy", WEB, {}, SUPER), "auditors")
    assert not rules.may_touch(BOB, "read", "user:carol", "deploy", ["db1"], {}, SUPER).allowed
    assert not rules.may_touch(BOB, "cancel", "user:carol", "deploy", WEB, {}, SUPER).allowed
    # cancel implies read
    assert allowed(rules.may_touch(ALICE, "read", "user:carol", "deploy", ["db1"], {}, SUPER), "ops-admin")
    # a read-only rule does not let anyone run anything
    assert not rules.decide(BOB, "deploy", WEB, {}).allowed


def test_unknown_action_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="actions: 'destroy' is not one of cancel, delete, drain, read, retry, run"):
        policy([{"requesters": ["*"], "actions": ["read", "destroy"]}])


def test_retry_delete_and_drain_need_their_own_grants() -> None:
    rules = policy([
        {"name": "ops-admin", "requesters": ["user:alice"], "actions": ["retry", "delete", "drain"],
         "targets": ["@web"]},
        {"name": "run-all", "requesters": ["*"]},
    ], groups={"web": ["web*.example.com"]})
    for action in ("retry", "delete"):
        assert allowed(rules.may_touch(ALICE, action, "user:carol", "deploy", WEB, {}, SUPER), "ops-admin")
        assert not rules.may_touch(BOB, action, "user:carol", "deploy", WEB, {}, SUPER).allowed
        assert rules.may_touch(BOB, action, BOB.label, "deploy", WEB, {}, SUPER).allowed  # one's own job
    assert allowed(rules.may_drain(ALICE, WEB, SUPER), "ops-admin")
    assert not rules.may_drain(ALICE, ["db1"], SUPER).allowed  # outside the rule's targets
    refused = rules.may_drain(BOB, WEB, SUPER)
    assert not refused.allowed and "to drain hosts" in refused.reason
    # With no policy at all, a local user may drain, as it may run anything.
    assert policy([]).may_drain(BOB, WEB, SUPER).allowed


def test_group_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="groups.bad name: a group name must match"):
        parse_policy([], {"bad name": ["a"]}, {}, Path("conductor.toml"))


def test_a_deny_rule_without_actions_denies_everything() -> None:
    rules = policy([
        {"name": "not-bob", "effect": "deny", "requesters": ["user:bob"]},
        {"name": "everyone-admin", "requesters": ["*"], "actions": ["run", "read", "cancel"]},
    ])
    for action in ("read", "cancel"):
        decision = rules.may_touch(BOB, action, "user:carol", "deploy", WEB, {}, SUPER)
        assert not decision.allowed and decision.rule == "not-bob", action
    assert not rules.decide(BOB, "deploy", WEB, {}).allowed
    assert rules.may_touch(ALICE, "cancel", "user:carol", "deploy", WEB, {}, SUPER).allowed


def test_a_deny_rule_about_scores_does_not_stop_draining_but_one_about_a_person_does() -> None:
    rules = policy([
        {"name": "no-reboots-on-db", "effect": "deny", "requesters": ["*"], "scores": ["reboot"],
         "targets": ["db*"]},
        {"name": "not-bob", "effect": "deny", "requesters": ["user:bob"]},
        {"name": "ops-drain", "requesters": ["*"], "actions": ["drain"]},
    ])
    assert allowed(rules.may_drain(ALICE, ["db1"], SUPER), "ops-drain")
    assert not rules.decide(ALICE, "reboot", ["db1"], {}).allowed
    refused = rules.may_drain(BOB, ["web1"], SUPER)
    assert not refused.allowed and refused.rule == "not-bob"


def test_whoever_may_retry_or_delete_a_job_may_also_see_it() -> None:
    rules = policy([{"name": "janitor", "requesters": ["user:alice"], "actions": ["delete"]}])
    assert allowed(rules.may_touch(ALICE, "read", "user:carol", "deploy", WEB, {}, SUPER), "janitor")
    assert rules.reads_others(ALICE, SUPER) and not rules.reads_others(BOB, SUPER)


def test_a_rule_that_denies_reading_is_not_undone_by_a_grant_to_retry() -> None:
    rules = policy([
        {"name": "no-secrets", "effect": "deny", "requesters": ["user:bob"], "scores": ["secret*"],
         "actions": ["read"]},
        {"name": "bob-retries", "requesters": ["user:bob"], "actions": ["retry"]},
    ])
    refused = rules.may_touch(BOB, "read", "user:alice", "secret-rotate", WEB, {}, SUPER)
    assert not refused.allowed and refused.rule == "no-secrets"
    assert allowed(rules.may_touch(BOB, "read", "user:alice", "deploy", WEB, {}, SUPER), "bob-retries")


def test_draining_a_group_needs_a_rule_for_the_group_itself() -> None:
    rules = policy([{"name": "web-only", "requesters": ["user:carol"], "actions": ["drain"],
                     "targets": ["web1"]},
                    {"name": "web-group", "requesters": ["user:alice"], "actions": ["drain"],
                     "targets": ["@db"]}], groups={"db": ["db*"]})
    carol = Requester("user", "carol", uid=1003)
    assert rules.may_drain(carol, ["web1"], SUPER).allowed
    assert not rules.may_drain(carol, ["web1", "@db"], SUPER).allowed  # @db covers no player yet
    assert allowed(rules.may_drain(ALICE, ["@db"], SUPER), "web-group")
