"""How a task ended: one frozen value, converted to and from the wire in one place.

The player builds it from a finished score, the conductor stores it (one column per
field, named as here) and the audience shows it: each side converts this dataclass and
never lists the fields again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestra.params import OUTPUT_TRUNCATED_MARKER
from orchestra.wire import common_pb2

# A job's status, the original Orchestra's four: pending until every task has ended, then
# ok (every task ok), partial_fail (some) or failed (none).
JOB_STATUSES = ("pending", "ok", "failed", "partial_fail")
FINISHED_STATUSES = JOB_STATUSES[1:]


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string with milliseconds; None for 0 or None."""
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut_tail(tail: bytes, limit: int) -> tuple[bytes, bool]:
    if len(tail) <= limit:
        return bytes(tail), False
    return OUTPUT_TRUNCATED_MARKER + bytes(tail[-(limit - len(OUTPUT_TRUNCATED_MARKER)):]), True


@dataclass(frozen=True)
class TaskOutcome:
    """Exit status, response, output tails, reason and times of one task attempt."""

    exit_code: int | None = None
    signal: int = 0
    response: Mapping[str, str] = field(default_factory=dict)
    response_truncated: bool = False
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None

    def to_wire(self) -> common_pb2.TaskOutcome:
        return common_pb2.TaskOutcome(
            has_exit_code=self.exit_code is not None, exit_code=self.exit_code or 0,
            signal=self.signal, response=dict(self.response),
            response_truncated=self.response_truncated,
            stdout_tail=self.stdout, stderr_tail=self.stderr,
            stdout_truncated=self.stdout_truncated, stderr_truncated=self.stderr_truncated,
            reason=self.reason, started_at=self.started_at or 0.0,
            finished_at=self.finished_at or 0.0)

    @classmethod
    def from_wire(cls, wire: common_pb2.TaskOutcome) -> TaskOutcome:
        return cls(
            exit_code=wire.exit_code if wire.has_exit_code else None, signal=wire.signal,
            response=dict(wire.response), response_truncated=wire.response_truncated,
            stdout=bytes(wire.stdout_tail), stderr=bytes(wire.stderr_tail),
            stdout_truncated=wire.stdout_truncated, stderr_truncated=wire.stderr_truncated,
            reason=wire.reason, started_at=wire.started_at or None,
            finished_at=wire.finished_at or None)

    def to_json(self) -> dict[str, Any]:
        """The outcome's keys in ``getstatus --json`` (stable; README "`--json` keys")."""
        return {
            "exit_code": self.exit_code,
            "signal": self.signal or None,
            "response": dict(sorted(self.response.items())),
            "response_truncated": self.response_truncated,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "reason": self.reason,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }

    def bounded(self, max_tail: int, max_reason: int) -> TaskOutcome:
        """The same outcome with output tails and reason cut to what may be stored."""
        stdout, out_cut = _cut_tail(self.stdout, max_tail)
        stderr, err_cut = _cut_tail(self.stderr, max_tail)
        return dataclasses.replace(
            self, stdout=stdout, stderr=stderr, stdout_truncated=self.stdout_truncated or out_cut,
            stderr_truncated=self.stderr_truncated or err_cut, reason=self.reason[:max_reason])

    @classmethod
    def ended(cls, reason: str, finished_at: float, started_at: float | None = None) -> TaskOutcome:
        """An outcome with no exit status: refused, cancelled, expired, removed or lost."""
        return cls(reason=reason, started_at=started_at, finished_at=finished_at)
