"""The audit log: one JSON object per line, appended, on disk before the next event.

Every submit, dispatch, refusal (authentication, authorization, validation) and result.
Parameter values never appear, only their keys. Each line is a single ``write(2)`` on an
O_APPEND descriptor, so a ``kill -9`` loses at most the line being written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from orchestra.errors import StartupError


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StartupError(f"cannot open audit log {path}: {err.strerror}") from None

    def record(self, event: str, decision: str, **fields: Any) -> None:
        entry = {"ts": round(time.time(), 6), "event": event, "decision": decision}
        entry.update({key: value for key, value in fields.items() if value is not None})
        os.write(self.fd, (json.dumps(entry, sort_keys=False, default=str) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)
