"""Validation of score names, parameters and parameter declarations (CONTRACT.md §4-§5).

Pure functions, used unchanged by submitjob, the conductor and the player, so the three
can never disagree about what is valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestra.errors import ValidationError

SCORE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PARAM_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# Certnames as Puppet makes them: DNS-like, no path separators, bounded.
CERTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
# A workflow's id: "w" and a job id's 32 hex digits, so neither is taken for the other.
WORKFLOW_ID_RE = re.compile(r"w[0-9a-f]{32}")
# A group of hosts (conductor.toml [groups]) is named as a target with this prefix.
GROUP_PREFIX = "@"
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TASK_ID_RE = re.compile(r"[0-9a-f]{32}\.[0-9]{1,6}")

# One NAME=VALUE string must stay far below Linux MAX_ARG_STRLEN (128 KiB) and the whole
# environment below ARG_MAX (2 MiB).
MAX_VALUE_BYTES = 32 * 1024
MAX_TOTAL_BYTES = 256 * 1024
MAX_PARAMS = 64
MAX_TARGETS = 10_000
MAX_IDEMPOTENCY_KEY = 200
SCOPES = ("all", "one")

ENV_PREFIX = "ORC_"
RESERVED_ENV = frozenset({
    "ORC_JOB_ID", "ORC_TASK_ID", "ORC_SCORE", "ORC_PLAYER", "ORC_REQUESTER",
    "ORC_RESPONSE_FILE", "ORC_ATTEMPT",
})
SECRET_MASK = "<secret>"
OUTPUT_TRUNCATED_MARKER = b"[... output truncated by orchestra ...]\n"
# The most of a task's outcome the conductor stores: each output tail, and its reason.
# Players are configured to send no more (orchestra/config.py) and cut older results to
# fit before sending them (player/session.py fit_result).
MAX_TAIL_BYTES = 1024 * 1024
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class ParamDecl:
    """One ``param`` line of a score's .conf file."""

    name: str
    required: bool = False
    pattern: str = ""
    choices: tuple[str, ...] = ()
    default: str | None = None
    secret: bool = False

    def check(self, value: str) -> None:
        if self.choices and value not in self.choices:
            raise ValidationError(
                f"parameter {self.name}: {value!r} is not one of {', '.join(self.choices)}"
                if not self.secret else f"parameter {self.name}: value is not an allowed choice")
        if self.pattern and re.fullmatch(self.pattern, value) is None:
            raise ValidationError(
                f"parameter {self.name}: {value!r} does not match {self.pattern}"
                if not self.secret else f"parameter {self.name}: value does not match {self.pattern}")


@dataclass(frozen=True)
class ScoreDecls:
    """What a score declares about its parameters; empty means "any valid parameter"."""

    params: tuple[ParamDecl, ...] = field(default=())

    def by_name(self) -> dict[str, ParamDecl]:
        return {decl.name: decl for decl in self.params}


def is_score_name(name: str) -> bool:
    return SCORE_NAME_RE.fullmatch(name) is not None


def check_score_name(name: str) -> str:
    if not is_score_name(name):
        raise ValidationError(f"invalid score name {name!r}: must match {SCORE_NAME_RE.pattern}")
    return name


def check_certname(name: str, what: str = "host") -> str:
    if CERTNAME_RE.fullmatch(name) is None:
        raise ValidationError(f"invalid {what} name {name!r}")
    return name


def is_group(target: str) -> bool:
    """``@name``: a named group of hosts (conductor.toml's [groups]), expanded by the conductor."""
    return target.startswith(GROUP_PREFIX)


def check_target(target: str) -> str:
    """A host's certname, or ``@name`` for a group of hosts."""
    if is_group(target):
        if GROUP_NAME_RE.fullmatch(target[1:]) is None:
            raise ValidationError(f"invalid group name {target!r}: must be @ and match {GROUP_NAME_RE.pattern}")
        return target
    return check_certname(target)


def check_targets(targets: Iterable[str]) -> list[str]:
    """Validate target certnames (and @groups) and drop repeats, keeping the order they
    were given in."""
    unique: dict[str, None] = {}
    for target in targets:
        unique[check_target(target)] = None
    if not unique:
        raise ValidationError("no target hosts given")
    if len(unique) > MAX_TARGETS:
        raise ValidationError(f"too many targets: {len(unique)} > {MAX_TARGETS}")
    return list(unique)


def resolve_scope(requested: str | None, targets: Sequence[str]) -> str:
    """The job's scope, "all" or "one"; requested is None when the submitter gave none.

    With one target the scope makes no difference, so it is "all". With several, the
    submitter must choose: the original defaulted to one-of, most peers to all-of, and
    guessing either would surprise someone (CONTRACT.md §6).
    """
    if requested is not None:
        if requested not in SCOPES:
            raise ValidationError(f"invalid scope {requested!r}: must be all or one")
        return requested
    if any(is_group(target) for target in targets):
        raise ValidationError("a group may name several hosts: choose --all-of or --one-of")
    if len(set(targets)) > 1:
        raise ValidationError("more than one target: choose --all-of or --one-of")
    return "all"


def check_idempotency_key(key: str) -> str | None:
    """An idempotency key as stored: None when none was given ("")."""
    if not key:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(
            f"idempotency key must be printable and at most {MAX_IDEMPOTENCY_KEY} characters")
    return key


def check_job_id(job_id: str) -> str:
    if JOB_ID_RE.fullmatch(job_id) is None:
        raise ValidationError(f"invalid job id {job_id!r}: expected 32 lower-case hex digits")
    return job_id


def normalize_params(raw: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Validate keys and values and upper-case the keys; reject rather than rewrite."""
    pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
    if len(pairs) > MAX_PARAMS:
        raise ValidationError(f"too many parameters: {len(pairs)} > {MAX_PARAMS}")
    result: dict[str, str] = {}
    total = 0
    for key, value in pairs:
        if key == "":
            raise ValidationError("parameter with an empty name")
        if PARAM_KEY_RE.fullmatch(key) is None:
            raise ValidationError(
                f"invalid parameter name {key!r}: must match {PARAM_KEY_RE.pattern}")
        upper = key.upper()
        if ENV_PREFIX + upper in RESERVED_ENV:
            raise ValidationError(f"parameter {key!r} is reserved ({ENV_PREFIX}{upper} is set by the player)")
        if upper in result:
            raise ValidationError(f"parameter {upper} given twice")
        if "\x00" in value:
            raise ValidationError(f"parameter {upper}: value contains a NUL byte")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValidationError(f"parameter {upper}: value is not valid UTF-8") from None
        if size > MAX_VALUE_BYTES:
            raise ValidationError(f"parameter {upper}: value is {size} bytes, limit {MAX_VALUE_BYTES}")
        total += size + len(upper) + len(ENV_PREFIX) + 2
        if total > MAX_TOTAL_BYTES:
            raise ValidationError(f"parameters total more than {MAX_TOTAL_BYTES} bytes")
        result[upper] = value
    return result


def apply_decls(params: Mapping[str, str], decls: ScoreDecls, score: str) -> dict[str, str]:
    """Enforce a score's declarations on normalized params; returns params with defaults."""
    if not decls.params:
        return dict(params)
    declared = decls.by_name()
    for key in params:
        if key not in declared:
            raise ValidationError(f"score {score} does not declare parameter {key}")
    result = dict(params)
    for name, decl in declared.items():
        if name in result:
            decl.check(result[name])
        elif decl.default is not None:
            result[name] = decl.default
        elif decl.required:
            raise ValidationError(f"score {score} requires parameter {name}")
    return result


def redact(params: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    secrets = set(secret_names)
    return {key: (SECRET_MASK if key in secrets else value) for key, value in params.items()}


def parse_key_value(word: str) -> tuple[str, str]:
    """Split a command-line ``key=value`` word at its first '='."""
    key, sep, value = word.partition("=")
    if not sep:
        raise ValidationError(f"not a key=value parameter: {word!r}")
    return key, value
