"""``getstatus --follow``: every host's live output, a line at a time, prefixed by host.

The conductor sends raw pieces of each host's stdout and stderr as the players read them;
a piece may end in the middle of a line (or of a UTF-8 character). :class:`Lines` keeps
the unfinished end of each host's stream until its line is complete, so lines from
several hosts never mix, and prints:

* ``HOST: LINE`` for each line (stdout lines on stdout, stderr lines on stderr);
* ``HOST: [… N bytes skipped …]`` where output was not shown (the follow began late, or
  the reader or the network fell behind), ``HOST: [… output cut by the player's output
  cap …]`` where the player's cap emptied the file;
* ``HOST: [STATE]`` when a task starts running or ends.

Each line is shown as every report shows what a score printed: control characters and
the like as visible escapes (``\x1b``), never obeyed by the terminal.

With ``--json`` each of these is one JSON object on stdout instead (``host``, and
``stream`` + ``line``, or ``skipped``/``cut``, or ``state``), and the job's JSON follows.
A follow that was cut off and begins again says so (``{"interrupted": true}``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from orchestra.cli import report, visible, write_out
from orchestra.wire import audience_pb2

# An unfinished line longer than this is printed as it is (a score printing megabytes
# without a newline must not grow the client without bound).
MAX_LINE_BYTES = 64 * 1024


def _write_err(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except BrokenPipeError:
        pass


class Lines:
    """The follow's printer: one partial line per (host, stream) at most."""

    def __init__(self, as_json: bool, out: Callable[[str], None] = write_out,
                 err: Callable[[str], None] = _write_err) -> None:
        self.as_json = as_json
        self.out, self.err = out, err
        self.partial: dict[tuple[str, str], bytes] = {}

    def event(self, event: audience_pb2.FollowEvent) -> None:
        if event.HasField("task"):
            self._note(event.task.host, {"state": event.task.state}, f"[{event.task.state}]")
            return
        if not event.HasField("output"):
            return
        piece = event.output
        key = (piece.host, piece.stream)
        if piece.skipped or piece.cut:
            self._flush(key)
            if piece.cut:
                self._note(piece.host, {"stream": piece.stream, "cut": True},
                           "[… output cut by the player's output cap …]", piece.stream)
            if piece.skipped:
                self._note(piece.host, {"stream": piece.stream, "skipped": piece.skipped},
                           f"[… {piece.skipped} bytes skipped …]", piece.stream)
        data = self.partial.pop(key, b"") + piece.data
        *complete, rest = data.split(b"\n")
        for line in complete:
            self._line(key, line)
        if len(rest) > MAX_LINE_BYTES:
            self._line(key, rest)
            rest = b""
        if rest:
            self.partial[key] = rest

    def gap(self) -> None:
        """The follow was cut off (the connection or the conductor went away) and begins
        again: say so, since what was printed meanwhile is not shown."""
        self.finish()
        if self.as_json:
            self.out(json.dumps({"interrupted": True}) + "\n")
        else:
            report("getstatus", "the follow was interrupted; output printed meanwhile is not shown")

    def finish(self) -> None:
        """Print what is left of every unfinished line (the job ended)."""
        for key in list(self.partial):
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        rest = self.partial.pop(key, b"")
        if rest:
            self._line(key, rest)

    def _line(self, key: tuple[str, str], raw: bytes) -> None:
        host, stream = key
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._note(host, {"stream": stream, "line": line}, line, stream)

    def _note(self, host: str, fields: dict[str, object], text: str, stream: str = "stdout") -> None:
        if self.as_json:  # exact data, as every --json
            self.out(json.dumps({"host": host, **fields}, ensure_ascii=False) + "\n")
            return
        # What a score printed is shown, never obeyed by the terminal (escapes, bidi, ...).
        line = f"{visible(host)}: {visible(text)}\n"
        (self.err if stream == "stderr" else self.out)(line)
