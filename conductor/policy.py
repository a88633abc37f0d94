"""Who may run what, where, with which parameter values: a small declarative policy.

Pure logic, configured in conductor.toml::

    [groups]
    web = ["web1.example.com", "web*.example.com"]

    [[policy]]                           # the operators: drain hosts, retry and delete any job
    name = "ops-admin"
    requesters = ["group:ops"]
    actions = ["drain", "read", "cancel", "retry", "delete"]

    [[policy]]
    name = "ops-deploys"
    effect = "allow"                     # or "deny"
    requesters = ["group:ops", "user:alice", "cert:ci.example.com"]
    scores = ["deploy", "hello*"]        # globs
    targets = ["@web", "db1.example.com"] # names, globs, @group
    params = { VERSION = "^[0-9.]+$" }   # each given param must match (full match)
    actions = ["run"]                    # the default; "read", "cancel", "retry" and
                                         # "delete" are over OTHER requesters' jobs of these
                                         # scores/targets; "drain" is over these targets

    [audience."ci.example.com"]          # remote audience certificates (default deny)
    scores = ["deploy"]
    targets = ["@web"]

Rules are tried in order, first match wins; a rule only takes part in decisions about
the actions it lists. A request no rule matches is denied -- except that with no
``[[policy]]`` at all, local socket users may run anything (the socket's file mode is
then the only gate, as before a policy is written).

Jobs belong to their requester, who may always read, wait for, cancel, retry and delete
them (retrying also needs ``run`` still to allow the job). Doing so with another
requester's job needs a rule granting ``read``, ``cancel``, ``retry`` or ``delete`` for
that job's score and targets, whatever else the policy says -- except for root and the
conductor's own user on the local socket, who can read the queue file anyway. Draining
hosts needs a rule granting ``drain`` for them (or, with no ``[[policy]]`` at all, the
local socket).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError, PolicyDenied
from orchestra.params import CERTNAME_RE, GROUP_NAME_RE, PARAM_KEY_RE


# run: submit; read, cancel, retry and delete: over OTHER requesters' jobs (one's own
# jobs one may always do all four with); drain: drain and undrain hosts and groups.
ACTIONS = frozenset({"run", "read", "cancel", "retry", "delete", "drain"})
DOING = {"run": "running", "read": "reading jobs of", "cancel": "cancelling jobs of",
         "retry": "retrying jobs of", "delete": "deleting jobs of", "drain": "draining hosts for"}
# The grants over OTHER requesters' jobs; each of them lets its holder see the job too.
JOB_GRANTS = frozenset({"read", "cancel", "retry", "delete"})
TO_DO = {"run": "to run", "read": "to read jobs of", "cancel": "to cancel jobs of", "retry": "to retry jobs of",
         "delete": "to delete jobs of", "drain": "to drain"}


@dataclass(frozen=True)
class Requester:
    """A verified requester: a local Unix user (SO_PEERCRED) or an audience certificate."""

    kind: str  # "user" | "cert"
    name: str
    groups: frozenset[str] = frozenset()
    uid: int | None = None
    serial: int | None = None
    issuer: bytes = b""  # DER of its certificate's issuer: a serial is unique only per issuer

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def record(self) -> dict[str, object]:
        """What the queue keeps of a requester whose work runs later, without it (a
        workflow's steps, a schedule's runs): see :func:`requester_now`."""
        return {"kind": self.kind, "name": self.name, "groups": sorted(self.groups), "uid": self.uid,
                "serial": self.serial, "issuer": self.issuer.hex()}


def requester_now(record: Mapping[str, object]) -> Requester:
    """The requester a record names, as it stands now: a local user's groups are looked
    up again (someone removed from a group loses what the group granted), and a user
    who no longer exists is refused. A certificate's requester has no groups; whether its
    certificate is still admitted (the CRL, ``[audience]``) is the caller's to check
    (conductor.submission.Submissions.owner)."""
    kind, name = str(record.get("kind", "")), str(record.get("name", ""))
    serial = record.get("serial")
    if kind == "cert":
        issuer = record.get("issuer")
        return Requester("cert", name, serial=serial if isinstance(serial, int) else None,
                         issuer=bytes.fromhex(issuer) if isinstance(issuer, str) else b"")
    if kind != "user":
        raise PolicyDenied(f"unknown kind of requester {kind!r}")
    import grp
    import pwd
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        uid = record.get("uid")
        if name.startswith("uid") and isinstance(uid, int):  # a uid without a name, as auth shows it
            return Requester("user", name, frozenset(), uid=uid)
        raise PolicyDenied(f"the user {name} no longer exists") from None
    groups = {g.gr_name for g in grp.getgrall() if name in g.gr_mem}
    try:
        groups.add(grp.getgrgid(entry.pw_gid).gr_name)
    except KeyError:
        pass
    return Requester("user", name, frozenset(groups), uid=entry.pw_uid)


@dataclass(frozen=True)
class Rule:
    name: str
    effect: str
    requesters: tuple[str, ...]
    scores: tuple[str, ...]
    targets: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()
    actions: frozenset[str] = frozenset({"run"})

    def matches_requester(self, who: Requester) -> bool:
        for pattern in self.requesters:
            kind, _, value = pattern.partition(":")
            if pattern == "*":
                return True
            if kind == "user" and who.kind == "user" and fnmatchcase(who.name, value):
                return True
            if kind == "group" and who.kind == "user" and value in who.groups:
                return True
            if kind == "cert" and who.kind == "cert" and fnmatchcase(who.name, value):
                return True
        return False

    def matches_score(self, score: str) -> bool:
        return any(fnmatchcase(score, pattern) for pattern in self.scores)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    audience: Mapping[str, Rule] = field(default_factory=dict)

    def admits_cert(self, certname: str) -> bool:
        return certname in self.audience

    def _target_matches(self, target: str, pattern: str) -> bool:
        if target.startswith("@"):  # a group named as such (a drain): by its name, or "*"
            return pattern in (target, "*")
        if pattern.startswith("@"):
            return any(fnmatchcase(target, member) for member in self.groups.get(pattern[1:], ()))
        return fnmatchcase(target, pattern)

    def _targets_match(self, rule: Rule, targets: Iterable[str], every: bool) -> bool:
        hits = [any(self._target_matches(t, p) for p in rule.targets) for t in targets]
        return all(hits) if every else any(hits)

    def decide(self, who: Requester, score: str, targets: Iterable[str],
               params: Mapping[str, str], action: str = "run") -> Decision:
        """May ``who`` do ``action`` (run; or read or cancel someone else's job) with this
        score, these targets and parameter values?"""
        targets = list(targets)
        rules = [*self.rules]
        if who.kind == "cert" and who.name in self.audience:
            rules.append(self.audience[who.name])
        doing = DOING[action]
        for rule in rules:
            if action not in rule.actions or not rule.matches_requester(who) or \
                    (action != "drain" and not rule.matches_score(score)):
                continue
            if rule.effect == "deny":
                if not rule.targets or self._targets_match(rule, targets, every=False):
                    return Decision(False, rule.name, f"policy rule {rule.name!r} denies {who.label}"
                                                      f" {doing} {score} on {', '.join(targets[:5])}")
                continue
            if not self._targets_match(rule, targets, every=True):
                continue
            if any(key in params and re.fullmatch(pattern, params[key]) is None
                   for key, pattern in rule.params):
                continue
            return Decision(True, rule.name, "")
        if action in ("run", "drain") and who.kind == "user" and not self.rules:
            return Decision(True, "", "no policy configured; the local socket's mode is the gate")
        what = "hosts" if action == "drain" else score
        return Decision(False, "", f"no policy rule allows {who.label} {TO_DO[action]} {what} on"
                                   f" {', '.join(targets[:5])}{' ...' if len(targets) > 5 else ''}")

    def reads_others(self, who: Requester, superusers: frozenset[int]) -> bool:
        """Could :meth:`may_touch` let ``who`` read any job but its own? False when no
        allow rule for reading or cancelling names it: a listing then needs only its own."""
        if who.kind == "user" and who.uid in superusers:
            return True
        rules = [*self.rules]
        if who.kind == "cert" and who.name in self.audience:
            rules.append(self.audience[who.name])
        return any(rule.effect == "allow" and rule.actions & JOB_GRANTS and rule.matches_requester(who)
                   for rule in rules)

    def may_drain(self, who: Requester, targets: Iterable[str], superusers: frozenset[int]) -> Decision:
        """May ``who`` drain or undrain these hosts (and @groups)? A rule granting the
        ``drain`` action for them (its ``scores`` are not looked at), root or the
        conductor's own user, or any local user while no policy is written."""
        if who.kind == "user" and who.uid in superusers:
            return Decision(True, "", f"{who.label} may change the queue itself")
        return self.decide(who, "*", targets, {}, "drain")

    def may_touch(self, who: Requester, action: str, owner: str, score: str, targets: Iterable[str],
                  params: Mapping[str, str], superusers: frozenset[int]) -> Decision:
        """May ``who`` read (see, wait for), cancel, retry or delete a job its ``owner`` submitted?"""
        if owner == who.label:
            return Decision(True, "", "own job")
        if who.kind == "user" and who.uid in superusers:
            return Decision(True, "", f"{who.label} may read the queue itself")
        if action == "read":
            decision = self.decide(who, score, targets, params, "read")
            if decision.allowed or decision.rule:  # allowed, or denied by a rule: that stands
                return decision
            for other in sorted(JOB_GRANTS - {"read"}):  # whoever may cancel, retry or delete
                granted = self.decide(who, score, targets, params, other)  # a job may also see it
                if granted.allowed:
                    return granted
            return decision
        return self.decide(who, score, targets, params, action)


def _strings(value: Any, where: str, source: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}: {where}: must be a list of non-empty strings")
    return tuple(value)


def _rule(raw: Any, where: str, source: Path, default_name: str, requesters: tuple[str, ...] | None = None) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: must be a table")
    known = {"name", "effect", "requesters", "scores", "targets", "params", "actions"}
    if requesters is not None:
        known -= {"requesters", "effect", "name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: {where}.{unknown[0]}: unknown key")
    name = raw.get("name", default_name)
    effect = raw.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise ConfigError(f"{source}: {where}.effect: must be \"allow\" or \"deny\"")
    who = requesters or _strings(raw.get("requesters"), f"{where}.requesters", source)
    for pattern in who:
        kind, sep, _ = pattern.partition(":")
        if pattern != "*" and (not sep or kind not in ("user", "group", "cert")):
            raise ConfigError(f"{source}: {where}.requesters: {pattern!r} must be user:, group:, cert: or *")
    if requesters is not None and not {"scores", "targets"} <= set(raw):
        raise ConfigError(f"{source}: {where}: scores and targets are required (default deny)")
    scores = _strings(raw.get("scores", ["*"]), f"{where}.scores", source)
    raw_targets = raw.get("targets", ["*"] if effect == "allow" else [])
    targets = _strings(raw_targets, f"{where}.targets", source) if raw_targets else ()
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{source}: {where}.params: must be a table of KEY = \"pattern\"")
    params = []
    for key, pattern in params_raw.items():
        if PARAM_KEY_RE.fullmatch(key) is None or not isinstance(pattern, str):
            raise ConfigError(f"{source}: {where}.params.{key}: must be KEY = \"pattern\"")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"{source}: {where}.params.{key}: bad pattern: {err}") from None
        params.append((key.upper(), pattern))
    # A deny rule covers every action unless it names some: "deny bob" means all of it.
    # One about particular scores ("no reboot on db*") covers the actions on jobs only:
    # draining a host is about no score.
    denied = ACTIONS if scores == ("*",) else ACTIONS - {"drain"}
    actions = _strings(raw.get("actions", ["run"] if effect == "allow" else sorted(denied)),
                       f"{where}.actions", source)
    if not set(actions) <= ACTIONS:
        raise ConfigError(f"{source}: {where}.actions: {sorted(set(actions) - ACTIONS)[0]!r} is not one of"
                          f" {', '.join(sorted(ACTIONS))}")
    return Rule(str(name), effect, who, scores, targets, tuple(params), frozenset(actions))


def parse_policy(policy: Any, groups: Any, audience: Any, source: Path) -> Policy:
    """Build a Policy from the raw TOML values of [[policy]], [groups] and [audience]."""
    if policy is None:
        policy = []
    if not isinstance(policy, list):
        raise ConfigError(f"{source}: policy: must be an array of tables ([[policy]])")
    rules = tuple(_rule(raw, f"policy[{n}]", source, f"#{n + 1}") for n, raw in enumerate(policy))
    group_map: dict[str, tuple[str, ...]] = {}
    for name, members in (groups or {}).items():
        if GROUP_NAME_RE.fullmatch(name) is None:
            raise ConfigError(f"{source}: groups.{name}: a group name must match {GROUP_NAME_RE.pattern}")
        group_map[name] = _strings(members, f"groups.{name}", source)
    for rule in rules:
        for target in rule.targets:
            if target.startswith("@") and target[1:] not in group_map:
                raise ConfigError(f"{source}: policy rule {rule.name!r}: unknown group {target}")
    certs: dict[str, Rule] = {}
    if not isinstance(audience or {}, dict):
        raise ConfigError(f"{source}: audience: must be a table of certname tables")
    for certname, raw in (audience or {}).items():
        if CERTNAME_RE.fullmatch(certname) is None:
            raise ConfigError(f"{source}: audience.{certname}: invalid certname")
        certs[certname] = _rule(raw, f"audience.{certname}", source, f"audience {certname}",
                                requesters=(f"cert:{certname}",))
    return Policy(rules, group_map, certs)
