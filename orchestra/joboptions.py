"""The options a job carries besides its score, targets and parameters: a name, labels,
a priority and a rollout (canary, batch, failure limit); and how a listing finds jobs
again by them (labels, and the time since which jobs were submitted). Pure validation,
shared by submitjob, job files, listjobs and the conductor's web view, so all of them
refuse exactly the same input.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestra.cli import visible
from orchestra.errors import ValidationError
from orchestra.wire import audience_pb2

MAX_NAME_CHARS = 200
LABEL_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_LABEL_VALUE_CHARS = 256
MAX_LABELS = 32

# Named priorities; any integer in [MIN_PRIORITY, MAX_PRIORITY] may be given instead.
PRIORITIES: Mapping[str, int] = {"low": -10, "normal": 0, "high": 10}
MIN_PRIORITY, MAX_PRIORITY = -100, 100
# Each point of priority is worth this many seconds of waiting in the queue: a task is
# dispatched before every task of its player whose priority is p points higher only if
# that one was submitted more than p x PRIORITY_STEP_SECONDS later. Equal priorities stay
# first in, first out, and a low-priority task is overtaken for a bounded time only.
PRIORITY_STEP_SECONDS = 30.0


def check_job_name(name: str) -> str:
    """A job's optional name ("" = none): printable text, bounded."""
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValidationError(f"job name must be printable and at most {MAX_NAME_CHARS} characters")
    return name


def check_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Validate job labels (free-text KEY=VALUE job types); a key given twice is refused."""
    pairs = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
    if len(pairs) > MAX_LABELS:
        raise ValidationError(f"too many labels: {len(pairs)} > {MAX_LABELS}")
    result: dict[str, str] = {}
    for key, value in pairs:
        if LABEL_KEY_RE.fullmatch(key) is None:
            raise ValidationError(f"invalid label name {key!r}: must match {LABEL_KEY_RE.pattern}")
        if key in result:
            raise ValidationError(f"label {key} given twice")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE_CHARS or not value.isprintable():
            raise ValidationError(f"label {key}: value must be printable text of at most"
                                  f" {MAX_LABEL_VALUE_CHARS} characters")
        result[key] = value
    return result


def parse_label(word: str) -> tuple[str, str]:
    """``KEY=VALUE`` as given to --label."""
    key, sep, value = word.partition("=")
    if not sep:
        raise ValidationError(f"a label is KEY=VALUE, not {word!r}")
    return key, value


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(text: str, now: float | None = None) -> float:
    """``listjobs --since``: an age (``90s``, ``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601
    date or time (``2026-11-24``, ``2026-11-24T08:00``, UTC unless it names its offset), as
    Unix seconds."""
    now = time.time() if now is None else now
    match = _AGE.fullmatch(text.strip())
    if match is not None:
        return now - float(match.group(1)) * _AGE_UNITS[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"not an age (30m, 12h, 7d) or an ISO 8601 date or time: {text[:60]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_priority(text: str | int) -> int:
    """``low``, ``normal``, ``high`` or an integer from -100 to 100 (higher goes first)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.strip().lower() in PRIORITIES:
        return PRIORITIES[text.strip().lower()]
    else:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValidationError(f"invalid priority {str(text)[:40]!r}: low, normal, high or an integer"
                                  f" from {MIN_PRIORITY} to {MAX_PRIORITY}") from None
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValidationError(f"priority {value} is out of range {MIN_PRIORITY} to {MAX_PRIORITY}")
    return value


@dataclass(frozen=True)
class Amount:
    """A number of tasks, given as a count (``10``) or a share of the targets (``10%``)."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        """The count for a job of ``total`` tasks: a share rounds up, and is at least 1."""
        if not self.percent:
            return self.value
        return max(1, math.ceil(total * self.value / 100))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


def parse_amount(text: str | int, what: str, minimum: int = 1) -> Amount | None:
    """``N`` or ``P%`` (1-100 %); "" means not given."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ValidationError(f"{what} must be a number or a percentage")
    raw = text.strip()
    if raw == "":
        return None
    percent = raw.endswith("%")
    digits = raw[:-1].strip() if percent else raw
    if not digits.isdigit() or len(digits) > 9:
        raise ValidationError(f"invalid {what} {text[:40]!r}: a number of tasks or a percentage such as 10%")
    value = int(digits)
    if percent and not 1 <= value <= 100:
        raise ValidationError(f"{what} {text!r}: a percentage must be from 1% to 100%")
    if value < minimum:
        raise ValidationError(f"{what} must be at least {minimum}")
    return Amount(value, percent)


@dataclass(frozen=True)
class Rollout:
    """A rollout resolved against a job's targets: how many canaries, how many tasks at
    once (0: no limit), and after how many failed tasks to stop (None: never)."""

    canary: int = 0
    batch: int = 0
    max_failures: int | None = None

    @property
    def gated(self) -> bool:
        """Whether the conductor must hold tasks back at all."""
        return bool(self.canary or self.batch or self.max_failures is not None)


def resolve_rollout(canary: int, batch: str | int, max_failures: str | int, scope: str, targets: int) -> Rollout:
    """Check a rollout request and resolve its percentages against ``targets`` tasks."""
    batch_amount = parse_amount(batch, "--batch")
    failures = parse_amount(max_failures, "--max-failures")
    if canary < 0 or canary > 10_000_000:
        raise ValidationError("--canary must be a number of targets")
    if scope != "all" and (canary or batch_amount or failures):
        raise ValidationError("--canary, --batch and --max-failures apply to all-of jobs only")
    if canary and canary >= targets:
        raise ValidationError(f"--canary {canary} leaves no other target: the job has {targets}")
    return Rollout(canary, batch_amount.of(targets) if batch_amount else 0,
                   failures.of(targets) if failures else None)


def rollout_text(rollout: audience_pb2.Rollout) -> str:
    """``canary 2, batch 5, max failures 3: rolling, 1 failure`` (getstatus, the web view)."""
    limits = [f"canary {rollout.canary}" if rollout.canary else "",
              f"batch {rollout.batch}" if rollout.batch else "",
              f"max failures {rollout.max_failures}" if rollout.has_max_failures else ""]
    phase = visible(rollout.phase) or "?"
    if rollout.phase_reason:
        phase += f" ({visible(rollout.phase_reason)})"
    failures = f"{rollout.failures} failure{'' if rollout.failures == 1 else 's'}"
    return f"{', '.join(part for part in limits if part) or 'no limits'}: {phase}, {failures}"


def settings_text(job: audience_pb2.Job) -> str:
    """What the score's .conf asks of the conductor: ``retries 2 (30s apart), concurrency 5,
    exclusive``; "" when nothing (getstatus, the web view)."""
    parts = []
    if job.retries:
        parts.append(f"retries {job.retries}" + (f" ({job.retry_delay:g}s apart)" if job.retry_delay else ""))
    if job.concurrency:
        parts.append(f"concurrency {job.concurrency}")
    if job.exclusive:
        parts.append("exclusive")
    return ", ".join(parts)
