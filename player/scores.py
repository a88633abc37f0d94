"""Installed scores: the .conf format and the checks that decide what may run (CONTRACT.md §4).

A score exists only if NAME matches the name rule, NAME is a regular executable file and
NAME.conf a regular file, both inside the scores directory after resolving symlinks, and
NAME.conf parses. Everything is re-checked right before each run.

A score runs with the player's privileges, so whoever can change it, its .conf or the
directory holding them can run anything as the player: each of them must be owned by
root or the player's own user and writable by no group and no other user.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from orchestra.params import PARAM_KEY_RE, ParamDecl, ScoreDecls, is_score_name
from player import interfaces

# What the conductor is asked to do with a score's tasks (README, "Scores"): bounds of the
# .conf's retries, retry_delay and concurrency, and the words exclusive takes.
MAX_RETRIES = 100
MAX_RETRY_DELAY = 86400.0
MAX_CONCURRENCY = 1_000_000
_YES = frozenset({"yes", "true", "on"})
_NO = frozenset({"no", "false", "off"})
_WHOLE_RE = re.compile(r"[0-9]+")
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_DIRECTIVE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*|\s+|$)(.*)")
_COMMENT_RE = re.compile(r"(^|\s)[#;].*$")
MAX_CONF_BYTES = 64 * 1024


class ScoreUnavailable(Exception):
    """The score does not exist or may not run; str() says why."""


@dataclass(frozen=True)
class ScoreConf:
    interface: str = "env"
    timeout: float | None = None
    workdir: str = "/"
    decls: ScoreDecls = ScoreDecls()
    retries: int = 0  # automatic retries of a failed or timed-out task (by the conductor)
    retry_delay: float = 0.0  # seconds before each automatic retry
    concurrency: int = 0  # at most this many tasks at once, fleet-wide; 0 = no limit
    exclusive: bool = False  # never two tasks at once on one host


@dataclass(frozen=True)
class Score:
    name: str
    path: Path  # resolved, inside the scores directory
    conf: ScoreConf


def parse_conf(text: str) -> ScoreConf:
    """Parse a .conf file; raises ValueError("line N: ...") on the first bad line."""
    interface, timeout, workdir = "env", None, "/"
    retries, retry_delay, concurrency, exclusive = 0, 0.0, 0, False
    decls: list[ParamDecl] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT_RE.sub("", raw).strip()
        if not line:
            continue
        match = _DIRECTIVE_RE.fullmatch(line)
        if match is None:
            raise ValueError(f"line {number}: cannot parse {raw.strip()!r}")
        key, value = match.group(1).lower(), match.group(2).strip()
        try:
            if key == "interface":
                # Built in (env, pipe, json) or installed (player/interfaces.py).
                problem = interfaces.unknown(value)
                if problem:
                    raise ValueError(problem)
                interface = value.lower()
            elif key == "timeout":
                timeout = float(value)
                if not 0 < timeout < 10**7:
                    raise ValueError(f"timeout must be a positive number of seconds, not {value!r}")
            elif key == "dir":
                if not value.startswith("/"):
                    raise ValueError(f"dir must be an absolute path, not {value!r}")
                workdir = value
            elif key == "param":
                decl = _parse_param(value)
                if any(d.name == decl.name for d in decls):
                    raise ValueError(f"parameter {decl.name} declared twice")
                decls.append(decl)
            elif key == "retries":
                retries = _whole(value, "retries", 0, MAX_RETRIES)
            elif key == "retry_delay":
                if _DECIMAL_RE.fullmatch(value) is None or float(value) > MAX_RETRY_DELAY:
                    raise ValueError(f"retry_delay must be a number of seconds from 0 to"
                                     f" {MAX_RETRY_DELAY:g}, not {value!r}")
                retry_delay = float(value)
            elif key == "concurrency":
                concurrency = _whole(value, "concurrency", 1, MAX_CONCURRENCY)
            elif key == "exclusive":
                exclusive = _yes_or_no(value, "exclusive")
            else:
                raise ValueError(f"unknown directive {key!r}")
        except ValueError as err:
            raise ValueError(f"line {number}: {err}") from None
    return ScoreConf(interface, timeout, workdir, ScoreDecls(tuple(decls)), retries, retry_delay,
                     concurrency, exclusive)


def _whole(value: str, key: str, low: int, high: int) -> int:
    """A whole number from low to high, in plain decimal digits (no sign, no exponent)."""
    # Compared as a float: int() refuses strings of more than 4,300 digits with its own words.
    if _WHOLE_RE.fullmatch(value) is None or not low <= float(value) <= high:
        raise ValueError(f"{key} must be a whole number from {low} to {high:,}, not {value!r}")
    return int(float(value))


def _yes_or_no(value: str, key: str) -> bool:
    word = value.lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ValueError(f"{key} must be yes or no (or true/false, on/off), not {value!r}")


def _parse_param(spec: str) -> ParamDecl:
    words = spec.split()
    if not words or PARAM_KEY_RE.fullmatch(words[0]) is None:
        raise ValueError(f"param needs a valid name, got {spec!r}")
    name, required, pattern, default, secret = words[0].upper(), False, "", None, False
    choices: tuple[str, ...] = ()
    for word in words[1:]:
        option, sep, value = word.partition("=")
        option = option.lower()
        if option == "required" and not sep:
            required = True
        elif option == "optional" and not sep:
            required = False
        elif option == "secret" and not sep:
            secret = True
        elif option == "pattern" and sep:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"param {name}: bad pattern: {err}") from None
            pattern = value
        elif option == "choices" and sep:
            choices = tuple(c for c in value.split(",") if c)
            if not choices:
                raise ValueError(f"param {name}: choices must not be empty")
        elif option == "default" and sep:
            default = value
        else:
            raise ValueError(f"param {name}: unknown option {word!r}")
    decl = ParamDecl(name, required, pattern, choices, default, secret)
    if default is not None:
        try:
            decl.check(default)
        except Exception as err:
            raise ValueError(f"param {name}: default: {err}") from None
    return decl


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _trusted(info: os.stat_result) -> str:
    """Why a file or directory with this status may be changed by someone other than
    root or the player's user ("" if it cannot)."""
    if info.st_uid not in (0, os.geteuid()):
        return f"is owned by uid {info.st_uid}, not by root or the player's user"
    writers = [who for bit, who in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others"))
               if info.st_mode & bit]
    if writers:
        return f"is writable by {' and '.join(writers)} (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


def _check_directory(root: Path) -> None:
    """The scores directory itself must be safe: whoever can write to it can replace any
    score."""
    try:
        info = root.stat()
    except OSError as err:
        raise ScoreUnavailable(f"scores directory {root} cannot be read: {err.strerror}") from None
    problem = _trusted(info)
    if problem:
        raise ScoreUnavailable(f"scores directory {root} {problem}")


def _checked_file(root: Path, name: str, executable: bool) -> Path:
    candidate = root / name
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ScoreUnavailable(f"{name} is not installed") from None
    if not _inside(resolved, root):
        raise ScoreUnavailable(f"{name} leads outside the scores directory")
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ScoreUnavailable(f"{name} is not a regular file")
    if executable and not os.access(resolved, os.X_OK):
        raise ScoreUnavailable(f"{name} is not executable")
    problem = _trusted(info)
    if problem:
        raise ScoreUnavailable(f"{name} {problem}")
    # A file reached in a subdirectory (through a symlink) is only as safe as the
    # directories between it and the scores directory.
    for parent in resolved.parents:
        if parent == root:
            break
        problem = _trusted(parent.stat())
        if problem:
            raise ScoreUnavailable(f"{name}: directory {parent} {problem}")
    return resolved


def resolve(scores_dir: Path, name: str) -> Score:
    """The installed score NAME, checked now; raises ScoreUnavailable."""
    if not is_score_name(name) or name.endswith(".conf"):
        raise ScoreUnavailable(f"invalid score name {name!r}")
    root = scores_dir.resolve()
    _check_directory(root)
    path = _checked_file(root, name, executable=True)
    conf_path = _checked_file(root, f"{name}.conf", executable=False)
    if conf_path.stat().st_size > MAX_CONF_BYTES:
        raise ScoreUnavailable(f"{name}.conf is larger than {MAX_CONF_BYTES} bytes")
    try:
        conf = parse_conf(conf_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScoreUnavailable(f"{name}.conf is not UTF-8") from None
    except ValueError as err:
        raise ScoreUnavailable(f"{name}.conf {err}") from None
    return Score(name, path, conf)


@dataclass(frozen=True)
class InventoryEntry:
    name: str
    score: Score | None
    error: str = ""


def scan(scores_dir: Path) -> list[InventoryEntry]:
    """Every candidate score in the directory (those with a .conf), valid or not."""
    try:
        names = sorted(p.name[:-5] for p in scores_dir.iterdir() if p.name.endswith(".conf"))
    except OSError:
        return []
    entries = []
    for name in names:
        if not is_score_name(name):
            continue
        try:
            entries.append(InventoryEntry(name, resolve(scores_dir, name)))
        except ScoreUnavailable as err:
            entries.append(InventoryEntry(name, None, str(err)))
    return entries
