"""Audit sinks: one that copies every entry to a file of its own, and broken ones."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


class FileCopySink:
    """Each entry as a JSON line appended to ``path`` (its only option, required)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - {"path"})
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown option (testfile takes path)")
        if not isinstance(options.get("path"), str):
            raise ValueError("path: is required (a string)")
        self.fd = os.open(options["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, entry: Mapping[str, Any]) -> None:
        os.write(self.fd, (json.dumps(dict(entry), default=str) + "\n").encode())

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        os.close(self.fd)


class FailingSink:
    """Fails to start."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        raise RuntimeError("the broken_start sink fails to start (on purpose)")


class _Lacking:
    def record(self, entry: Mapping[str, Any]) -> None:
        pass


def not_a_sink(options: Mapping[str, Any]) -> object:
    """Returns something without flush() and close()."""
    return _Lacking()
