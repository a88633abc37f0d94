"""The live line ``--wait`` shows on a terminal: done/total, tasks by state, elapsed time
and the hosts waited on longest, rewritten in place as the conductor streams progress.

It is drawn only when stdout is a terminal and ``--json`` is off, so scripts and pipes see
exactly the output they always did. The line is cut to the terminal's width (a wrapped
line could not be rewritten in place) and cleared before the final report is printed.
A ticker redraws it every second, so the elapsed time moves while no task does.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

from audience.render import state_name
from orchestra.cli import visible
from orchestra.wire import audience_pb2

TICK_SECONDS = 1.0
CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line
ENDED = frozenset({"ok", "failed", "timed_out", "refused", "expired", "cancelled", "removed", "lost",
                   "skipped"})


def clock(seconds: float) -> str:
    """0:07, 12:34, 1:02:03."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary(progress: audience_pb2.JobProgress, now: float) -> str:
    """One line: ``[12/40] 10 ok, 2 failed, 28 running · 0:41 · longest: p7 running 0:39``."""
    counts = {state_name(c.state): c.count for c in progress.counts}
    done = sum(n for state, n in counts.items() if state in ENDED)
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    line = f"[{done}/{progress.total}] {states} · {clock(now - progress.created_at)}"
    if progress.slowest:
        waits = ", ".join(f"{visible(t.player) or '(any)'} {state_name(t.state)} {clock(now - t.since)}"
                          for t in progress.slowest[:3])
        line += f" · longest: {waits}"
    return line


class LiveLine:
    """Draws the latest progress on one terminal line until :meth:`close`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._latest: audience_pb2.JobProgress | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = False
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()

    def update(self, progress: audience_pb2.JobProgress) -> None:
        self._latest = progress
        self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._latest is None or self._stop.is_set():
                return
            width = shutil.get_terminal_size((80, 24)).columns
            line = summary(self._latest, time.time())
            if len(line) >= width:
                line = line[:max(0, width - 2)] + "…"
            try:
                self.out.write(CLEAR_LINE + line)
                self.out.flush()
            except (OSError, ValueError):  # the terminal went away: stop drawing
                self._stop.set()
                return
            self._drawn = True

    def close(self) -> None:
        """Stop drawing and clear the line, so the report starts on a clean one."""
        with self._lock:
            self._stop.set()
            if self._drawn:
                try:
                    self.out.write(CLEAR_LINE)
                    self.out.flush()
                except (OSError, ValueError):
                    pass
        self._ticker.join(timeout=2)


def wanted(as_json: bool, out: TextIO | None = None) -> bool:
    """A live line only for a person: stdout a terminal, and not --json."""
    stream = out if out is not None else sys.stdout
    try:
        return not as_json and stream.isatty()
    except (AttributeError, ValueError):
        return False
