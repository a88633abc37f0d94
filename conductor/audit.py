"""The audit log: one JSON object per line, appended, on disk before the next event.

Every submit, dispatch, refusal (authentication, authorization, validation) and result.
Parameter values never appear, only their keys. Each line is a single ``write(2)`` on an
O_APPEND descriptor, so a ``kill -9`` loses at most the line being written.

Recording never fails the action it records. The queue is the truth: a job is
acknowledged once committed, and an audit line that cannot be written then (a full
disk) must not turn that into an error the client would retry, queueing the job twice.
Such a line is logged on stderr in full (``audit_write_failed``), kept in memory, and
written to the file, in order and ahead of newer lines, as soon as a write succeeds.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from orchestra import log
from orchestra.errors import StartupError

logger = log.get("conductor")
# Lines kept while the file cannot be written; past this the oldest are dropped (and
# counted): each one is on stderr already.
MAX_BACKLOG = 100_000
RETRY_SECONDS = 1.0


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StartupError(f"cannot open audit log {path}: {err.strerror}") from None
        self.backlog: deque[bytes] = deque(maxlen=MAX_BACKLOG)
        self.dropped = 0
        self.write_failures = 0  # lines that could not be written when recorded (metrics)
        self._retry_at = 0.0

    def record(self, event: str, decision: str, **fields: Any) -> None:
        entry = {"ts": round(time.time(), 6), "event": event, "decision": decision}
        entry.update({key: value for key, value in fields.items() if value is not None})
        line = (json.dumps(entry, sort_keys=False, default=str) + "\n").encode()
        if self.backlog and not self.flush():
            self._keep(line, entry, "earlier lines are still waiting")
            return
        try:
            written = os.write(self.fd, line)
        except OSError as err:
            self._keep(line, entry, err.strerror or str(err))
        else:
            if written < len(line):  # the disk filled mid-line: the rest follows later
                self._keep(line[written:], entry, "short write")

    def _keep(self, line: bytes, entry: dict[str, Any], error: str) -> None:
        self.write_failures += 1
        if len(self.backlog) == self.backlog.maxlen:
            self.dropped += 1
        self.backlog.append(line)
        # On stderr in full, so the record exists somewhere even if the conductor dies.
        logger.error("audit_write_failed", error=error, pending=len(self.backlog), entry=entry)

    def flush(self) -> bool:
        """Write what is waiting; True once nothing is. Tried at most every RETRY_SECONDS."""
        now = time.monotonic()
        if not self.backlog:
            return True
        if now < self._retry_at:
            return False
        while self.backlog:
            head = self.backlog[0]
            try:
                written = os.write(self.fd, head)
            except OSError:
                written = 0
            if written < len(head):
                self.backlog[0] = head[written:]
                self._retry_at = now + RETRY_SECONDS
                return False
            self.backlog.popleft()
        logger.warning("audit_log_caught_up", dropped=self.dropped)
        return True

    def close(self) -> None:
        self._retry_at = 0.0
        self.flush()
        os.close(self.fd)
