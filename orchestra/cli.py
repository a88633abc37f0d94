"""The one way every Orchestra command ends: a known error is one line and an exit code.

Daemons, audience commands and orchestra-pki all run their body through ``run_cli`` so a
known problem never reaches the user as a traceback, and every command reports it the
same way (``prog: message``) with the exit code the error carries (CONTRACT.md §6).

It also holds what all their human-readable output shares: ``visible`` (text that came
from a user or a score is shown, never obeyed by the terminal) and ``write_out`` (a
reader that closed the pipe, as ``| head`` does, ends the output quietly).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from orchestra.errors import OrchestraError

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
# Exit code of a command whose output pipe was closed before it finished writing and that
# has no better answer of its own: the reader has what it wanted (`| head`), and 141
# (128 + SIGPIPE) would fail every `set -o pipefail` pipeline that ends in head.
CLOSED_PIPE = 0


def _escape(code: int) -> str:
    """Python's own spelling of a character in a string literal: \\n, \\r, \\x1b, \\u202e."""
    if code in (0x0A, 0x0D):
        return "\\n" if code == 0x0A else "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Characters a terminal would obey instead of showing: the C0 and C1 controls and DEL
# (Unicode category Cc) except tab, which only lays text out; the bidirectional
# embeddings, overrides and isolates, which reorder what is shown around them; and the
# line and paragraph separators, which some programs treat as newlines. Newline is in
# the set too: text shown on one line must not forge the lines after it, and text of
# many lines (a score's output) is split at its newlines before each line is shown.
UNSAFE = frozenset([*(c for c in range(0x20) if c != ord("\t")), *range(0x7F, 0xA0),
                    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                    0x2028, 0x2029])
_ESCAPES = {code: _escape(code) for code in UNSAFE}


def visible(text: str) -> str:
    """Text from a user, a score or the conductor, safe to write to a terminal as one
    line: each unsafe character becomes a visible escape (ESC is shown as the four
    characters ``\\x1b``, a newline as ``\\n``), so a score's output cannot clear the
    operator's screen, move the cursor, retitle the window, forge a line or disguise what
    is printed. Everything else is left exactly as it is (``--json`` keeps the exact data)."""
    return text.translate(_ESCAPES)


def one_line(text: str) -> str:
    """Fold a message onto one line: scripts read stderr line by line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: {visible(one_line(message)) or 'error'}\n")


def discard_output() -> None:
    """Point stdout at /dev/null once its reader has gone, so that neither later writes nor
    the interpreter's final flush raise BrokenPipeError (which Python would report as a
    traceback or an "Exception ignored" message and exit 120)."""
    try:
        target = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # no real stdout: nothing will flush it
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, target)
    finally:
        os.close(devnull)


def _flush_out() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_output()


def write_out(text: str) -> None:
    """Write to stdout now. If nobody reads it any more (``| head``), drop this and all
    later output quietly: the command still finishes and exits with its own code."""
    try:
        sys.stdout.write(text)
    except BrokenPipeError:  # a write larger than the buffer goes straight to the pipe
        discard_output()
    _flush_out()


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run body and return its exit code; an OrchestraError becomes one line on stderr
    and the error's own exit code, Ctrl-C becomes "interrupted" and 130.

    Output that nobody reads any more ends quietly: buffered output is flushed here
    (also when argparse exits after --help), where a closed pipe can be handled, rather
    than in the interpreter's flush at exit; the command keeps the exit code it had, and
    a body cut short by the closed pipe exits CLOSED_PIPE.
    """
    try:
        code = body()
    except BrokenPipeError:
        discard_output()
        code = CLOSED_PIPE
    except OrchestraError as err:
        report(prog, str(err))
        code = int(err.exit_code)
    except KeyboardInterrupt:
        report(prog, "interrupted")
        code = INTERRUPTED
    finally:
        _flush_out()
    return code
