"""A job described in a TOML file (``submitjob --file job.toml``), so that a change can be
reviewed and versioned, and the parameter values kept out of the command line.

Every value goes through the validation the command line's goes through (``orchestra.params``,
``orchestra.joboptions``), so a file refuses exactly what the command line refuses; its errors
name the file and the key (``job.toml: priority: invalid priority 'urgent': …``), as the
config files' do. Secret parameters are read from files or environment variables here as
well: ``{ file = "PATH" }`` (relative to the job file's directory) and ``{ env = "VAR" }``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from audience.common import positive_seconds
from orchestra.errors import ValidationError
from orchestra.joboptions import check_job_name, check_labels, parse_amount, parse_priority
from orchestra.params import (
    MAX_VALUE_BYTES, check_idempotency_key, check_score_name, check_targets, normalize_params,
    resolve_scope,
)

# A job file is a page of settings, not data: anything larger is a mistake (or /dev/zero).
MAX_FILE_BYTES = 1024 * 1024
KEYS = ("score", "targets", "scope", "name", "priority", "expires", "canary", "batch",
        "max_failures", "idempotency_key", "params", "labels")
SOURCES = ("file", "env")  # the keys of a parameter given as a table

T = TypeVar("T")


@dataclass(frozen=True)
class JobFile:
    """What a job file says; None (or empty) for what it leaves out. Every value is
    already valid: params are normalized (upper-case keys) with their secrets read,
    batch and max_failures are the canonical ``N`` or ``P%``."""

    path: str
    score: str | None = None
    targets: tuple[str, ...] | None = None
    scope: str | None = None
    name: str | None = None
    priority: int | None = None
    expires: float | None = None
    canary: int | None = None
    batch: str | None = None
    max_failures: str | None = None
    idempotency_key: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


# ---- secrets: a parameter's value from a file or the environment ------------------------

def secret_from_file(path: Path) -> str:
    """A parameter's value from a file: its content, one trailing newline stripped (as
    ``echo secret > file`` writes it). Reads no more than a value may be long, so a wrong
    path (a device, a huge log) fails at once rather than filling memory."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_VALUE_BYTES + 2)
    except OSError as err:
        raise ValidationError(f"cannot read {path}: {err.strerror or err}") from None
    data = data.removesuffix(b"\n")
    if len(data) > MAX_VALUE_BYTES:
        raise ValidationError(f"{path} is larger than {MAX_VALUE_BYTES} bytes, the most a value may be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not UTF-8 text") from None


def secret_from_env(var: str, environ: Mapping[str, str] | None = None) -> str:
    """A parameter's value from the environment variable ``var`` (set, possibly empty)."""
    value = (os.environ if environ is None else environ).get(var)
    if value is None:
        raise ValidationError(f"environment variable {var} is not set")
    return value


# ---- the file ---------------------------------------------------------------------------

def load(path: str, environ: Mapping[str, str] | None = None) -> JobFile:
    """Read and check the job file at ``path`` (and the secrets it points to)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ValidationError(f"{path}: cannot read job file: {err.strerror or err}") from None
    return parse(data, path, environ)


def parse(data: bytes, path: str, environ: Mapping[str, str] | None = None) -> JobFile:
    """A job file's content, checked; ``path`` names it in errors, and relative ``file``
    parameters are read from its directory."""
    return _Reader(path, environ).job(read_toml(data, path, "job file"))


def read_toml(data: bytes, path: str, kind: str) -> dict[str, Any]:
    """A job or workflow file's bytes as a TOML table: bounded, UTF-8, valid TOML, or one
    line naming ``path`` and the problem."""
    if len(data) > MAX_FILE_BYTES:
        raise ValidationError(f"{path}: {kind} is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValidationError(f"{path}: {kind} is not UTF-8 text (byte {err.start})") from None
    import tomllib  # only a job or workflow file needs it

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValidationError(f"{path}: invalid TOML: {err}") from None


class _Reader:
    """Typed reads of a job file's keys; each error names the file and the key."""

    def __init__(self, path: str, environ: Mapping[str, str] | None) -> None:
        self.path = path
        self.base = Path(path).absolute().parent
        self.environ = environ

    def fail(self, key: str, problem: str) -> ValidationError:
        return ValidationError(f"{self.path}: {key}: {problem}")

    def checked(self, key: str, check: Callable[[], T]) -> T:
        """check() with the command line's own validation, its message put under key."""
        try:
            return check()
        except (ValidationError, argparse.ArgumentTypeError) as err:
            raise self.fail(key, str(err)) from None

    def typed(self, key: str, value: Any, kinds: tuple[type, ...], what: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.fail(key, f"must be {what}, not {_shown(value)}")
        return value

    def job(self, table: dict[str, Any]) -> JobFile:
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise self.fail(unknown[0], "unknown key")
        found: dict[str, Any] = {}
        for key, value in table.items():
            found[key] = getattr(self, key)(key, value)
        return JobFile(path=self.path, **found)

    # One method per key, named as the key; each returns the JobFile field's value.

    def score(self, key: str, value: Any) -> str:
        text: str = self.typed(key, value, (str,), "a string")
        return self.checked(key, lambda: check_score_name(text))

    def targets(self, key: str, value: Any) -> tuple[str, ...]:
        items: list[Any] = self.typed(key, value, (list,), "a list of host names or @groups")
        for index, item in enumerate(items):
            self.typed(f"{key}[{index}]", item, (str,), "a string")
        return tuple(self.checked(key, lambda: check_targets(items)))

    def scope(self, key: str, value: Any) -> str:
        text: str = self.typed(key, value, (str,), '"all" or "one"')
        return self.checked(key, lambda: resolve_scope(text, ()))

    def name(self, key: str, value: Any) -> str:
        text: str = self.typed(key, value, (str,), "a string")
        return self.checked(key, lambda: check_job_name(text))

    def priority(self, key: str, value: Any) -> int:
        given: str | int = self.typed(key, value, (str, int), "low, normal, high or an integer")
        return self.checked(key, lambda: parse_priority(given))

    def expires(self, key: str, value: Any) -> float:
        seconds: float = self.typed(key, value, (int, float), "a number of seconds")
        return self.checked(key, lambda: positive_seconds(str(seconds)))

    def canary(self, key: str, value: Any) -> int:
        count: int = self.typed(key, value, (int,), "an integer")
        return count  # its range against the targets: resolve_rollout, as for --canary

    def batch(self, key: str, value: Any) -> str | None:
        return self._amount(key, value, "--batch")

    def max_failures(self, key: str, value: Any) -> str | None:
        return self._amount(key, value, "--max-failures")

    def _amount(self, key: str, value: Any, option: str) -> str | None:
        given: str | int = self.typed(key, value, (str, int), 'an integer or a percentage ("10%")')
        amount = self.checked(key, lambda: parse_amount(given, option))
        return str(amount) if amount is not None else None

    def idempotency_key(self, key: str, value: Any) -> str | None:
        text: str = self.typed(key, value, (str,), "a string")
        return self.checked(key, lambda: check_idempotency_key(text))

    def params(self, key: str, value: Any) -> dict[str, str]:
        table: dict[str, Any] = self.typed(key, value, (dict,), "a table")
        pairs = [(name, self._param(f"{key}.{name}", given)) for name, given in table.items()]
        return self.checked(key, lambda: normalize_params(pairs))

    def _param(self, key: str, value: Any) -> str:
        """A parameter's value: a string, or a table naming the file or variable it is in."""
        if isinstance(value, str):
            return value
        source: dict[str, Any] = self.typed(key, value, (dict,),
                                            'a string, { file = "PATH" } or { env = "VAR" }')
        unknown = sorted(set(source) - set(SOURCES))
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", "unknown key (file or env)")
        if len(source) != 1:
            raise self.fail(key, "give exactly one of file and env")
        if "file" in source:
            where: str = self.typed(f"{key}.file", source["file"], (str,), "a path string")
            path = Path(where).expanduser()
            return self.checked(key, lambda: secret_from_file(path if path.is_absolute() else self.base / path))
        var: str = self.typed(f"{key}.env", source["env"], (str,), "a variable name")
        if not var:
            raise self.fail(f"{key}.env", "must not be empty")
        return self.checked(key, lambda: secret_from_env(var, self.environ))

    def labels(self, key: str, value: Any) -> dict[str, str]:
        table: dict[str, Any] = self.typed(key, value, (dict,), "a table")
        for name, given in table.items():
            self.typed(f"{key}.{name}", given, (str,), "a string")
        return self.checked(key, lambda: check_labels(table))


def _shown(value: Any) -> str:
    """A wrong value as an error shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
