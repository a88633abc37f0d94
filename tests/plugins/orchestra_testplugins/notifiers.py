"""Notifiers: one that appends every event to a file, and a broken one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any


class FileNotifier:
    """Each event as a JSON line appended to ``path``; ``events`` as the webhook's."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - {"path", "events"})
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown option (testfile takes path, events)")
        if not isinstance(options.get("path"), str):
            raise ValueError("path: is required (a string)")
        self.path = options["path"]
        self.events = tuple(options.get("events", ("job", "workflow")))

    async def notify(self, event: Mapping[str, Any]) -> None:
        # File I/O in a thread: a notifier never blocks the conductor's event loop.
        await asyncio.to_thread(self._append, json.dumps(dict(event)) + "\n")

    def _append(self, line: str) -> None:
        with open(self.path, "a") as out:
            out.write(line)

    def close(self) -> None:
        pass


class FailingNotifier:
    """Fails to start."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        raise RuntimeError("the broken_start notifier fails to start (on purpose)")
